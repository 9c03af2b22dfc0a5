//! HTTP API: router, serve. One file per resource; every handler takes the
//! shared `Context` as its state.

pub mod error;
pub mod extract;
mod health;
pub mod host;
mod logs;
mod pipelines;
mod runners;
mod runs;

use crate::context::Context;
use axum::Router;
use axum::serve::ListenerExt;
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;

pub fn router(app: Context) -> Router {
    Router::new()
        .merge(health::router())
        .merge(pipelines::router())
        .merge(runs::router())
        .merge(logs::router())
        .merge(runners::router())
        .fallback(error::not_found_fallback)
        .method_not_allowed_fallback(error::method_not_allowed_fallback)
        .layer(axum::middleware::from_fn(extract::require_json))
        .layer(axum::middleware::from_fn_with_state(app.clone(), host::check_host))
        .layer(axum::middleware::from_fn(error::add_error_path))
        .layer(TraceLayer::new_for_http())
        .with_state(app)
}

pub async fn serve(
    app: Context,
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
    axum::serve(listener, router(app)).with_graceful_shutdown(async move { shutdown.cancelled().await }).await
}
