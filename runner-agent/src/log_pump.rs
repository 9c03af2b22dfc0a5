//! Publishes a run's log batches to JetStream, waiting for acks (≤ 32 in
//! flight, re-sent under the same message id when an ack fails), and reads back
//! what an earlier runner process already published (for a restart).

pub use crate::log_batcher::ResumePoint;
use crate::log_batcher::{Batcher, max_line_for};
use async_nats::jetstream::{self, context::PublishAckFuture};
use bytes::Bytes;
use shared::log_batch::{FENCING_TOKEN_HEADER, FIRST_LINE_HEADER};
use shared::protocol::{AttemptRef, LogTotals};
use shared::{LogStream, subjects};
use std::collections::VecDeque;
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
    ack: PublishAckFuture,
}

/// Reads what `logs.<run>.<attempt>` holds now (batches of this attempt's
/// fencing token only) into a [`ResumePoint`]. Reads every batch rather than
/// only the last one: lines Fast-Flow wrote itself (image pull progress, a
/// timeout notice) are numbered too but are not in the container's output, so
/// the number of output records per stream is what re-read output must skip.
pub async fn resume_point(js: &jetstream::Context, at: &AttemptRef) -> Result<ResumePoint, Error> {
    use async_nats::jetstream::{consumer, stream::LastRawMessageErrorKind};
    use futures::StreamExt;
    let err = |e: &dyn std::fmt::Display| Error(format!("reading the published log: {e}"));
    let subject = subjects::log_subject(at.run_id, at.attempt);
    let stream = js.get_stream(subjects::LOGS_STREAM).await.map_err(|e| err(&e))?;
    let last = match stream.get_last_raw_message_by_subject(&subject).await {
        Ok(msg) => msg.sequence,
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => return Ok(ResumePoint::default()),
        Err(e) => return Err(err(&e)),
    };
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: subject,
            deliver_policy: consumer::DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .map_err(|e| err(&e))?;
    let mut messages = consumer.messages().await.map_err(|e| err(&e))?;
    let token = at.fencing_token.to_string();
    let mut point = ResumePoint::default();
    while let Some(msg) = messages.next().await {
        let msg = msg.map_err(|e| err(&e))?;
        let sequence = msg.info().map_err(|e| err(&e))?.stream_sequence;
        let header = |name: &str| msg.headers.as_ref().and_then(|h| h.get(name)).map(|v| v.as_str().to_owned());
        if header(FENCING_TOKEN_HEADER).as_deref() == Some(token.as_str())
            && let Some(first) = header(FIRST_LINE_HEADER).and_then(|v| v.parse::<u64>().ok())
        {
            point.absorb(first, &msg.payload).map_err(|e| err(&e))?;
        }
        if sequence >= last {
            return Ok(point);
        }
    }
    Err(Error("the published log ended before its last message".into()))
}

pub struct LogPump {
    js: jetstream::Context,
    subject: String,
    msg_id_prefix: String,
    token: String,
    batcher: Batcher,
    in_flight: VecDeque<Pending>,
}

impl LogPump {
    /// `max_payload` is the server's message size limit; records stay below it.
    pub fn new(js: jetstream::Context, at: &AttemptRef, max_payload: usize, limit: Option<u64>) -> LogPump {
        LogPump::resume(js, at, max_payload, limit, ResumePoint::default())
    }

    /// A pump that continues an attempt's log after `point` (see [`Batcher::resume`]).
    pub fn resume(
        js: jetstream::Context,
        at: &AttemptRef,
        max_payload: usize,
        limit: Option<u64>,
        point: ResumePoint,
    ) -> LogPump {
        LogPump {
            js,
            subject: subjects::log_subject(at.run_id, at.attempt),
            msg_id_prefix: format!("{}:{}:", at.run_id, at.attempt),
            token: at.fencing_token.to_string(),
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

    async fn send(&self, first_line: u64, payload: Bytes) -> Result<PublishAckFuture, Error> {
        let publish = jetstream::message::PublishMessage::build()
            .payload(payload)
            .message_id(format!("{}{first_line}", self.msg_id_prefix))
            .header(FIRST_LINE_HEADER, first_line.to_string().as_str())
            .header(FENCING_TOKEN_HEADER, self.token.as_str());
        self.js.send_publish(self.subject.clone(), publish).await.map_err(|e| Error(e.to_string()))
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
