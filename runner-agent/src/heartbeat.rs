//! Heartbeats (lease renewal, cancel and stale notices in the reply) and the
//! runner's cancel subscription: two services acting on the attempts registry.

use crate::attempts::{self, StopReason};
use crate::config::Config;
use crate::link::ControlLink;
use futures::StreamExt;
use shared::protocol::Heartbeat;
use std::sync::Arc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Sends a heartbeat every `HEARTBEAT_INTERVAL_SECONDS` and stops every attempt
/// (self-fencing) when none was answered for `RUNNER_SELF_FENCE_SECONDS`.
pub struct Heartbeats {
    config: Arc<Config>,
    link: Arc<dyn ControlLink>,
    attempts: attempts::Handle,
}

impl Heartbeats {
    pub fn new(config: Arc<Config>, link: Arc<dyn ControlLink>, attempts: attempts::Handle) -> Self {
        Self { config, link, attempts }
    }

    pub async fn run(self, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(self.config.heartbeat_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_renewal = Instant::now();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {
                    if self.beat(false).await {
                        last_renewal = Instant::now();
                    } else if last_renewal.elapsed() > self.config.self_fence_after && self.attempts.count().await > 0 {
                        // Our leases are about to expire and another runner may get the
                        // attempts: stop them here so two copies never run.
                        tracing::error!(silent_for = ?last_renewal.elapsed(), "leases not renewed; stopping all running jobs");
                        self.attempts.stop_all(StopReason::Stale);
                    }
                }
            }
        }
    }

    /// One heartbeat; `true` when the control plane answered (leases renewed).
    /// `starting`: the first one of this process (see [`Heartbeat::starting`]).
    pub async fn beat(&self, starting: bool) -> bool {
        let hb = Heartbeat {
            runner_id: self.config.runner_id.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            pool: self.config.pool.clone(),
            slots: self.config.concurrency,
            running: self.attempts.snapshot().await,
            starting,
        };
        match self.link.heartbeat(&hb).await {
            Ok(reply) => {
                for notice in &reply.cancel {
                    self.attempts.stop(&notice.attempt, StopReason::Cancel { force: notice.force });
                }
                for at in &reply.stale {
                    self.attempts.stop(at, StopReason::Stale);
                }
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "heartbeat not answered");
                false
            }
        }
    }
}

/// Immediate cancel notices from the control plane (heartbeats repeat them).
pub struct CancelListener {
    runner_id: String,
    link: Arc<dyn ControlLink>,
    attempts: attempts::Handle,
}

impl CancelListener {
    pub fn new(runner_id: String, link: Arc<dyn ControlLink>, attempts: attempts::Handle) -> Self {
        Self { runner_id, link, attempts }
    }

    pub async fn run(self, cancel: CancellationToken) {
        let mut notices = match self.link.cancel_notices(&self.runner_id).await {
            Ok(notices) => notices,
            Err(e) => {
                tracing::error!(error = %e, "cannot subscribe to cancel notices; relying on heartbeats");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                notice = notices.next() => match notice {
                    Some(notice) => self.attempts.stop(&notice.attempt, StopReason::Cancel { force: notice.force }),
                    None => return,
                }
            }
        }
    }
}
