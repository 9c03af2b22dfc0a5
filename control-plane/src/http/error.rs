//! The one HTTP error type. Every error response has the body
//! `{"error":{"message","type","details","timestamp","path"}}`; internal
//! failures are logged in full (by `add_error_path`, once) and answered with a
//! generic message.

use crate::auth::{self, Role};
use crate::{pipelines, runner_identity, runs, store};
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use shared::RunStatus;

/// What a 429 tells clients to wait before trying again.
pub const RETRY_AFTER_SECS: u64 = 5;

/// Every way a request can fail. Each variant has one status and one stable
/// `type` string that clients may match on.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// 400: a path, query, header or body value is wrong; `field` names it.
    #[error("{message}")]
    Invalid { field: String, message: String },
    /// 401: no credentials, or ones that are not valid (unknown, expired, revoked,
    /// ended session, disabled user): the same answer for all of them.
    #[error("{0}")]
    Unauthorized(String),
    /// 401 from the login route: unknown user, wrong password or disabled user alike.
    #[error("invalid username or password")]
    InvalidCredentials,
    /// 403: authenticated, but the route needs a higher role.
    #[error("this needs the {required} role (yours: {role})")]
    Forbidden { required: Role, role: Role },
    /// 403: a state change authenticated by cookie without a valid CSRF token or
    /// from another origin.
    #[error("{0}")]
    CsrfRejected(String),
    #[error("{0}")]
    NotFound(String),
    #[error("method not allowed here")]
    MethodNotAllowed,
    /// 409: the run already finished.
    #[error("{message}")]
    Conflict { message: String, status: RunStatus },
    /// 409: the name is taken (username, token name).
    #[error("{0}")]
    Taken(String),
    /// 409: the change would leave no enabled admin.
    #[error("the last enabled admin cannot be demoted, disabled or deleted")]
    LastAdmin,
    /// 410: the retention policy deleted the log.
    #[error("{message}")]
    LogExpired { message: String, expired_at: DateTime<Utc> },
    /// 415: a body that is not declared `application/json`.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 421: the `Host` is not one this server answers for (DNS rebinding).
    #[error("host `{host}` is not served here; set ALLOWED_HOSTS or PUBLIC_URL to allow it")]
    MisdirectedRequest { host: String },
    /// 422: the pipeline folder is wrong; the message says how.
    #[error("{0}")]
    PipelineMisconfigured(String),
    /// 429: a concurrency limit under `CONCURRENCY_POLICY=reject`.
    #[error("{message}")]
    TooManyRuns { message: String, limit: &'static str, max: i64 },
    /// 429: too many failed logins for this username or client address.
    #[error("too many failed logins; retry in {retry_after_seconds} s")]
    TooManyLoginAttempts { retry_after_seconds: u64 },
    /// 503: the live log streams of this replica, or of this user, are at their limit.
    #[error("{message}")]
    TooManyStreams { message: String, limit: &'static str, max: usize },
    /// 500: `cause` is logged, never sent.
    #[error("internal error; see the control-plane log")]
    Internal { cause: String },
}

impl Error {
    /// A 400 naming the offending field.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Invalid { field: field.into(), message: message.into() }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Error::NotFound(message.into())
    }

    /// The client learns only that something failed inside; `add_error_path` logs the cause.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        Error::Internal { cause: cause.to_string() }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Error::Invalid { .. } => StatusCode::BAD_REQUEST,
            Error::Unauthorized(_) | Error::InvalidCredentials => StatusCode::UNAUTHORIZED,
            Error::Forbidden { .. } | Error::CsrfRejected(_) => StatusCode::FORBIDDEN,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Error::Conflict { .. } | Error::Taken(_) | Error::LastAdmin => StatusCode::CONFLICT,
            Error::LogExpired { .. } => StatusCode::GONE,
            Error::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::MisdirectedRequest { .. } => StatusCode::MISDIRECTED_REQUEST,
            Error::PipelineMisconfigured(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Error::TooManyRuns { .. } | Error::TooManyLoginAttempts { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            Error::TooManyStreams { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The stable machine-readable `type` of the body.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Invalid { .. } => "ValidationError",
            Error::Unauthorized(_) => "Unauthorized",
            Error::InvalidCredentials => "InvalidCredentials",
            Error::Forbidden { .. } => "Forbidden",
            Error::CsrfRejected(_) => "CsrfRejected",
            Error::Taken(_) => "Conflict",
            Error::LastAdmin => "LastAdmin",
            Error::TooManyLoginAttempts { .. } => "TooManyLoginAttempts",
            Error::NotFound(_) => "NotFound",
            Error::MethodNotAllowed => "MethodNotAllowed",
            Error::Conflict { .. } => "Conflict",
            Error::LogExpired { .. } => "LogExpired",
            Error::UnsupportedMediaType(_) => "UnsupportedMediaType",
            Error::MisdirectedRequest { .. } => "MisdirectedRequest",
            Error::PipelineMisconfigured(_) => "PipelineMisconfigured",
            Error::TooManyRuns { .. } => "TooManyRuns",
            Error::Internal { .. } => "InternalError",
            Error::TooManyStreams { .. } => "TooManyStreams",
        }
    }

    fn details(&self) -> Value {
        match self {
            Error::Invalid { field, .. } => json!({ "field": field }),
            Error::Conflict { status, .. } => json!({ "status": status }),
            Error::LogExpired { expired_at, .. } => json!({ "log_expired_at": expired_at }),
            Error::MisdirectedRequest { host } => json!({ "host": host }),
            Error::Forbidden { required, role } => json!({ "required_role": required, "role": role }),
            Error::TooManyLoginAttempts { retry_after_seconds } => {
                json!({ "retry_after_seconds": retry_after_seconds })
            }
            Error::TooManyRuns { limit, max, .. } => {
                json!({ "limit": limit, "max": max, "retry_after_seconds": RETRY_AFTER_SECS })
            }
            Error::TooManyStreams { limit, max, .. } => {
                json!({ "limit": limit, "max": max, "retry_after_seconds": RETRY_AFTER_SECS })
            }
            _ => json!({}),
        }
    }

    fn body(&self, path: Option<&str>) -> Value {
        json!({ "error": {
            "message": self.to_string(),
            "type": self.kind(),
            "details": self.details(),
            "timestamp": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "path": path,
        }})
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let mut response = (self.status(), axum::Json(self.body(None))).into_response();
        match &self {
            Error::TooManyRuns { .. } | Error::TooManyStreams { .. } => {
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
            }
            Error::TooManyLoginAttempts { retry_after_seconds } => {
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_seconds));
            }
            // RFC 9110: a 401 names the scheme that would work.
            Error::Unauthorized(_) | Error::InvalidCredentials => {
                response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        // The path is filled in by `add_error_path`, which sees the request.
        response.extensions_mut().insert(self);
        response
    }
}

/// Middleware: rewrites error bodies to include the request path, and logs
/// internal errors (the one place that does). Headers such as `Allow` and
/// `Retry-After` are kept.
pub async fn add_error_path(request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    let method = request.method().clone();
    let response = next.run(request).await;
    let (mut parts, body) = response.into_parts();
    let Some(error) = parts.extensions.remove::<Error>() else {
        return Response::from_parts(parts, body);
    };
    if let Error::Internal { cause } = &error {
        tracing::error!(%method, %path, error = %cause, "internal error");
    }
    let bytes = error.body(Some(&path)).to_string();
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(bytes))
}

pub async fn not_found_fallback() -> Error {
    Error::not_found("no such endpoint")
}

/// axum adds the route's real `Allow` header to this answer.
pub async fn method_not_allowed_fallback() -> Error {
    Error::MethodNotAllowed
}

impl From<store::Error> for Error {
    fn from(e: store::Error) -> Self {
        Error::internal(e)
    }
}

impl From<tokio::task::JoinError> for Error {
    fn from(e: tokio::task::JoinError) -> Self {
        Error::internal(e)
    }
}

impl From<pipelines::Error> for Error {
    fn from(e: pipelines::Error) -> Self {
        match &e {
            pipelines::Error::NotFound(_) => Error::NotFound(e.to_string()),
            pipelines::Error::Invalid { .. } => Error::PipelineMisconfigured(e.to_string()),
            pipelines::Error::Io { .. } => Error::internal(e),
        }
    }
}

impl From<runs::Error> for Error {
    fn from(e: runs::Error) -> Self {
        match e {
            runs::Error::InvalidPipelineName(_) => Error::invalid("name", e.to_string()),
            runs::Error::Pipeline(p) => p.into(),
            runs::Error::InvalidParam { field, message } => Error::Invalid { field, message },
            runs::Error::RunNotFound(_) => Error::NotFound(e.to_string()),
            runs::Error::AlreadyFinished(ref run) => Error::Conflict { message: e.to_string(), status: run.status },
            runs::Error::LimitReached { limit, max } => Error::TooManyRuns { message: e.to_string(), limit, max },
            runs::Error::Store(_) | runs::Error::Task(_) => Error::internal(e),
        }
    }
}

impl From<auth::Error> for Error {
    fn from(e: auth::Error) -> Self {
        match e {
            auth::Error::InvalidCredentials => Error::InvalidCredentials,
            auth::Error::InvalidUsername => Error::invalid("username", e.to_string()),
            auth::Error::WeakPassword { .. } | auth::Error::PasswordTooLong { .. } => {
                Error::invalid("password", e.to_string())
            }
            auth::Error::WrongPassword => Error::invalid("current_password", e.to_string()),
            auth::Error::UsernameTaken | auth::Error::TokenNameTaken => Error::Taken(e.to_string()),
            auth::Error::LastAdmin => Error::LastAdmin,
            auth::Error::NotFound(_) => Error::NotFound(e.to_string()),
            auth::Error::InvalidTokenName => Error::invalid("name", e.to_string()),
            auth::Error::RoleTooHigh { .. } => Error::invalid("role", e.to_string()),
            auth::Error::ExpiryInPast => Error::invalid("expires_at", e.to_string()),
            // Rounded up: retrying at the advertised second must not be refused again.
            auth::Error::RetryAfter(wait) => {
                let millis = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
                Error::TooManyLoginAttempts { retry_after_seconds: millis.div_ceil(1000).max(1) }
            }
            auth::Error::Hashing(_) | auth::Error::Io { .. } | auth::Error::Store(_) => Error::internal(e),
        }
    }
}

impl From<runner_identity::Error> for Error {
    fn from(e: runner_identity::Error) -> Self {
        use runner_identity::Error as E;
        match e {
            E::ExpiryInPast => Error::invalid("expires_at", e.to_string()),
            E::InvalidPool => Error::invalid("pool", e.to_string()),
            E::InvalidDescription => Error::invalid("description", e.to_string()),
            E::InvalidRunnerId => Error::invalid("runner_id", e.to_string()),
            E::UnknownRunner(_) => Error::NotFound(e.to_string()),
            E::Refused(_) => Error::invalid("token", e.to_string()),
            E::Store(_) => Error::internal(e),
        }
    }
}
