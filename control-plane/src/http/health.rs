//! `GET /health`: open without authentication (load balancers, monitors); why a
//! check fails is told only to a signed-in caller.

use super::authn::Caller;
use super::routing::ApiRouter;
use crate::context::Context;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::json;
use std::future::Future;
use std::time::Duration;

pub fn router() -> ApiRouter {
    ApiRouter::new().get("/health", health)
}

async fn check<E: std::fmt::Display>(f: impl Future<Output = Result<(), E>>) -> String {
    match tokio::time::timeout(Duration::from_secs(3), f).await {
        Ok(Ok(())) => "ok".into(),
        Ok(Err(e)) => format!("error: {e}"),
        Err(_) => "error: timed out".into(),
    }
}

async fn health(State(app): State<Context>, caller: Option<Caller>) -> impl IntoResponse {
    let (mut database, mut bus, mut log_store) =
        tokio::join!(check(app.store.ping()), check(app.bus.health()), check(app.objects.health()));
    // The causes (host names, paths, driver messages) only for signed-in callers.
    if caller.is_none() {
        for check in [&mut database, &mut bus, &mut log_store] {
            if check.starts_with("error") {
                *check = "error".into();
            }
        }
    }
    let healthy = [&database, &bus, &log_store].iter().all(|c| *c == "ok");
    let status = if healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = json!({
        "status": if healthy { "ok" } else { "unavailable" },
        // One check per seam, whichever implementation is in use.
        "checks": { "database": database, "bus": bus, "log_store": log_store },
    });
    (status, Json(body))
}
