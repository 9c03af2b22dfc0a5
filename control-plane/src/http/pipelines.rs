//! `/api/v1/pipelines`: the catalog and starting runs.

use super::AppState;
use super::error::ApiError;
use crate::runs;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/pipelines", get(list))
        .route("/api/v1/pipelines/{name}", get(show))
        .route("/api/v1/pipelines/{name}/run", post(start))
}

async fn list(State(app): State<AppState>) -> Result<Json<Vec<crate::pipelines::Pipeline>>, ApiError> {
    let catalog = app.catalog.clone();
    let pipelines = tokio::task::spawn_blocking(move || catalog.list()).await.map_err(ApiError::internal)??;
    Ok(Json(pipelines))
}

async fn show(
    State(app): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<crate::pipelines::Pipeline>, ApiError> {
    Ok(Json(runs::load_pipeline(&app, &name).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StartRequest {
    #[serde(default)]
    params: Option<serde_json::Value>,
}

async fn start(
    State(app): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<crate::store::runs::Run>), ApiError> {
    let request = if body.iter().all(u8::is_ascii_whitespace) {
        StartRequest { params: None }
    } else {
        serde_json::from_slice::<StartRequest>(&body)
            .map_err(|e| ApiError::invalid("body", format!("request body must be {{\"params\": {{…}}}}: {e}")))?
    };
    let params = match request.params {
        None | Some(serde_json::Value::Null) => Default::default(),
        Some(p) => runs::validate_params(&p)?,
    };
    let run = runs::submit(&app, &name, params).await?;
    Ok((StatusCode::CREATED, Json(run)))
}
