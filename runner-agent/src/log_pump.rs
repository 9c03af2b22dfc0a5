//! Publishes a run's log batches through the control link, waiting for acks
//! (≤ 32 in flight, re-sent under the same first line when an ack fails, which
//! the link de-duplicates), and reads back what an earlier runner process
//! already published (for a restart).

use crate::link::{ControlLink, LogAck};
pub use crate::log_batcher::ResumePoint;
use crate::log_batcher::{Batcher, max_line_for};
use bytes::Bytes;
use futures::StreamExt;
use shared::LogStream;
use shared::protocol::{AttemptRef, LogTotals};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Publishes awaiting their ack before the pump waits for the oldest.
const MAX_IN_FLIGHT: usize = 32;
const PUBLISH_ATTEMPTS: u32 = 30;

#[derive(Debug, thiserror::Error)]
#[error("publishing log lines failed: {0}")]
pub struct Error(String);

struct Pending {
    first_line: u64,
    payload: Bytes,
    ack: LogAck,
}

/// Reads what the link holds now for this attempt (batches of its fencing
/// token only) into a [`ResumePoint`]. Reads every batch rather than only the
/// last one: lines Fast-Flow wrote itself (image pull progress, a timeout
/// notice) are numbered too but are not in the container's output, so the
/// number of output records per stream is what re-read output must skip.
pub async fn resume_point(link: &dyn ControlLink, at: &AttemptRef) -> Result<ResumePoint, Error> {
    let err = |e: &dyn std::fmt::Display| Error(format!("reading the published log: {e}"));
    let mut batches = link.published_log(at).await.map_err(|e| err(&e))?;
    let mut point = ResumePoint::default();
    while let Some(batch) = batches.next().await {
        let (first, payload) = batch.map_err(|e| err(&e))?;
        point.absorb(first, &payload).map_err(|e| err(&e))?;
    }
    Ok(point)
}

pub struct LogPump {
    link: Arc<dyn ControlLink>,
    at: AttemptRef,
    batcher: Batcher,
    in_flight: VecDeque<Pending>,
}

impl LogPump {
    /// Records stay below the link's payload limit.
    pub fn new(link: Arc<dyn ControlLink>, at: &AttemptRef, limit: Option<u64>) -> LogPump {
        LogPump::resume(link, at, limit, ResumePoint::default())
    }

    /// A pump that continues an attempt's log after `point` (see [`Batcher::resume`]).
    pub fn resume(link: Arc<dyn ControlLink>, at: &AttemptRef, limit: Option<u64>, point: ResumePoint) -> LogPump {
        let max_payload = link.max_log_payload();
        LogPump {
            link,
            at: at.clone(),
            batcher: Batcher::resume(max_line_for(max_payload), limit, point),
            in_flight: VecDeque::new(),
        }
    }

    /// Adds output of one stream; complete lines become records.
    pub fn feed(&mut self, stream: LogStream, data: &[u8]) {
        self.batcher.feed(stream, data);
    }

    /// A line of Fast-Flow's own (pull progress, setup errors).
    pub fn system_line(&mut self, text: &str) {
        self.batcher.system_line(text);
    }

    /// When the open batch must be sent even if it is not full.
    pub fn deadline(&self) -> Option<Instant> {
        self.batcher.deadline()
    }

    /// Output records a resumed pump expected to skip but never saw.
    pub fn unmatched_skip(&self) -> u64 {
        self.batcher.unmatched_skip()
    }

    /// Sends sealed batches, and the open one if its window has passed.
    pub async fn publish(&mut self) -> Result<(), Error> {
        while let Some((first_line, payload)) = self.batcher.next_ready() {
            let ack = self.send(first_line, payload.clone()).await?;
            self.in_flight.push_back(Pending { first_line, payload, ack });
            while self.in_flight.len() > MAX_IN_FLIGHT {
                self.settle_oldest().await?;
            }
        }
        Ok(())
    }

    /// Sends everything, including unfinished lines, and waits for every ack.
    pub async fn finish(mut self) -> Result<LogTotals, Error> {
        let totals = self.batcher.finish();
        self.publish().await?;
        while !self.in_flight.is_empty() {
            self.settle_oldest().await?;
        }
        Ok(totals)
    }

    /// Owns what it needs, so `&self` (not `Sync`: it holds ack futures) is not kept across the await.
    fn send(&self, first_line: u64, payload: Bytes) -> impl Future<Output = Result<LogAck, Error>> + Send + 'static {
        let (link, at) = (self.link.clone(), self.at.clone());
        async move { link.publish_log(&at, first_line, payload).await.map_err(|e| Error(e.to_string())) }
    }

    /// Waits for the oldest ack; re-publishes (de-duplicated by message id) on failure.
    async fn settle_oldest(&mut self) -> Result<(), Error> {
        let Some(pending) = self.in_flight.pop_front() else { return Ok(()) };
        if pending.ack.await.is_ok() {
            return Ok(());
        }
        let mut delay = Duration::from_millis(100);
        for attempt in 1..=PUBLISH_ATTEMPTS {
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
            match self.send(pending.first_line, pending.payload.clone()).await {
                Ok(ack) => match ack.await {
                    Ok(_) => return Ok(()),
                    Err(e) => tracing::warn!(attempt, error = %e, "log batch not acknowledged; retrying"),
                },
                Err(e) => tracing::warn!(attempt, error = %e, "log batch not sent; retrying"),
            }
        }
        Err(Error(format!("batch starting at line {} was never acknowledged", pending.first_line)))
    }
}
