//! Heartbeats (lease renewal, cancel and stale notices in the reply) and the
//! runner's cancel subscription.

use crate::active::{Active, StopReason};
use crate::config::Config;
use futures::StreamExt;
use shared::protocol::{CancelNotice, Heartbeat, HeartbeatReply};
use shared::subjects;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub async fn run(config: Arc<Config>, nats: async_nats::Client, active: Active, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(config.heartbeat_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => beat(&config, &nats, &active).await,
        }
    }
}

async fn beat(config: &Config, nats: &async_nats::Client, active: &Active) {
    let hb = Heartbeat {
        runner_id: config.runner_id.clone(),
        version: env!("CARGO_PKG_VERSION").into(),
        pool: config.pool.clone(),
        slots: config.concurrency,
        running: active.snapshot(),
    };
    let Ok(payload) = serde_json::to_vec(&hb) else { return };
    let request = async_nats::Request::new().payload(payload.into()).timeout(Some(Duration::from_secs(5)));
    let reply = match nats.send_request(subjects::HEARTBEAT, request).await {
        Ok(msg) => msg,
        Err(e) => {
            tracing::warn!(error = %e, "heartbeat not answered");
            return;
        }
    };
    match serde_json::from_slice::<HeartbeatReply>(&reply.payload) {
        Ok(reply) => {
            for at in &reply.cancel {
                active.stop(at, StopReason::Cancel);
            }
            for at in &reply.stale {
                active.stop(at, StopReason::Stale);
            }
        }
        Err(e) => tracing::warn!(error = %e, "unreadable heartbeat reply"),
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
                    Ok(notice) => active.stop(&notice.attempt, StopReason::Cancel),
                    Err(e) => tracing::warn!(error = %e, "malformed cancel notice"),
                },
                None => return,
            }
        }
    }
}
