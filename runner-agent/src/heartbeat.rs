//! Heartbeats (lease renewal, cancel and stale notices in the reply) and the
//! runner's cancel subscription.

use crate::active::{Active, StopReason};
use crate::config::Config;
use futures::StreamExt;
use shared::protocol::{CancelNotice, Heartbeat, HeartbeatReply};
use shared::subjects;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub async fn run(config: Arc<Config>, nats: async_nats::Client, active: Active, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(config.heartbeat_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_renewal = Instant::now();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {
                if beat(&config, &nats, &active).await {
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
pub async fn beat(config: &Config, nats: &async_nats::Client, active: &Active) -> bool {
    let hb = Heartbeat {
        runner_id: config.runner_id.clone(),
        version: env!("CARGO_PKG_VERSION").into(),
        pool: config.pool.clone(),
        slots: config.concurrency,
        running: active.snapshot(),
    };
    let Ok(payload) = serde_json::to_vec(&hb) else { return false };
    let request = async_nats::Request::new().payload(payload.into()).timeout(Some(Duration::from_secs(5)));
    let reply = match nats.send_request(subjects::HEARTBEAT, request).await {
        Ok(msg) => msg,
        Err(e) => {
            tracing::warn!(error = %e, "heartbeat not answered");
            return false;
        }
    };
    match serde_json::from_slice::<HeartbeatReply>(&reply.payload) {
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
            tracing::warn!(error = %e, "unreadable heartbeat reply");
            false
        }
    }
}

/// Immediate cancel notices from the control plane (heartbeats repeat them).
pub async fn listen_for_cancels(
    runner_id: String,
    nats: async_nats::Client,
    active: Active,
    shutdown: CancellationToken,
) {
    let mut sub = match nats.subscribe(subjects::runner_cancel(&runner_id)).await {
        Ok(sub) => sub,
        Err(e) => {
            tracing::error!(error = %e, "cannot subscribe to cancel notices; relying on heartbeats");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            msg = sub.next() => match msg {
                Some(msg) => match serde_json::from_slice::<CancelNotice>(&msg.payload) {
                    Ok(notice) => active.stop(&notice.attempt, StopReason::Cancel { force: notice.force }),
                    Err(e) => tracing::warn!(error = %e, "malformed cancel notice"),
                },
                None => return,
            }
        }
    }
}
