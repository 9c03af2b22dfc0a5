//! Parsing of path and query values into typed values with 400s that name the field.

use super::error::ApiError;
use axum::http::HeaderMap;
use uuid::Uuid;

pub fn run_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::invalid("id", format!("`{raw}` is not a run id (a UUID)")))
}

/// The SSE `Last-Event-ID` header: the attempt and the last line the client
/// has (`<line>` for attempt 1, `<attempt>:<line>` after it).
pub fn last_event_id(headers: &HeaderMap) -> Result<(i32, u64), ApiError> {
    let Some(value) = headers.get("last-event-id") else { return Ok((1, 0)) };
    let parse = |v: &str| -> Option<(i32, u64)> {
        match v.trim().split_once(':') {
            None => Some((1, v.trim().parse().ok()?)),
            Some((attempt, line)) => Some((attempt.parse().ok().filter(|a| *a >= 1)?, line.parse().ok()?)),
        }
    };
    value
        .to_str()
        .ok()
        .and_then(parse)
        .ok_or_else(|| ApiError::invalid("Last-Event-ID", "Last-Event-ID must be `<line>` or `<attempt>:<line>`"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("last-event-id", value.parse().expect("header value"));
        headers
    }

    #[test]
    fn last_event_ids_name_attempt_and_line() {
        assert_eq!(last_event_id(&HeaderMap::new()).ok(), Some((1, 0)));
        assert_eq!(last_event_id(&with("17")).ok(), Some((1, 17)));
        assert_eq!(last_event_id(&with("2:5")).ok(), Some((2, 5)));
        assert!(last_event_id(&with("0:5")).is_err() && last_event_id(&with("x")).is_err());
    }
}
