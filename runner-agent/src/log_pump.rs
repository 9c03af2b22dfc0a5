//! Turns a container's output into numbered lines and publishes them to
//! JetStream in batches (≤ 64 KiB or 100 ms), waiting for publish acks.
//!
//! Lines keep their exact bytes (with the `\n`); a line longer than the record
//! limit is cut into several records, so the concatenation of all records is
//! byte-exact and memory stays bounded whatever the container prints.

use async_nats::jetstream::{self, context::PublishAckFuture};
use bytes::Bytes;
use shared::log_batch::{self, FENCING_TOKEN_HEADER, FIRST_LINE_HEADER};
use shared::protocol::{AttemptRef, LogTotals};
use shared::{LogStream, subjects};
use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::Instant;

const BATCH_BYTES: usize = 64 * 1024;
const BATCH_WINDOW: Duration = Duration::from_millis(100);
/// Longest record: lines longer than this are split.
pub const MAX_LINE_BYTES: usize = 1024 * 1024;
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

pub struct LogPump {
    js: jetstream::Context,
    subject: String,
    msg_id_prefix: String,
    token: String,
    splitter: LineSplitter,
    batch: Vec<u8>,
    batch_first_line: u64,
    batch_opened: Option<Instant>,
    ready: VecDeque<(u64, Bytes)>,
    in_flight: VecDeque<Pending>,
    next_line: u64,
    totals: LogTotals,
    /// Container output past this is dropped and counted.
    limit: Option<u64>,
    dropped: LogTotals,
}

impl LogPump {
    /// `max_payload` is the server's message size limit; records stay below it.
    pub fn new(js: jetstream::Context, at: &AttemptRef, max_payload: usize, limit: Option<u64>) -> LogPump {
        LogPump {
            js,
            subject: subjects::log_subject(at.run_id, at.attempt),
            msg_id_prefix: format!("{}:{}:", at.run_id, at.attempt),
            token: at.fencing_token.to_string(),
            splitter: LineSplitter::new(MAX_LINE_BYTES.min(max_payload.saturating_sub(4096)).max(1024)),
            batch: Vec::with_capacity(BATCH_BYTES),
            batch_first_line: 1,
            batch_opened: None,
            ready: VecDeque::new(),
            in_flight: VecDeque::new(),
            next_line: 1,
            totals: LogTotals::default(),
            limit,
            dropped: LogTotals::default(),
        }
    }

    /// Adds output of one stream; complete lines become records.
    pub fn feed(&mut self, stream: LogStream, data: &[u8]) {
        let mut splitter = std::mem::take(&mut self.splitter);
        splitter.feed(stream, data, |stream, line| self.push_output(stream, line));
        self.splitter = splitter;
    }

    /// A line of Fast-Flow's own (pull progress, setup errors).
    pub fn system_line(&mut self, text: &str) {
        let mut line = text.trim_end().as_bytes().to_vec();
        line.push(b'\n');
        self.push_record(LogStream::System, &line);
    }

    /// Container output: kept until the size limit, then only counted.
    fn push_output(&mut self, stream: LogStream, bytes: &[u8]) {
        if self.limit.is_some_and(|limit| self.totals.bytes + bytes.len() as u64 > limit) || self.dropped.lines > 0 {
            if self.dropped.lines == 0 {
                self.system_line("fastflow: log limit reached; further output is dropped (the job keeps running)");
            }
            self.dropped.lines += 1;
            self.dropped.bytes += bytes.len() as u64;
            return;
        }
        self.push_record(stream, bytes);
    }

    fn push_record(&mut self, stream: LogStream, bytes: &[u8]) {
        if !self.batch.is_empty() && self.batch.len() + log_batch::record_size(bytes.len()) > BATCH_BYTES {
            self.seal_batch();
        }
        if self.batch.is_empty() {
            self.batch_first_line = self.next_line;
            self.batch_opened = Some(Instant::now());
        }
        let ts_ms = chrono::Utc::now().timestamp_millis();
        log_batch::push_record(&mut self.batch, stream, ts_ms, bytes);
        self.next_line += 1;
        self.totals.lines += 1;
        self.totals.bytes += bytes.len() as u64;
    }

    fn seal_batch(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let payload = Bytes::from(std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH_BYTES)));
        self.ready.push_back((self.batch_first_line, payload));
        self.batch_opened = None;
    }

    /// When the open batch must be sent even if it is not full.
    pub fn deadline(&self) -> Option<Instant> {
        self.batch_opened.map(|t| t + BATCH_WINDOW)
    }

    /// Sends sealed batches, and the open one if its window has passed.
    pub async fn publish(&mut self) -> Result<(), Error> {
        if self.deadline().is_some_and(|d| d <= Instant::now()) {
            self.seal_batch();
        }
        while let Some((first_line, payload)) = self.ready.pop_front() {
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
        let mut splitter = std::mem::take(&mut self.splitter);
        splitter.finish(|stream, rest| self.push_output(stream, rest));
        if self.dropped.lines > 0 {
            let limit_mib = self.limit.unwrap_or_default() as f64 / (1024.0 * 1024.0);
            let marker = format!(
                "fastflow: log limit of {limit_mib} MiB reached; {} bytes in {} lines were dropped",
                self.dropped.bytes, self.dropped.lines
            );
            self.system_line(&marker);
        }
        self.seal_batch();
        self.publish().await?;
        while !self.in_flight.is_empty() {
            self.settle_oldest().await?;
        }
        Ok(self.totals)
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

/// Splits a stream of output chunks into lines, per output stream, keeping
/// every byte. A line reaching `max_line` bytes without a newline is cut there.
#[derive(Default)]
pub struct LineSplitter {
    max_line: usize,
    /// Unfinished line per stream (stdout, stderr).
    partial: [Vec<u8>; 2],
}

impl LineSplitter {
    pub fn new(max_line: usize) -> LineSplitter {
        LineSplitter { max_line: max_line.max(1), partial: [Vec::new(), Vec::new()] }
    }

    pub fn feed(&mut self, stream: LogStream, mut data: &[u8], mut emit: impl FnMut(LogStream, &[u8])) {
        let slot = usize::from(stream == LogStream::Stderr);
        while !data.is_empty() {
            let room = self.max_line - self.partial[slot].len();
            let window = &data[..data.len().min(room)];
            let (taken, complete) = match window.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (window.len(), window.len() == room),
            };
            if !complete {
                self.partial[slot].extend_from_slice(window);
            } else if self.partial[slot].is_empty() {
                emit(stream, &window[..taken]);
            } else {
                self.partial[slot].extend_from_slice(&window[..taken]);
                emit(stream, &self.partial[slot]);
                self.partial[slot].clear();
            }
            data = &data[taken..];
        }
    }

    /// Emits what is left of unfinished lines (output that did not end in a newline).
    pub fn finish(&mut self, mut emit: impl FnMut(LogStream, &[u8])) {
        for (slot, stream) in [(0, LogStream::Stdout), (1, LogStream::Stderr)] {
            if !self.partial[slot].is_empty() {
                emit(stream, &self.partial[slot]);
                self.partial[slot].clear();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(max_line: usize, chunks: &[(LogStream, &[u8])]) -> Vec<(LogStream, Vec<u8>)> {
        let mut out = Vec::new();
        let mut splitter = LineSplitter::new(max_line);
        for (stream, chunk) in chunks {
            splitter.feed(*stream, chunk, |s, l| out.push((s, l.to_vec())));
        }
        splitter.finish(|s, l| out.push((s, l.to_vec())));
        out
    }

    #[test]
    fn lines_keep_their_bytes_across_chunks_and_streams() {
        use LogStream::{Stderr, Stdout};
        let out =
            split(100, &[(Stdout, b"he"), (Stderr, b"err\npart"), (Stdout, b"llo\nworld\n\n"), (Stdout, b"tail")]);
        let expect: Vec<(LogStream, Vec<u8>)> = vec![
            (Stderr, b"err\n".to_vec()),
            (Stdout, b"hello\n".to_vec()),
            (Stdout, b"world\n".to_vec()),
            (Stdout, b"\n".to_vec()),
            (Stdout, b"tail".to_vec()),
            (Stderr, b"part".to_vec()),
        ];
        assert_eq!(out, expect);
    }

    #[test]
    fn long_lines_are_cut_and_nothing_is_lost() {
        let data: Vec<u8> = (0..2500u32).map(|i| if i % 1000 == 999 { b'\n' } else { b'a' + (i % 26) as u8 }).collect();
        for chunk in [1usize, 7, 64, 300, 5000] {
            let chunks: Vec<(LogStream, &[u8])> = data.chunks(chunk).map(|c| (LogStream::Stdout, c)).collect();
            let out = split(256, &chunks);
            assert!(out.iter().all(|(_, l)| l.len() <= 256), "chunk size {chunk}");
            let joined: Vec<u8> = out.into_iter().flat_map(|(_, l)| l).collect();
            assert_eq!(joined, data, "chunk size {chunk}");
        }
    }
}
