//! Heartbeats (lease renewal, cancel and stale notices in the reply) and the
//! runner's cancel subscription: two services acting on the attempts registry.

use crate::attempts::{self, StopReason};
use crate::config::Config;
use crate::fence::{self, Fence};
use crate::link::ControlLink;
use futures::StreamExt;
use shared::protocol::{Heartbeat, HeartbeatReply};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// A provisional reply is sent again at once this many times: with several control
/// plane replicas, another one may still reach the database and renew for real.
const PROVISIONAL_RETRIES: usize = 2;
/// While fenced, held attempts are told to stop again this often (one may have been
/// registered since, e.g. a claim that was already in flight).
const FENCED_RECHECK: Duration = Duration::from_secs(1);

/// Sends a heartbeat every `HEARTBEAT_INTERVAL_SECONDS`, moves the fence with each
/// renewal, and stops every attempt (self-fencing) once the fence passes (see `fence`).
pub struct Heartbeats {
    config: Arc<Config>,
    link: Arc<dyn ControlLink>,
    attempts: attempts::Handle,
    fence: Fence,
}

/// What one heartbeat achieved.
#[derive(Debug)]
pub enum Beat {
    /// The leases were renewed (or provisionally kept) and the fence moved.
    Renewed,
    /// No answer, or the answer did not renew anything.
    Unanswered,
}

impl Heartbeats {
    pub fn new(config: Arc<Config>, link: Arc<dyn ControlLink>, attempts: attempts::Handle, fence: Fence) -> Self {
        Self { config, link, attempts, fence }
    }

    pub async fn run(self, cancel: CancellationToken) {
        // Two loops in one task, polled side by side: a heartbeat waiting for its reply
        // (up to 5 s) must never delay the fence.
        let beats = async {
            let mut tick = tokio::time::interval(self.config.heartbeat_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = self.beat(false).await {
                    // The control plane's lease changed under a running runner.
                    tracing::error!(error = %e, "unsafe fence settings for the control plane's lease; not renewing");
                }
            }
        };
        let fence = async {
            loop {
                let check_at = match self.fence.deadline() {
                    Some(deadline) if deadline > Instant::now() => deadline,
                    _ => Instant::now() + FENCED_RECHECK,
                };
                tokio::time::sleep_until(check_at).await;
                self.fence_if_due().await;
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => {}
            () = beats => {}
            () = fence => {}
        }
    }

    /// Stops every held attempt if the fence has passed: their leases may go to
    /// another runner, and two copies must never run.
    async fn fence_if_due(&self) {
        if self.fence.is_live() {
            return;
        }
        let held = self.attempts.count().await;
        if held > 0 {
            tracing::error!(held, "leases not renewed in time: stopping all running jobs (self-fencing)");
            self.attempts.stop_all(StopReason::Stale);
        }
    }

    /// One heartbeat, sent again at once (a few times) while answered provisionally.
    /// `starting`: the first one of this process (see [`Heartbeat::starting`]).
    /// `Err`: the runner's fence settings are unsafe for the lease the control plane told.
    pub async fn beat(&self, starting: bool) -> Result<Beat, fence::Error> {
        let hb = Heartbeat {
            runner_id: self.config.runner_id.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            pool: self.config.pool.clone(),
            slots: self.config.concurrency,
            running: self.attempts.snapshot().await,
            starting,
        };
        for _ in 0..=PROVISIONAL_RETRIES {
            let sent = Instant::now();
            let reply = match self.link.heartbeat(&hb).await {
                Ok(reply) => reply,
                Err(e) => {
                    tracing::warn!(error = %e, "heartbeat not answered");
                    return Ok(Beat::Unanswered);
                }
            };
            let lease = reply.lease_ms.map_or(fence::ASSUMED_LEASE, Duration::from_millis);
            if reply.provisional {
                tracing::warn!("control plane cannot reach its database: leases kept provisionally");
                self.fence.provisional(sent, lease)?;
                continue;
            }
            self.apply(&reply);
            self.fence.renewed(sent, lease)?;
            return Ok(Beat::Renewed);
        }
        // Only provisional answers: the fence moved within its grace, if at all.
        Ok(if self.fence.is_live() { Beat::Renewed } else { Beat::Unanswered })
    }

    fn apply(&self, reply: &HeartbeatReply) {
        for notice in &reply.cancel {
            self.attempts.stop(&notice.attempt, StopReason::Cancel { force: notice.force });
        }
        for at in &reply.stale {
            self.attempts.stop(at, StopReason::Stale);
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
