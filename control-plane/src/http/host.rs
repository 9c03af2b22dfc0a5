//! The `Host` check against DNS rebinding: a web page on another site whose
//! name an attacker points at 127.0.0.1 reaches a loopback server, but its
//! requests still carry the attacker's host name. Only loopback names and the
//! names the operator set (`PUBLIC_URL`, `ALLOWED_HOSTS`) are served; every
//! route is checked, `/health` included, so the rule has no exception.

use super::error::Error;
use crate::context::Context;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Middleware: refuses a request whose `Host` is not served with 421.
pub async fn check_host(State(app): State<Context>, request: Request, next: Next) -> Response {
    let host = match request.headers().get(header::HOST) {
        Some(value) => String::from_utf8_lossy(value.as_bytes()).into_owned(),
        // HTTP/2 carries the host in the URI instead.
        None => request.uri().authority().map(|a| a.to_string()).unwrap_or_default(),
    };
    if app.config.allowed_hosts.allows(&host) {
        next.run(request).await
    } else {
        Error::MisdirectedRequest { host }.into_response()
    }
}
