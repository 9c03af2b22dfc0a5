//! Extractors whose rejections are [`Error`]s: 400s that name the field, 415
//! for a body that is not JSON. Handlers never parse bodies by hand.

use super::error::Error;
use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, OptionalFromRequest, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use uuid::Uuid;

/// A JSON request body. `Option<JsonBody<T>>` accepts an empty body (`None`),
/// as `curl -X POST …` sends one.
pub struct JsonBody<T>(pub T);

/// Whether a `Content-Type` value is JSON (`application/json`, with any
/// parameters, or an `application/*+json` type).
pub fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// A body must be declared JSON. Only an empty body may come without a
/// `Content-Type` (a form or `text/plain` post from a web page never passes).
pub fn check_content_type(headers: &HeaderMap, body_is_empty: bool) -> Result<(), Error> {
    match headers.get(header::CONTENT_TYPE) {
        None if body_is_empty => Ok(()),
        None => {
            Err(Error::UnsupportedMediaType("a request body must be sent as `content-type: application/json`".into()))
        }
        Some(value) if value.to_str().is_ok_and(is_json) => Ok(()),
        Some(value) => Err(Error::UnsupportedMediaType(format!(
            "content type `{}` is not accepted; send `content-type: application/json`",
            String::from_utf8_lossy(value.as_bytes())
        ))),
    }
}

/// Middleware: a `POST`, `PUT` or `PATCH` whose declared body is not JSON gets
/// 415 before any handler runs, so a route added later cannot forget it.
/// (`JsonBody` checks the bytes actually received as well.)
pub async fn require_json(request: Request, next: Next) -> Response {
    if [Method::POST, Method::PUT, Method::PATCH].contains(request.method()) {
        let headers = request.headers();
        let declared_empty = match headers.get(header::CONTENT_LENGTH) {
            Some(length) => length.as_bytes() == b"0",
            None => !headers.contains_key(header::TRANSFER_ENCODING),
        };
        if let Err(e) = check_content_type(headers, declared_empty) {
            return e.into_response();
        }
    }
    next.run(request).await
}

/// Reads the body; `None` when it is empty (or only whitespace).
async fn read_body<T: DeserializeOwned, S: Send + Sync>(req: Request, state: &S) -> Result<Option<T>, Error> {
    let headers = req.headers().clone();
    let bytes = Bytes::from_request(req, state)
        .await
        .map_err(|e| Error::invalid("body", format!("cannot read the request body: {e}")))?;
    check_content_type(&headers, bytes.is_empty())?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(&bytes).map(Some).map_err(|e| Error::invalid("body", format!("invalid request body: {e}")))
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Error> {
        read_body(req, state)
            .await?
            .map(JsonBody)
            .ok_or_else(|| Error::invalid("body", "a JSON request body is required"))
    }
}

impl<T: DeserializeOwned, S: Send + Sync> OptionalFromRequest<S> for JsonBody<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Option<Self>, Error> {
        Ok(read_body(req, state).await?.map(JsonBody))
    }
}

/// The `{id}` of a run route.
pub struct RunId(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for RunId {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Error> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state).await.map_err(|e| path_error("id", e))?;
        Uuid::parse_str(&raw).map(RunId).map_err(|_| Error::invalid("id", format!("`{raw}` is not a run id (a UUID)")))
    }
}

/// The `{id}` path segment of a user or token: a UUID.
pub struct UuidPath(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for UuidPath {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Error> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state).await.map_err(|e| path_error("id", e))?;
        Uuid::parse_str(&raw).map(UuidPath).map_err(|_| Error::invalid("id", format!("`{raw}` is not an id (a UUID)")))
    }
}

/// The `{name}` of a pipeline route (checked by `runs::load_pipeline`).
pub struct PipelineName(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PipelineName {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Error> {
        let Path(name) = Path::<String>::from_request_parts(parts, state).await.map_err(|e| path_error("name", e))?;
        Ok(PipelineName(name))
    }
}

fn path_error(field: &str, e: PathRejection) -> Error {
    Error::invalid(field, format!("invalid path segment: {}", e.body_text()))
}

/// The query string as names and values; handlers check each name.
pub struct QueryMap(pub HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for QueryMap {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Error> {
        let Query(map) = Query::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|e: QueryRejection| Error::invalid("query", format!("invalid query string: {}", e.body_text())))?;
        Ok(QueryMap(map))
    }
}

/// The SSE `Last-Event-ID` header: the attempt and the last line the client
/// has (`<line>` for attempt 1, `<attempt>:<line>` after it).
pub fn last_event_id(headers: &HeaderMap) -> Result<(i32, u64), Error> {
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
        .ok_or_else(|| Error::invalid("Last-Event-ID", "Last-Event-ID must be `<line>` or `<attempt>:<line>`"))
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

    #[test]
    fn json_content_types() {
        assert!(is_json("application/json") && is_json("Application/JSON; charset=utf-8"));
        assert!(is_json("application/merge-patch+json"));
        assert!(!is_json("text/plain") && !is_json("application/x-www-form-urlencoded") && !is_json(""));
    }
}
