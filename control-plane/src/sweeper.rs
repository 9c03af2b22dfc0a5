//! Periodic repair work every replica does (no leader): re-offer queued runs
//! whose NATS offer is gone, finalise runs whose runner stopped heartbeating,
//! and recreate streams a restarted NATS server lost.

use crate::app::App;
use crate::runs;
use tokio_util::sync::CancellationToken;

pub async fn run(app: App, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(app.config.sweep_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => sweep(&app).await,
        }
    }
}

async fn sweep(app: &App) {
    if let Err(e) = app.bus.ensure_streams().await {
        tracing::warn!(error = %e, "sweeper: NATS streams unavailable");
        return;
    }
    if let Err(e) = runs::reoffer_stale(app).await {
        tracing::warn!(error = %e, "sweeper: re-offering failed");
    }
    if let Err(e) = runs::expire_leases(app).await {
        tracing::warn!(error = %e, "sweeper: lease expiry failed");
    }
    if let Err(e) = runs::fail_unrunnable(app).await {
        tracing::warn!(error = %e, "sweeper: no-runner check failed");
    }
    if let Err(e) = runs::expire_logs(app).await {
        tracing::warn!(error = %e, "sweeper: log retention failed");
    }
    if let Err(e) = runs::expire_timeouts(app).await {
        tracing::warn!(error = %e, "sweeper: timeout enforcement failed");
    }
}
