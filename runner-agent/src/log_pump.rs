//! Publishes a run's log batches through the control link beside the
//! execution that supervises the container: the execution only seals batches
//! and hands them over; a publisher task sends them and waits for their acks
//! (≤ 32 in flight, a batch whose ack failed re-sent under the same first line,
//! which the link de-duplicates, retried until it is stored). A slow or broken
//! link therefore never delays a cancel, a timeout or the fence: the execution
//! just stops reading output while the publisher is behind (bounded memory; the
//! container blocks on its full output pipe). Also reads back what an earlier
//! runner process already published (for a restart).

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
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::task::AbortOnDropHandle;

/// Publishes awaiting their ack before the publisher waits for the oldest.
const MAX_IN_FLIGHT: usize = 32;
/// Sealed batches handed to the publisher but not sent yet (≤ 64 KiB each).
const HANDED_OVER: usize = 16;
/// The longest pause between two tries of a batch that is not stored.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
#[error("publishing log lines failed: {0}")]
pub struct Error(String);

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
    batcher: Batcher,
    /// Sealed batches the publisher has no room for yet.
    waiting: VecDeque<(u64, Bytes)>,
    to_publisher: mpsc::Sender<(u64, Bytes)>,
    /// Ends once the sender is dropped and every batch is stored; aborted when dropped.
    publisher: AbortOnDropHandle<()>,
}

impl LogPump {
    /// Records stay below the link's payload limit.
    pub fn new(link: Arc<dyn ControlLink>, at: &AttemptRef, limit: Option<u64>) -> LogPump {
        LogPump::resume(link, at, limit, ResumePoint::default())
    }

    /// A pump that continues an attempt's log after `point` (see [`Batcher::resume`]).
    pub fn resume(link: Arc<dyn ControlLink>, at: &AttemptRef, limit: Option<u64>, point: ResumePoint) -> LogPump {
        let max_payload = link.max_log_payload();
        let (to_publisher, batches) = mpsc::channel(HANDED_OVER);
        let publisher = Publisher { link, at: at.clone(), in_flight: VecDeque::new() };
        LogPump {
            batcher: Batcher::resume(max_line_for(max_payload), limit, point),
            waiting: VecDeque::new(),
            to_publisher,
            publisher: AbortOnDropHandle::new(tokio::spawn(publisher.run(batches))),
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

    /// Hands sealed batches (and the open one if its window has passed) to the
    /// publisher as far as it has room; never waits.
    pub fn hand_over(&mut self) {
        while let Some(batch) = self.batcher.next_ready() {
            self.waiting.push_back(batch);
        }
        while let Some(batch) = self.waiting.pop_front() {
            match self.to_publisher.try_send(batch) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(batch) | mpsc::error::TrySendError::Closed(batch)) => {
                    self.waiting.push_front(batch);
                    break;
                }
            }
        }
    }

    /// Whether sealed batches wait for the publisher (stop reading output until not).
    pub fn is_behind(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// Resolves when the publisher has room for one more batch; borrows nothing,
    /// so it can be raced against the pump's other work. Give it to [`Self::take_room`].
    pub fn room(&self) -> impl Future<Output = Option<mpsc::OwnedPermit<(u64, Bytes)>>> + Send + 'static {
        let sender = self.to_publisher.clone();
        async move { sender.reserve_owned().await.ok() }
    }

    /// Hands the oldest waiting batch over through `permit`, then what else fits.
    pub fn take_room(&mut self, permit: Option<mpsc::OwnedPermit<(u64, Bytes)>>) {
        if let (Some(permit), Some(batch)) = (permit, self.waiting.pop_front()) {
            permit.send(batch);
        }
        self.hand_over();
    }

    /// Waits until every sealed batch is handed over (setup steps, where waiting is fine).
    pub async fn catch_up(&mut self) {
        self.hand_over();
        while self.is_behind() {
            let permit = self.room().await;
            if permit.is_none() {
                return;
            }
            self.take_room(permit);
        }
    }

    /// Seals everything, including unfinished lines, and waits until the publisher has
    /// stored every batch (retrying as long as it takes: drop the future to give up).
    pub async fn finish(mut self) -> LogTotals {
        let totals = self.batcher.finish();
        self.catch_up().await;
        let LogPump { to_publisher, publisher, .. } = self;
        drop(to_publisher);
        if let Err(e) = publisher.await {
            tracing::error!(error = %e, "log publisher task failed");
        }
        totals
    }
}

/// Sends the batches handed over, in order, until every one is stored.
struct Publisher {
    link: Arc<dyn ControlLink>,
    at: AttemptRef,
    in_flight: VecDeque<Pending>,
}

struct Pending {
    first_line: u64,
    payload: Bytes,
    ack: LogAck,
}

impl Publisher {
    async fn run(mut self, mut batches: mpsc::Receiver<(u64, Bytes)>) {
        while let Some((first_line, payload)) = batches.recv().await {
            let ack = send_until_sent(&self.link, &self.at, first_line, &payload).await;
            self.in_flight.push_back(Pending { first_line, payload, ack });
            while self.in_flight.len() > MAX_IN_FLIGHT {
                self.settle_oldest().await;
            }
        }
        while !self.in_flight.is_empty() {
            self.settle_oldest().await;
        }
    }

    /// Waits for the oldest ack; re-publishes (de-duplicated by message id) until stored.
    async fn settle_oldest(&mut self) {
        let Some(pending) = self.in_flight.pop_front() else { return };
        let mut ack = pending.ack;
        let mut delay = Duration::from_millis(100);
        let mut tries: u32 = 0;
        loop {
            match ack.await {
                Ok(()) => return,
                Err(e) => {
                    tries += 1;
                    tracing::warn!(first_line = pending.first_line, tries, error = %e, "log batch not acknowledged; retrying");
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(MAX_RETRY_DELAY);
            ack = send_until_sent(&self.link, &self.at, pending.first_line, &pending.payload).await;
        }
    }
}

/// Sends one batch, trying again until the link takes it. (Takes the publisher's parts,
/// not the publisher: it holds ack futures, which are not `Sync`.)
async fn send_until_sent(link: &Arc<dyn ControlLink>, at: &AttemptRef, first_line: u64, payload: &Bytes) -> LogAck {
    let mut delay = Duration::from_millis(100);
    let mut tries: u32 = 0;
    loop {
        match link.publish_log(at, first_line, payload.clone()).await {
            Ok(ack) => return ack,
            Err(e) => {
                tries += 1;
                tracing::warn!(first_line, tries, error = %e, "log batch not sent; retrying");
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(MAX_RETRY_DELAY);
    }
}
