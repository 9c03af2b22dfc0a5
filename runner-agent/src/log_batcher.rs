//! Everything about a run's log but the publishing: output split into numbered,
//! byte-exact lines, the size limit, the resume skip after a runner restart, and
//! records packed into batches (≤ 64 KiB or 10 ms). Pure, so testable without NATS.
//!
//! Lines keep their exact bytes (with the `\n`); a line longer than the record
//! limit is cut into several records, so the concatenation of all records is
//! byte-exact and memory stays bounded whatever the container prints.

use bytes::Bytes;
use shared::LogStream;
use shared::log_batch;
use shared::protocol::LogTotals;
use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::Instant;

const BATCH_BYTES: usize = 64 * 1024;
// Short: a line reaches SSE clients within ~10 ms; busy jobs still fill 64 KiB batches.
const BATCH_WINDOW: Duration = Duration::from_millis(10);
/// Longest record: lines longer than this are split.
pub const MAX_LINE_BYTES: usize = 1024 * 1024;

/// First words of the system line that marks the log size limit; a resumed
/// pump looks for it to know that further output is only counted.
const LIMIT_REACHED_LINE: &str = "fastflow: log limit reached; further output is dropped (the job keeps running)";
/// Start of the last line of a log that reached its limit (how much was dropped).
const DROPPED_MARKER_START: &str = "fastflow: log limit of ";

/// What an earlier incarnation of this runner already published for an
/// attempt, rebuilt from the live log subject (see [`resume_point`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResumePoint {
    /// Highest line number published (0: none).
    pub lines: u64,
    /// Bytes of those lines (all streams, system lines included).
    pub bytes: u64,
    /// Records of container output among them, per stream: `[stdout, stderr]`.
    /// Re-read output skips this many records of each stream.
    pub output_records: [u64; 2],
    /// The log size limit was reached: further output is dropped and counted.
    pub limit_reached: bool,
    /// The final "… were dropped" line went out already: the log is complete.
    pub dropped_marker: bool,
}

impl ResumePoint {
    /// Takes one published batch into account. Like the control plane, it
    /// skips lines it has already seen (a re-published batch) and ignores
    /// batches of other fencing tokens (the caller filters those).
    pub fn absorb(&mut self, first_line: u64, payload: &[u8]) -> Result<(), shared::log_batch::Error> {
        for (i, record) in log_batch::records(payload).enumerate() {
            let record = record?;
            let number = first_line + i as u64;
            if number <= self.lines {
                continue;
            }
            self.lines = number;
            self.bytes += record.bytes.len() as u64;
            match record.stream {
                LogStream::Stdout => self.output_records[0] += 1,
                LogStream::Stderr => self.output_records[1] += 1,
                LogStream::System => {
                    if record.bytes.starts_with(LIMIT_REACHED_LINE.as_bytes()) {
                        self.limit_reached = true;
                    } else if record.bytes.starts_with(DROPPED_MARKER_START.as_bytes()) {
                        self.dropped_marker = true;
                    }
                }
            }
        }
        Ok(())
    }
}

/// Numbers output lines, applies the size limit and the resume skip, and packs
/// records into batches: everything about the log but the publishing (and so
/// testable without NATS).
pub struct Batcher {
    splitter: LineSplitter,
    batch: Vec<u8>,
    batch_first_line: u64,
    batch_opened: Option<Instant>,
    ready: VecDeque<(u64, Bytes)>,
    next_line: u64,
    totals: LogTotals,
    /// Container output past this is dropped and counted.
    limit: Option<u64>,
    limit_reached: bool,
    dropped: LogTotals,
    /// The final drop marker was published before a restart: do not repeat it.
    dropped_marker_sent: bool,
    /// Output records still to skip per stream (`[stdout, stderr]`): published
    /// before the runner restarted, already counted in `totals`.
    skip: [u64; 2],
}

impl Batcher {
    pub fn new(max_line: usize, limit: Option<u64>) -> Batcher {
        Batcher::resume(max_line, limit, ResumePoint::default())
    }

    /// Continues after what an earlier incarnation published: numbering goes on
    /// after `point.lines`, and the container's output, re-read from its start,
    /// skips the records already published (they stay in the totals).
    ///
    /// The skip is counted per stream because Docker's log (json-file) may order
    /// interleaved stdout and stderr lines differently than attach delivered
    /// them; within one stream the order is the same. So every line is published
    /// exactly once, but new lines of the two streams may interleave in an order
    /// slightly different from the container's.
    pub fn resume(max_line: usize, limit: Option<u64>, point: ResumePoint) -> Batcher {
        Batcher {
            splitter: LineSplitter::new(max_line),
            batch: Vec::with_capacity(BATCH_BYTES),
            batch_first_line: point.lines + 1,
            batch_opened: None,
            ready: VecDeque::new(),
            next_line: point.lines + 1,
            totals: LogTotals { lines: point.lines, bytes: point.bytes },
            limit,
            limit_reached: point.limit_reached,
            dropped: LogTotals::default(),
            dropped_marker_sent: point.dropped_marker,
            skip: point.output_records,
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

    /// Container output: skipped if already published, kept until the size
    /// limit, then only counted.
    fn push_output(&mut self, stream: LogStream, bytes: &[u8]) {
        let slot = usize::from(stream == LogStream::Stderr);
        if self.skip[slot] > 0 {
            self.skip[slot] -= 1;
            return;
        }
        if self.limit_reached || self.limit.is_some_and(|limit| self.totals.bytes + bytes.len() as u64 > limit) {
            if !self.limit_reached {
                self.limit_reached = true;
                self.system_line(LIMIT_REACHED_LINE);
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

    /// The next batch to send (`(first line, payload)`), sealing the open one
    /// first if its window has passed.
    pub fn next_ready(&mut self) -> Option<(u64, Bytes)> {
        if self.ready.is_empty() && self.deadline().is_some_and(|d| d <= Instant::now()) {
            self.seal_batch();
        }
        self.ready.pop_front()
    }

    /// Emits unfinished lines and the drop marker, and seals the last batch.
    /// Returns the totals of the attempt's whole log.
    pub fn finish(&mut self) -> LogTotals {
        let mut splitter = std::mem::take(&mut self.splitter);
        splitter.finish(|stream, rest| self.push_output(stream, rest));
        if self.dropped.lines > 0 && !self.dropped_marker_sent {
            let limit_mib = self.limit.unwrap_or_default() as f64 / (1024.0 * 1024.0);
            let marker = format!(
                "{DROPPED_MARKER_START}{limit_mib} MiB reached; {} bytes in {} lines were dropped",
                self.dropped.bytes, self.dropped.lines
            );
            self.system_line(&marker);
        }
        self.seal_batch();
        self.totals
    }

    /// Output records that were expected (already published) but not seen
    /// again; non-zero means the re-read output was shorter than what was
    /// published before.
    pub fn unmatched_skip(&self) -> u64 {
        self.skip[0] + self.skip[1]
    }
}

/// Longest record for a server whose message size limit is `max_payload`.
pub(crate) fn max_line_for(max_payload: usize) -> usize {
    MAX_LINE_BYTES.min(max_payload.saturating_sub(4096)).max(1024)
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

    type Record = (u64, LogStream, Vec<u8>);

    /// Drains a finished batcher: its batches as `(first line, payload)` and decoded records.
    fn drain(batcher: &mut Batcher) -> (Vec<(u64, Bytes)>, Vec<Record>) {
        let mut batches = Vec::new();
        let mut records = Vec::new();
        while let Some((first, payload)) = batcher.next_ready() {
            for (i, r) in log_batch::records(&payload).enumerate() {
                let r = r.expect("well-formed batch");
                records.push((first + i as u64, r.stream, r.bytes.to_vec()));
            }
            batches.push((first, payload));
        }
        (batches, records)
    }

    fn batch_of(records: &[Record]) -> Vec<u8> {
        let mut buf = Vec::new();
        for (_, stream, bytes) in records {
            log_batch::push_record(&mut buf, *stream, 0, bytes);
        }
        buf
    }

    /// Container output as `(stream, chunk)`, stdout and stderr interleaved, some lines
    /// longer than the 64-byte record limit used below, the last one unfinished.
    fn output() -> Vec<(LogStream, Vec<u8>)> {
        let mut out = Vec::new();
        for i in 1..=40 {
            let stream = if i % 7 == 0 { LogStream::Stderr } else { LogStream::Stdout };
            let line = if i % 9 == 0 { format!("long {i} {}\n", "x".repeat(150)) } else { format!("line {i}\n") };
            out.push((stream, line.into_bytes()));
        }
        out.push((LogStream::Stdout, b"no newline".to_vec()));
        out
    }

    /// The whole log as the first runner process would have published it: pull
    /// progress (system lines that are not container output), then the output.
    fn original(limit: Option<u64>) -> (Vec<Record>, LogTotals) {
        let mut batcher = Batcher::new(64, limit);
        batcher.system_line("busybox: Pulling fs layer");
        batcher.system_line("busybox: Pull complete");
        for (stream, chunk) in output() {
            batcher.feed(stream, &chunk);
        }
        let totals = batcher.finish();
        (drain(&mut batcher).1, totals)
    }

    /// Re-reads the whole output (in other chunk sizes) after the first `published`
    /// records went out; published ∪ resumed must be the original log, once each.
    fn resume_after(limit: Option<u64>, published: usize, chunk: usize) -> (Vec<Record>, LogTotals) {
        let (full, _) = original(limit);
        let (sent, _) = full.split_at(published);
        let mut point = ResumePoint::default();
        // In two batches, plus a re-sent copy of the first (skipped by line number).
        let half = sent.len() / 2;
        for part in [&sent[..half], &sent[half..], &sent[..half]] {
            if let Some((first, _, _)) = part.first() {
                point.absorb(*first, &batch_of(part)).expect("absorb");
            }
        }
        assert_eq!(point.lines, published as u64);
        let mut batcher = Batcher::resume(64, limit, point);
        for (stream, data) in output() {
            for piece in data.chunks(chunk) {
                batcher.feed(stream, piece);
            }
        }
        let totals = batcher.finish();
        let (batches, resumed) = drain(&mut batcher);
        if let Some((first, _)) = batches.first() {
            assert_eq!(*first, published as u64 + 1, "numbering goes on after the published lines");
        }
        assert_eq!(batcher.unmatched_skip(), 0);
        let mut all = sent.to_vec();
        all.extend(resumed);
        (all, totals)
    }

    #[test]
    fn a_resumed_log_has_every_line_once_whatever_was_published() {
        for limit in [None, Some(300)] {
            let (full, totals) = original(limit);
            if limit.is_some() {
                let text: Vec<u8> = full.iter().flat_map(|r| r.2.clone()).collect();
                assert!(String::from_utf8_lossy(&text).contains("were dropped"), "the limit is reached");
            }
            // From 2: the pull lines went out before the container even started.
            for published in 2..=full.len() {
                for chunk in [1, 5, 1000] {
                    let (resumed, resumed_totals) = resume_after(limit, published, chunk);
                    assert_eq!(resumed, full, "limit {limit:?}, {published} published, chunks of {chunk}");
                    assert_eq!(resumed_totals, totals, "limit {limit:?}, {published} published");
                }
            }
        }
    }

    #[test]
    fn resume_skips_per_stream_when_the_engine_reorders_streams() {
        // Attach delivered stderr line A before stdout line 1; the engine's log gives
        // stdout first. Published: "A" (stderr) only.
        let mut point = ResumePoint::default();
        point.absorb(1, &batch_of(&[(1, LogStream::Stderr, b"A\n".to_vec())])).expect("absorb");
        assert_eq!(point.output_records, [0, 1]);
        let mut batcher = Batcher::resume(64, None, point);
        batcher.feed(LogStream::Stdout, b"1\n2\n");
        batcher.feed(LogStream::Stderr, b"A\nB\n");
        batcher.feed(LogStream::Stdout, b"3\n");
        let totals = batcher.finish();
        let (_, records) = drain(&mut batcher);
        let lines: Vec<(u64, &[u8])> = records.iter().map(|(n, _, b)| (*n, b.as_slice())).collect();
        assert_eq!(lines, [(2, &b"1\n"[..]), (3, b"2\n"), (4, b"B\n"), (5, b"3\n")]);
        assert_eq!(totals, LogTotals { lines: 5, bytes: 10 });
    }

    #[test]
    fn resume_point_ignores_re_sent_lines_and_sees_the_limit() {
        let mut point = ResumePoint::default();
        let first = [(1, LogStream::System, b"pull\n".to_vec()), (2, LogStream::Stdout, b"a\n".to_vec())];
        point.absorb(1, &batch_of(&first)).expect("absorb");
        let second = [
            (2, LogStream::Stdout, b"a\n".to_vec()),
            (3, LogStream::System, format!("{LIMIT_REACHED_LINE}\n").into_bytes()),
        ];
        point.absorb(2, &batch_of(&second)).expect("absorb");
        assert_eq!(point.lines, 3);
        assert_eq!(point.output_records, [1, 0]);
        assert_eq!(point.bytes, 5 + 2 + LIMIT_REACHED_LINE.len() as u64 + 1);
        assert!(point.limit_reached);
        // After the limit, output is only counted, and the marker is not repeated.
        let mut batcher = Batcher::resume(64, Some(1), point);
        batcher.feed(LogStream::Stdout, b"a\nb\nc\n");
        let totals = batcher.finish();
        let (_, records) = drain(&mut batcher);
        assert_eq!(records.len(), 1, "{records:?}");
        assert!(String::from_utf8_lossy(&records[0].2).contains("4 bytes in 2 lines were dropped"));
        assert_eq!(totals.lines, 4);
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
