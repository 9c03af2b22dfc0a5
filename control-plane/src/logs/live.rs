//! Reading an attempt's live log from JetStream.

use super::LogLine;
use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use shared::log_batch::{self, FENCING_TOKEN_HEADER, FIRST_LINE_HEADER};
use shared::subjects;
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("NATS: {0}")]
    Nats(#[from] async_nats::Error),
    #[error("corrupt log batch: {0}")]
    Corrupt(String),
}

fn nats<E: Into<async_nats::Error>>(e: E) -> Error {
    Error::Nats(e.into())
}

/// Decodes a batch into numbered lines. Batches written under another fencing
/// token (a runner that lost the attempt) are ignored: `Ok(vec![])`.
pub fn decode_batch(headers: Option<&HeaderMap>, payload: &Bytes, token: i64) -> Result<Vec<LogLine>, Error> {
    let header = |name: &str| headers.and_then(|h| h.get(name)).map(|v| v.as_str().to_owned());
    let Some(first) = header(FIRST_LINE_HEADER).and_then(|v| v.parse::<u64>().ok()) else {
        return Err(Error::Corrupt(format!("missing {FIRST_LINE_HEADER} header")));
    };
    if header(FENCING_TOKEN_HEADER).and_then(|v| v.parse::<i64>().ok()) != Some(token) {
        return Ok(Vec::new());
    }
    let mut lines = Vec::new();
    for (i, record) in log_batch::records(payload).enumerate() {
        let record = record.map_err(|e| Error::Corrupt(e.to_string()))?;
        lines.push(LogLine {
            number: first + i as u64,
            stream: record.stream,
            ts_ms: record.ts_ms,
            bytes: payload.slice_ref(record.bytes),
        });
    }
    Ok(lines)
}

/// Reads what the stream holds now for one attempt, batch by batch, in order,
/// without duplicates (a re-published batch is skipped by line number).
pub struct SnapshotReader {
    stream: stream::Stream,
    subject: String,
    token: i64,
    next_seq: u64,
    next_line: u64,
}

impl SnapshotReader {
    pub async fn open(js: &jetstream::Context, run_id: Uuid, attempt: i32, token: i64) -> Result<Self, Error> {
        let stream = js.get_stream(subjects::LOGS_STREAM).await.map_err(nats)?;
        Ok(SnapshotReader { stream, subject: subjects::log_subject(run_id, attempt), token, next_seq: 1, next_line: 1 })
    }

    /// The next lines, or `None` once everything stored so far was read.
    pub async fn next_lines(&mut self) -> Result<Option<Vec<LogLine>>, Error> {
        use stream::LastRawMessageErrorKind;
        loop {
            let msg = self
                .stream
                .raw_message_builder()
                .sequence(self.next_seq)
                .next_by_subject(self.subject.clone())
                .send()
                .await;
            let msg = match msg {
                Ok(msg) => msg,
                Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => return Ok(None),
                Err(e) => return Err(nats(e)),
            };
            self.next_seq = msg.sequence + 1;
            let lines = self.fresh(decode_batch(Some(&msg.headers), &msg.payload, self.token)?);
            if !lines.is_empty() {
                return Ok(Some(lines));
            }
        }
    }

    fn fresh(&mut self, mut lines: Vec<LogLine>) -> Vec<LogLine> {
        lines.retain(|l| l.number >= self.next_line);
        if let Some(last) = lines.last() {
            self.next_line = last.number + 1;
        }
        lines
    }

    /// Number of the next line this reader expects (1 + lines read).
    pub fn next_line(&self) -> u64 {
        self.next_line
    }
}

/// Follows an attempt's log as it grows: an ordered consumer from the start of
/// the subject (ephemeral: the server drops it when the reader goes away).
pub async fn follow(js: &jetstream::Context, run_id: Uuid, attempt: i32) -> Result<consumer::pull::Ordered, Error> {
    let stream = js.get_stream(subjects::LOGS_STREAM).await.map_err(nats)?;
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: subjects::log_subject(run_id, attempt),
            deliver_policy: consumer::DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .map_err(nats)?;
    consumer.messages().await.map_err(nats)
}
