//! `GET /health`: the only endpoint meant to stay open without authentication.

use crate::context::Context;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use std::future::Future;
use std::time::Duration;

pub fn router() -> Router<Context> {
    Router::new().route("/health", get(health))
}

async fn check<E: std::fmt::Display>(f: impl Future<Output = Result<(), E>>) -> String {
    match tokio::time::timeout(Duration::from_secs(3), f).await {
        Ok(Ok(())) => "ok".into(),
        Ok(Err(e)) => format!("error: {e}"),
        Err(_) => "error: timed out".into(),
    }
}

async fn health(State(app): State<Context>) -> impl IntoResponse {
    let (database, bus, log_store) =
        tokio::join!(check(app.store.ping()), check(app.bus.health()), check(app.objects.health()));
    let healthy = [&database, &bus, &log_store].iter().all(|c| *c == "ok");
    let status = if healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = json!({
        "status": if healthy { "ok" } else { "unavailable" },
        // One check per seam, whichever implementation is in use.
        "checks": { "database": database, "bus": bus, "log_store": log_store },
    });
    (status, Json(body))
}
