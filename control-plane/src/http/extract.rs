//! Parsing of path and query values into typed values with 400s that name the field.

use super::error::ApiError;
use axum::http::HeaderMap;
use uuid::Uuid;

pub fn run_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::invalid("id", format!("`{raw}` is not a run id (a UUID)")))
}

/// The SSE `Last-Event-ID` header: the last line number the client has.
pub fn last_event_id(headers: &HeaderMap) -> Result<u64, ApiError> {
    let Some(value) = headers.get("last-event-id") else { return Ok(0) };
    value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .ok_or_else(|| ApiError::invalid("Last-Event-ID", "Last-Event-ID must be a line number"))
}
