//! Periodic repair work every replica does (no leader): re-offer queued runs
//! whose NATS offer is gone, finalise runs whose runner stopped heartbeating,
//! and recreate streams a restarted NATS server lost.

use crate::context::Context;
use crate::runs;

/// Sweeps every `SWEEP_INTERVAL` until the context shuts down.
pub async fn run(ctx: Context) {
    let shutdown = ctx.shutdown.clone();
    let mut tick = tokio::time::interval(ctx.config.sweep_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => sweep(&ctx).await,
        }
    }
}

async fn sweep(ctx: &Context) {
    if let Err(e) = ctx.bus.ensure_streams().await {
        tracing::warn!(error = %e, "sweeper: NATS streams unavailable");
        return;
    }
    if let Err(e) = runs::reoffer_stale(ctx).await {
        tracing::warn!(error = %e, "sweeper: re-offering failed");
    }
    if let Err(e) = runs::expire_leases(ctx).await {
        tracing::warn!(error = %e, "sweeper: lease expiry failed");
    }
    if let Err(e) = runs::fail_unrunnable(ctx).await {
        tracing::warn!(error = %e, "sweeper: no-runner check failed");
    }
    if let Err(e) = runs::expire_logs(ctx).await {
        tracing::warn!(error = %e, "sweeper: log retention failed");
    }
    if let Err(e) = runs::expire_timeouts(ctx).await {
        tracing::warn!(error = %e, "sweeper: timeout enforcement failed");
    }
}
