//! `/api/v1/runs`: listing, one run, cancelling.

use super::error::ApiError;
use super::{AppState, extract};
use crate::runs;
use crate::store::runs::{AttemptRecord, Run, RunFilter};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::Serialize;
use shared::RunStatus;
use std::collections::HashMap;
use uuid::Uuid;

const DEFAULT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 500;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/runs", get(list))
        .route("/api/v1/runs/{id}", get(show))
        .route("/api/v1/runs/{id}/cancel", post(cancel))
}

#[derive(Serialize)]
struct Page {
    items: Vec<Run>,
    next_cursor: Option<String>,
}

async fn list(
    State(app): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Page>, ApiError> {
    let mut filter = RunFilter { limit: DEFAULT_LIMIT, ..Default::default() };
    for (key, value) in &query {
        match key.as_str() {
            "pipeline" if !value.is_empty() => filter.pipeline = Some(value.clone()),
            "status" if !value.is_empty() => {
                let allowed = RunStatus::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ");
                filter.status = Some(value.parse().map_err(|_| {
                    ApiError::invalid("status", format!("unknown status `{value}`; use one of {allowed}"))
                })?);
            }
            "limit" => {
                filter.limit = value.parse::<i64>().ok().filter(|l| (1..=MAX_LIMIT).contains(l)).ok_or_else(|| {
                    ApiError::invalid("limit", format!("limit must be a number from 1 to {MAX_LIMIT}"))
                })?;
            }
            "cursor" if !value.is_empty() => filter.before = Some(decode_cursor(value)?),
            "pipeline" | "status" | "cursor" => {}
            other => return Err(ApiError::invalid(other, format!("unknown query parameter `{other}`"))),
        }
    }
    // One extra row tells whether another page exists.
    let wanted = filter.limit;
    filter.limit += 1;
    let mut items = app.store.list_runs(&filter).await?;
    let next_cursor = if items.len() as i64 > wanted {
        items.truncate(wanted as usize);
        items.last().map(|r| encode_cursor(r.created_at, r.id))
    } else {
        None
    };
    Ok(Json(Page { items, next_cursor }))
}

fn encode_cursor(created_at: DateTime<Utc>, id: Uuid) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}:{id}", created_at.timestamp_micros()))
}

fn decode_cursor(raw: &str) -> Result<(DateTime<Utc>, Uuid), ApiError> {
    let bad = || ApiError::invalid("cursor", "cursor is not one this API returned");
    let text = URL_SAFE_NO_PAD.decode(raw).ok().and_then(|b| String::from_utf8(b).ok()).ok_or_else(bad)?;
    let (micros, id) = text.split_once(':').ok_or_else(bad)?;
    let at = micros.parse::<i64>().ok().and_then(DateTime::from_timestamp_micros).ok_or_else(bad)?;
    Ok((at, Uuid::parse_str(id).map_err(|_| bad())?))
}

/// One run with its `attempts`: every finished one, then the current one.
async fn show(State(app): State<AppState>, Path(id): Path<String>) -> Result<Json<serde_json::Value>, ApiError> {
    let id = extract::run_id(&id)?;
    let run = app.store.get_run(id).await?.ok_or_else(|| ApiError::not_found(format!("run {id} not found")))?;
    let mut attempts = app.store.attempts(id).await?;
    if !run.status.is_final() {
        attempts.push(AttemptRecord {
            attempt: run.attempt,
            status: run.status,
            failure_reason: None,
            exit_code: None,
            error_message: None,
            runner_id: run.runner_id.clone(),
            started_at: run.started_at,
            finished_at: None,
            log_key: None,
            log_size_bytes: 0,
        });
    }
    let mut body = serde_json::to_value(&run).map_err(ApiError::internal)?;
    body["attempts"] = serde_json::to_value(&attempts).map_err(ApiError::internal)?;
    Ok(Json(body))
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CancelRequest {
    #[serde(default)]
    force: bool,
}

async fn cancel(
    State(app): State<AppState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Run>), ApiError> {
    let id = extract::run_id(&id)?;
    let request = if body.iter().all(u8::is_ascii_whitespace) {
        CancelRequest::default()
    } else {
        serde_json::from_slice::<CancelRequest>(&body)
            .map_err(|e| ApiError::invalid("body", format!("request body must be {{\"force\": true|false}}: {e}")))?
    };
    let run = runs::cancel(&app, id, request.force).await?;
    Ok((StatusCode::ACCEPTED, Json(run)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let at = DateTime::from_timestamp_micros(1_700_000_000_123_456).expect("time");
        let id = Uuid::new_v4();
        let decoded = decode_cursor(&encode_cursor(at, id)).ok();
        assert_eq!(decoded, Some((at, id)));
        assert!(decode_cursor("not-a-cursor").is_err());
        assert!(decode_cursor(&URL_SAFE_NO_PAD.encode("12:nope")).is_err());
    }
}
