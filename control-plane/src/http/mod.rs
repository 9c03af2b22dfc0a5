//! HTTP API: router, serve. One file per resource; handlers take the shared
//! `Context` (or the `Authenticator`) from the [`ApiState`]. Every route is
//! declared in `policy::POLICY` and enforced by `authn::guard`.

pub mod audit;
pub mod auth;
pub mod authn;
pub mod error;
pub mod extract;
mod health;
pub mod host;
mod logs;
pub mod pagination;
mod pipelines;
pub mod policy;
pub mod routing;
mod runners;
mod runs;
pub mod stream_slots;
mod tokens;
mod users;

use crate::auth::Authenticator;
use crate::context::Context;
use axum::Router;
use axum::extract::FromRef;
use axum::serve::ListenerExt;
use routing::ApiRouter;
use std::net::SocketAddr;
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;

/// What handlers can extract: the control plane's context and the authenticator
/// (its credential cache is per process, shared by every request).
#[derive(Clone)]
pub struct ApiState {
    pub ctx: Context,
    pub auth: Authenticator,
    /// The live log streams open on this process (their limits).
    pub streams: stream_slots::StreamSlots,
}

impl FromRef<ApiState> for Context {
    fn from_ref(state: &ApiState) -> Context {
        state.ctx.clone()
    }
}

impl FromRef<ApiState> for stream_slots::StreamSlots {
    fn from_ref(state: &ApiState) -> stream_slots::StreamSlots {
        state.streams.clone()
    }
}

impl FromRef<ApiState> for Authenticator {
    fn from_ref(state: &ApiState) -> Authenticator {
        state.auth.clone()
    }
}

/// Every route, before middleware (the policy test lists them from here).
pub fn routes() -> ApiRouter {
    ApiRouter::new()
        .merge(health::router())
        .merge(auth::router())
        .merge(users::router())
        .merge(tokens::router())
        .merge(audit::router())
        .merge(pipelines::router())
        .merge(runs::router())
        .merge(logs::router())
        .merge(runners::router())
}

pub fn router(state: ApiState) -> Router {
    // Outermost last: error paths and logging see every answer; the host check
    // comes before credentials are looked at, and those before the body.
    routes()
        .into_router()
        .fallback(error::not_found_fallback)
        .method_not_allowed_fallback(error::method_not_allowed_fallback)
        .layer(axum::middleware::from_fn(extract::require_json))
        .layer(axum::middleware::from_fn_with_state(state.clone(), authn::guard))
        .layer(axum::middleware::from_fn_with_state(state.ctx.clone(), host::check_host))
        .layer(axum::middleware::from_fn(error::add_error_path))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

pub async fn serve(
    state: ApiState,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    // TCP_NODELAY: axum leaves Nagle on. A log stream writes small SSE events while the
    // previous segment is unacknowledged, so Nagle held them until the client's delayed
    // ACK (40 ms on Linux): the ~50 ms live-log p99 at 10k lines/s (BENCHMARKS.md).
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY on an accepted connection");
        }
    });
    // The peer address feeds the login throttle and the audit log.
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app).with_graceful_shutdown(async move { shutdown.cancelled().await }).await
}
