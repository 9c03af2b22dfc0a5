//! Periodic repair work every replica does (no leader): re-offer queued runs
//! whose NATS offer is gone, finalise runs whose runner stopped heartbeating,
//! recreate streams a restarted NATS server lost (and keep their limits), purge
//! log batches published after their attempt ended; now and then, delete ended
//! login sessions and forgotten login failure counters.
//!
//! Lease expiry waits until this replica has reached the store for one whole
//! lease (`Context::outages`): during a store outage no heartbeat can renew a
//! lease (runners are answered provisionally and keep their jobs, see
//! `runs::leases`), so right after it every lease looks expired. Waiting one
//! lease lets the runners renew first (they heartbeat every few seconds); a
//! replica that just started waits the same way, since it cannot know whether
//! an outage just ended.

use crate::context::Context;
use crate::{auth, runs};

/// Authentication housekeeping runs every this many sweeps (about once a minute by default):
/// nothing depends on it being prompt, since lookups ignore ended sessions anyway.
const AUTH_HOUSEKEEPING_EVERY: u64 = 12;

/// Sweeps every `SWEEP_INTERVAL` until the context shuts down.
pub async fn run(ctx: Context) {
    let shutdown = ctx.shutdown.clone();
    let mut tick = tokio::time::interval(ctx.config.sweep_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sweeps: u64 = 0;
    let mut late = runs::LatePurges::new(ctx.config.late_log_purge_after);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {
                if let Err(e) = ctx.store.ping().await {
                    tracing::warn!(error = %e, "sweeper: store unreachable; lease expiry paused");
                    ctx.outages.seen();
                }
                sweep(&ctx, ctx.outages.quiet_for(ctx.config.lease), &mut late).await;
                if sweeps.is_multiple_of(AUTH_HOUSEKEEPING_EVERY)
                    && let Err(e) = auth::housekeeping(&ctx.store, &ctx.config.sessions).await
                {
                    tracing::warn!(error = %e, "sweeper: session purge failed");
                }
                sweeps = sweeps.wrapping_add(1);
            }
        }
    }
}

/// `expire_leases`: the store has been reachable for a whole lease (see the module docs).
async fn sweep(ctx: &Context, expire_leases: bool, late: &mut runs::LatePurges) {
    if let Err(e) = ctx.bus.ensure_streams().await {
        tracing::warn!(error = %e, "sweeper: NATS streams unavailable");
        return;
    }
    if let Err(e) = runs::reoffer_stale(ctx).await {
        tracing::warn!(error = %e, "sweeper: re-offering failed");
    }
    if expire_leases && let Err(e) = runs::expire_leases(ctx).await {
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
    if let Err(e) = runs::purge_late_logs(ctx, late).await {
        tracing::warn!(error = %e, "sweeper: purging late log batches failed");
    }
}
