//! `/api/v1/runs`: listing, one run, cancelling; and the run's JSON shape.

use super::audit::record;
use super::authn::{Caller, ClientAddr};
use super::error::Error;
use super::extract::{JsonBody, QueryMap, RunId};
use super::pagination::{Page, decode_cursor};
use super::routing::ApiRouter;
use crate::auth::audit::{Action, Outcome};
use crate::context::Context;
use crate::runs;
use crate::store::policy::{Trigger, WaitingReason};
use crate::store::runs::{AttemptRecord, Run, RunFilter};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shared::{FailureReason, RunStatus};
use uuid::Uuid;

const DEFAULT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 500;

pub fn router() -> ApiRouter {
    ApiRouter::new().get("/api/v1/runs", list).get("/api/v1/runs/{id}", show).post("/api/v1/runs/{id}/cancel", cancel)
}

/// A run as the API shows it (README "A run"). Listed field by field so a
/// change of the stored row cannot change the API unnoticed.
#[derive(Debug, Serialize)]
pub struct RunResponse {
    id: Uuid,
    pipeline_name: String,
    pool: String,
    status: RunStatus,
    attempt: i32,
    trigger: Trigger,
    /// Who triggered the run; null when unknown (runs from before authentication).
    triggered_by: Option<String>,
    params: serde_json::Value,
    runner_id: Option<String>,
    exit_code: Option<i64>,
    failure_reason: Option<FailureReason>,
    error_message: Option<String>,
    cancel_requested_at: Option<DateTime<Utc>>,
    waiting_reason: Option<WaitingReason>,
    created_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    log_size_bytes: i64,
    log_expired_at: Option<DateTime<Utc>>,
}

impl From<Run> for RunResponse {
    fn from(run: Run) -> Self {
        RunResponse {
            id: run.id,
            pipeline_name: run.pipeline_name,
            pool: run.pool,
            status: run.status,
            attempt: run.attempt,
            trigger: run.trigger,
            triggered_by: run.triggered_by,
            params: run.params,
            runner_id: run.runner_id,
            exit_code: run.exit_code,
            failure_reason: run.failure_reason,
            error_message: run.error_message,
            cancel_requested_at: run.cancel_requested_at,
            waiting_reason: run.waiting_reason,
            created_at: run.created_at,
            started_at: run.started_at,
            finished_at: run.finished_at,
            log_size_bytes: run.log_size_bytes,
            log_expired_at: run.log_expired_at,
        }
    }
}

/// One attempt in a run's `attempts`.
#[derive(Debug, Serialize)]
pub struct AttemptResponse {
    attempt: i32,
    status: RunStatus,
    failure_reason: Option<FailureReason>,
    exit_code: Option<i64>,
    error_message: Option<String>,
    runner_id: Option<String>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    log_size_bytes: i64,
}

impl From<AttemptRecord> for AttemptResponse {
    fn from(a: AttemptRecord) -> Self {
        AttemptResponse {
            attempt: a.attempt,
            status: a.status,
            failure_reason: a.failure_reason,
            exit_code: a.exit_code,
            error_message: a.error_message,
            runner_id: a.runner_id,
            started_at: a.started_at,
            finished_at: a.finished_at,
            log_size_bytes: a.log_size_bytes,
        }
    }
}

/// `GET /api/v1/runs/{id}`: the run with its attempts.
#[derive(Debug, Serialize)]
struct RunDetail {
    #[serde(flatten)]
    run: RunResponse,
    attempts: Vec<AttemptResponse>,
}

async fn list(State(app): State<Context>, QueryMap(query): QueryMap) -> Result<Page<RunResponse>, Error> {
    let mut filter = RunFilter { limit: DEFAULT_LIMIT, ..Default::default() };
    for (key, value) in &query {
        match key.as_str() {
            "pipeline" if !value.is_empty() => filter.pipeline = Some(value.clone()),
            "status" if !value.is_empty() => {
                let allowed = RunStatus::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ");
                filter.status = Some(value.parse().map_err(|_| {
                    Error::invalid("status", format!("unknown status `{value}`; use one of {allowed}"))
                })?);
            }
            "limit" => {
                filter.limit =
                    value.parse::<i64>().ok().filter(|l| (1..=MAX_LIMIT).contains(l)).ok_or_else(|| {
                        Error::invalid("limit", format!("limit must be a number from 1 to {MAX_LIMIT}"))
                    })?;
            }
            "cursor" if !value.is_empty() => filter.before = Some(decode_cursor(value)?),
            "pipeline" | "status" | "cursor" => {}
            other => return Err(Error::invalid(other, format!("unknown query parameter `{other}`"))),
        }
    }
    // One extra row tells whether another page exists.
    let wanted = filter.limit;
    filter.limit += 1;
    let rows = app.store.list_runs(&filter).await?;
    Ok(Page::from_rows(rows, wanted, |r| (r.created_at, r.id), RunResponse::from))
}

/// One run with its `attempts`: every finished one, then the current one.
async fn show(State(app): State<Context>, RunId(id): RunId) -> Result<Json<RunDetail>, Error> {
    let run = app.store.get_run(id).await?.ok_or_else(|| Error::not_found(format!("run {id} not found")))?;
    let mut attempts: Vec<AttemptResponse> =
        app.store.attempts(id).await?.into_iter().map(AttemptResponse::from).collect();
    if !run.status.is_final() {
        attempts.push(AttemptResponse {
            attempt: run.attempt,
            status: run.status,
            failure_reason: None,
            exit_code: None,
            error_message: None,
            runner_id: run.runner_id.clone(),
            started_at: run.started_at,
            finished_at: None,
            log_size_bytes: 0,
        });
    }
    Ok(Json(RunDetail { run: run.into(), attempts }))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CancelRequest {
    #[serde(default)]
    force: bool,
}

/// The body is optional: `{"force": true}` skips the stop grace.
async fn cancel(
    State(app): State<Context>,
    ClientAddr(client): ClientAddr,
    Caller(caller): Caller,
    RunId(id): RunId,
    body: Option<JsonBody<CancelRequest>>,
) -> Result<(StatusCode, Json<RunResponse>), Error> {
    let request = body.map(|JsonBody(r)| r).unwrap_or_default();
    let run = runs::cancel(&app, id, request.force).await?;
    let target = format!("run:{id}");
    let details = Some(serde_json::json!({ "force": request.force }));
    record(&app, caller.actor(), client.as_deref(), Action::RunCancel, Some(&target), Outcome::Ok, details).await;
    Ok((StatusCode::ACCEPTED, Json(run.into())))
}
