//! HTTP API: state, router, serve. One file per resource.

pub mod error;
pub mod extract;
mod health;
mod logs;
mod pipelines;
mod runners;
mod runs;

use crate::app::App;
use axum::Router;
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;

pub type AppState = App;

pub fn router(app: App) -> Router {
    Router::new()
        .merge(health::router())
        .merge(pipelines::router())
        .merge(runs::router())
        .merge(logs::router())
        .merge(runners::router())
        .fallback(error::not_found_fallback)
        .method_not_allowed_fallback(error::method_not_allowed_fallback)
        .layer(axum::middleware::from_fn(error::add_error_path))
        .layer(TraceLayer::new_for_http())
        .with_state(app)
}

pub async fn serve(app: App, listener: tokio::net::TcpListener, shutdown: CancellationToken) -> std::io::Result<()> {
    axum::serve(listener, router(app)).with_graceful_shutdown(async move { shutdown.cancelled().await }).await
}
