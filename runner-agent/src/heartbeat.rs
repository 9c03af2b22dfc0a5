//! Heartbeats (lease renewal, cancel and stale notices in the reply) and the
//! runner's cancel subscription.

use crate::active::{Active, StopReason};
use crate::config::Config;
use crate::link::ControlLink;
use futures::StreamExt;
use shared::protocol::Heartbeat;
use std::sync::Arc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub async fn run(config: Arc<Config>, link: Arc<dyn ControlLink>, active: Active, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(config.heartbeat_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_renewal = Instant::now();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {
                if beat(&config, link.as_ref(), &active, false).await {
                    last_renewal = Instant::now();
                } else if !active.is_empty() && last_renewal.elapsed() > config.self_fence_after {
                    // Our leases are about to expire and another runner may get the
                    // attempts: stop them here so two copies never run.
                    tracing::error!(silent_for = ?last_renewal.elapsed(), "leases not renewed; stopping all running jobs");
                    active.stop_all(StopReason::Stale);
                }
            }
        }
    }
}

/// One heartbeat; `true` when the control plane answered (leases renewed).
/// `starting`: the first one of this process (see [`Heartbeat::starting`]).
pub async fn beat(config: &Config, link: &dyn ControlLink, active: &Active, starting: bool) -> bool {
    let hb = Heartbeat {
        runner_id: config.runner_id.clone(),
        version: env!("CARGO_PKG_VERSION").into(),
        pool: config.pool.clone(),
        slots: config.concurrency,
        running: active.snapshot(),
        starting,
    };
    match link.heartbeat(&hb).await {
        Ok(reply) => {
            for notice in &reply.cancel {
                active.stop(&notice.attempt, StopReason::Cancel { force: notice.force });
            }
            for at in &reply.stale {
                active.stop(at, StopReason::Stale);
            }
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "heartbeat not answered");
            false
        }
    }
}

/// Immediate cancel notices from the control plane (heartbeats repeat them).
pub async fn listen_for_cancels(
    runner_id: String,
    link: Arc<dyn ControlLink>,
    active: Active,
    shutdown: CancellationToken,
) {
    let mut notices = match link.cancel_notices(&runner_id).await {
        Ok(notices) => notices,
        Err(e) => {
            tracing::error!(error = %e, "cannot subscribe to cancel notices; relying on heartbeats");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            notice = notices.next() => match notice {
                Some(notice) => active.stop(&notice.attempt, StopReason::Cancel { force: notice.force }),
                None => return,
            }
        }
    }
}
