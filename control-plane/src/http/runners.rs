//! `/api/v1/runners`: runners heard from recently.

use super::AppState;
use super::error::ApiError;
use crate::store::runners::RunnerInfo;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};

/// Runners silent for longer than this are not listed.
const RECENT_SECS: i64 = 60;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/runners", get(list))
}

async fn list(State(app): State<AppState>) -> Result<Json<Vec<RunnerInfo>>, ApiError> {
    Ok(Json(app.store.list_runners(RECENT_SECS).await?))
}
