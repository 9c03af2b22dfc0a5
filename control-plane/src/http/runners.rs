//! `/api/v1/runners`: runners heard from recently.

use super::error::Error;
use super::routing::ApiRouter;
use crate::context::Context;
use crate::store::runners::RunnerInfo;
use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::Serialize;

/// Runners silent for longer than this are not listed.
const RECENT_SECS: i64 = 60;

pub fn router() -> ApiRouter {
    ApiRouter::new().get("/api/v1/runners", list)
}

/// A runner as the API shows it.
#[derive(Debug, Serialize)]
pub struct RunnerResponse {
    id: String,
    pool: String,
    version: String,
    slots: i32,
    running: i32,
    started_at: DateTime<Utc>,
    last_heartbeat_at: DateTime<Utc>,
}

impl From<RunnerInfo> for RunnerResponse {
    fn from(r: RunnerInfo) -> Self {
        RunnerResponse {
            id: r.id,
            pool: r.pool,
            version: r.version,
            slots: r.slots,
            running: r.running,
            started_at: r.started_at,
            last_heartbeat_at: r.last_heartbeat_at,
        }
    }
}

async fn list(State(app): State<Context>) -> Result<Json<Vec<RunnerResponse>>, Error> {
    Ok(Json(app.store.list_runners(RECENT_SECS).await?.into_iter().map(RunnerResponse::from).collect()))
}
