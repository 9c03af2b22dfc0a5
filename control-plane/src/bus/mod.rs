//! The bus seam: how offers reach runners, how runners' live log batches reach
//! readers, and the small notices in between (cancel, run finished).
//!
//! Two implementations, chosen at start (DESIGN.md): [`nats::NatsBus`]
//! (JetStream; runners are separate `runner-agent` processes) when `NATS_URL`
//! is set, and [`local::LocalBus`] otherwise: in-process queues and log spool
//! files under `DATA_DIR`, which the embedded runner reaches through its own
//! link (`embedded_runner::link`). Either way the bus only delivers; the store decides.
//!
//! Architecture invariant: the bus imports nothing of the control plane above it
//! (no `runs`, `http`, `context` or start-up), and its public types carry no NATS type.

pub mod local;
pub mod nats;

use bytes::Bytes;
use shared::protocol::{CancelNotice, CodeBundleRef};
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The message broker (NATS) failed; its own error type stays inside `nats.rs`.
    #[error("NATS: {context}: {source}")]
    Broker { context: &'static str, source: Box<dyn std::error::Error + Send + Sync> },
    #[error("log spool {path}: {source}")]
    Spool { path: String, source: std::io::Error },
    #[error("corrupt log spool {path}: {message}")]
    CorruptSpool { path: String, message: String },
}

/// Byte and age limits of the NATS streams (`NATS_*_MAX_*`), applied at start and by
/// every sweep (an existing stream with other limits is updated to these). Offers and
/// live logs refuse a publish past their bytes (`discard: new`): older messages are
/// never dropped to make room, since a live log is the only copy until it is archived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamBounds {
    pub jobs_max_bytes: i64,
    pub jobs_max_age: std::time::Duration,
    pub logs_max_bytes: i64,
    pub logs_max_age: std::time::Duration,
    pub code_max_bytes: i64,
    pub code_max_age: std::time::Duration,
}

impl Default for StreamBounds {
    fn default() -> Self {
        const MIB: i64 = 1024 * 1024;
        const DAY: u64 = 86_400;
        StreamBounds {
            jobs_max_bytes: 256 * MIB,
            jobs_max_age: std::time::Duration::from_secs(DAY),
            logs_max_bytes: 8 * 1024 * MIB,
            logs_max_age: std::time::Duration::from_secs(7 * DAY),
            code_max_bytes: 1024 * MIB,
            code_max_age: std::time::Duration::from_secs(7 * DAY),
        }
    }
}

/// One published log batch as stored: its first line number and the fencing
/// token it was written under (absent on a malformed NATS message).
#[derive(Debug, Clone)]
pub struct RawBatch {
    pub first_line: Option<u64>,
    pub token: Option<i64>,
    pub payload: Bytes,
}

#[derive(Clone)]
pub enum Bus {
    Nats(Box<nats::NatsBus>),
    Local(local::LocalBus),
}

impl Bus {
    pub fn describe(&self) -> String {
        match self {
            Bus::Nats(b) => b.describe(),
            Bus::Local(b) => b.describe(),
        }
    }

    /// Creates what the bus needs if it is missing (a NATS server that lost
    /// its store heals on the next sweep).
    pub async fn ensure_streams(&self) -> Result<(), Error> {
        match self {
            Bus::Nats(b) => b.ensure_streams().await,
            Bus::Local(_) => Ok(()),
        }
    }

    /// Offers an attempt to the runners of a pool. A `nonce` marks a re-offer
    /// (extra offers are harmless: the claim succeeds once).
    pub async fn offer(&self, pool: &str, run_id: Uuid, attempt: i32, nonce: Option<&str>) -> Result<(), Error> {
        match self {
            Bus::Nats(b) => b.offer(pool, run_id, attempt, nonce).await,
            Bus::Local(b) => {
                b.offer(pool, run_id, attempt);
                Ok(())
            }
        }
    }

    /// Whether an offer for this run is still waiting for a runner.
    pub async fn has_offer(&self, pool: &str, run_id: Uuid) -> Result<bool, Error> {
        match self {
            Bus::Nats(b) => b.has_offer(pool, run_id).await,
            Bus::Local(b) => Ok(b.has_offer(pool, run_id)),
        }
    }

    /// Makes sure runners can fetch this bundle; `load` supplies the bytes
    /// (from the store). The local bus serves bundles from the store itself.
    pub async fn ensure_bundle<F, Fut>(&self, code: &CodeBundleRef, load: F) -> Result<bool, Error>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Option<Vec<u8>>>,
    {
        match self {
            Bus::Nats(b) => b.ensure_bundle(code, load).await,
            Bus::Local(_) => Ok(true),
        }
    }

    /// Tells the runner holding an attempt to stop it (best effort; heartbeats repeat it).
    pub async fn notify_cancel(&self, runner_id: &str, notice: &CancelNotice) -> Result<(), Error> {
        match self {
            Bus::Nats(b) => b.notify_cancel(runner_id, notice).await,
            Bus::Local(b) => {
                b.notify_cancel(runner_id, notice);
                Ok(())
            }
        }
    }

    /// Wakes every log stream following this run (best effort; they also poll).
    pub async fn notify_finished(&self, run_id: Uuid) {
        match self {
            Bus::Nats(b) => b.notify_finished(run_id).await,
            Bus::Local(b) => b.notify_finished(run_id),
        }
    }

    /// Run-finished events of one run, subscribed now.
    pub async fn finished_events(&self, run_id: Uuid) -> Result<FinishedEvents, Error> {
        match self {
            Bus::Nats(b) => Ok(FinishedEvents::Nats(b.finished_events(run_id).await?)),
            Bus::Local(b) => Ok(FinishedEvents::Local(b.finished_events(run_id))),
        }
    }

    /// Drops an archived attempt's live log.
    pub async fn purge_log(&self, run_id: Uuid, attempt: i32) -> Result<(), Error> {
        match self {
            Bus::Nats(b) => b.purge_log(run_id, attempt).await,
            Bus::Local(b) => b.purge_log(run_id, attempt).await,
        }
    }

    /// Purges the live logs of these ended attempts where something is left (late
    /// batches of a runner that was cut off); how many were purged.
    pub async fn purge_late_logs(&self, attempts: &[(Uuid, i32)]) -> Result<usize, Error> {
        match self {
            Bus::Nats(b) => b.purge_logs_present(attempts).await,
            Bus::Local(b) => {
                // A spool file's removal is as cheap as a check.
                for &(run_id, attempt) in attempts {
                    b.purge_log(run_id, attempt).await?;
                }
                Ok(0)
            }
        }
    }

    /// Reads an attempt's live log as stored now, batch by batch.
    pub async fn log_cursor(&self, run_id: Uuid, attempt: i32) -> Result<LogCursor, Error> {
        match self {
            Bus::Nats(b) => Ok(LogCursor::Nats(Box::new(b.log_cursor(run_id, attempt).await?))),
            Bus::Local(b) => Ok(LogCursor::Local(b.log_cursor(run_id, attempt).await?)),
        }
    }

    /// Follows an attempt's live log from its start as it grows.
    pub async fn follow_log(&self, run_id: Uuid, attempt: i32) -> Result<LogFollower, Error> {
        match self {
            Bus::Nats(b) => Ok(LogFollower::Nats(Box::new(b.follow_log(run_id, attempt).await?))),
            Bus::Local(b) => Ok(LogFollower::Local(b.follow_log(run_id, attempt).await?)),
        }
    }

    pub async fn health(&self) -> Result<(), Error> {
        match self {
            Bus::Nats(b) => b.health().await,
            Bus::Local(_) => Ok(()),
        }
    }
}

pub enum FinishedEvents {
    Nats(nats::FinishedEvents),
    Local(local::FinishedEvents),
}

impl FinishedEvents {
    /// Resolves when the run finished (or the subscription ended: callers re-check).
    pub async fn next(&mut self) {
        match self {
            FinishedEvents::Nats(events) => events.next().await,
            FinishedEvents::Local(events) => events.next().await,
        }
    }
}

pub enum LogCursor {
    Nats(Box<nats::LogCursor>),
    Local(local::LogCursor),
}

impl LogCursor {
    /// The next stored batch, or `None` once everything stored so far was read.
    pub async fn next_batch(&mut self) -> Result<Option<RawBatch>, Error> {
        match self {
            LogCursor::Nats(c) => c.next_batch().await,
            LogCursor::Local(c) => c.next_batch().await,
        }
    }
}

pub enum LogFollower {
    Nats(Box<nats::LogFollower>),
    Local(local::LogFollower),
}

impl LogFollower {
    /// The next batch, waiting for it; `None` when the log went away (purged).
    pub async fn next(&mut self) -> Option<Result<RawBatch, Error>> {
        match self {
            LogFollower::Nats(f) => f.next().await,
            LogFollower::Local(f) => f.next().await,
        }
    }
}
