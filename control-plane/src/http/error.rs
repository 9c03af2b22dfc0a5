//! The one HTTP error type. Every error response has the body
//! `{"error":{"message","type","details","timestamp","path"}}`; internal
//! failures are logged in full and answered with a generic message.

use crate::{pipelines, runs, store};
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub message: String,
    pub details: Value,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, kind, message: message.into(), details: json!({}) }
    }

    /// A 400 naming the offending field.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        ApiError {
            details: json!({ "field": field }),
            ..Self::new(StatusCode::BAD_REQUEST, "ValidationError", message)
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NotFound", message)
    }

    /// Logs the cause; the client learns only that something failed inside.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", "internal error; see the control-plane log")
    }

    fn body(&self, path: Option<&str>) -> Value {
        json!({ "error": {
            "message": self.message,
            "type": self.kind,
            "details": self.details,
            "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "path": path,
        }})
    }
}

/// What a 429 tells clients to wait before trying again.
const RETRY_AFTER_SECS: u64 = 5;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body(None))).into_response();
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        // The path is filled in by `add_error_path`, which sees the request.
        response.extensions_mut().insert(self);
        response
    }
}

/// Middleware: rewrites error bodies to include the request path.
pub async fn add_error_path(request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    let mut response = next.run(request).await;
    if let Some(error) = response.extensions_mut().remove::<ApiError>() {
        let mut rewritten = (error.status, axum::Json(error.body(Some(&path)))).into_response();
        if let Some(retry) = response.headers().get(header::RETRY_AFTER) {
            rewritten.headers_mut().insert(header::RETRY_AFTER, retry.clone());
        }
        return rewritten;
    }
    response
}

pub async fn not_found_fallback() -> ApiError {
    ApiError::not_found("no such endpoint")
}

pub async fn method_not_allowed_fallback() -> Response {
    let mut response =
        ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", "method not allowed here").into_response();
    response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, POST"));
    response
}

impl From<store::Error> for ApiError {
    fn from(e: store::Error) -> Self {
        ApiError::internal(e)
    }
}

impl From<pipelines::Error> for ApiError {
    fn from(e: pipelines::Error) -> Self {
        match &e {
            pipelines::Error::NotFound(_) => ApiError::not_found(e.to_string()),
            pipelines::Error::Invalid { .. } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "PipelineMisconfigured", e.to_string())
            }
            pipelines::Error::Io { .. } => ApiError::internal(e),
        }
    }
}

impl From<runs::Error> for ApiError {
    fn from(e: runs::Error) -> Self {
        match e {
            runs::Error::InvalidPipelineName(_) => ApiError::invalid("name", e.to_string()),
            runs::Error::Pipeline(p) => p.into(),
            runs::Error::InvalidParam { ref field, .. } => ApiError::invalid(&field.clone(), e.to_string()),
            runs::Error::RunNotFound(_) => ApiError::not_found(e.to_string()),
            runs::Error::AlreadyFinished(ref run) => ApiError {
                details: json!({ "status": run.status }),
                ..ApiError::new(StatusCode::CONFLICT, "Conflict", e.to_string())
            },
            runs::Error::LimitReached { limit, max } => ApiError {
                details: json!({ "limit": limit, "max": max, "retry_after_seconds": RETRY_AFTER_SECS }),
                ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "TooManyRuns", e.to_string())
            },
            runs::Error::Store(_) | runs::Error::Task(_) => ApiError::internal(e),
        }
    }
}
