//! A small Server-Sent Events reader, written here (not taken from a crate) so the
//! tests check the wire format the browser's `EventSource` would see.
//!
//! [`SseParser`] is the pure part (bytes in, events out, per the WHATWG
//! "event stream interpretation" rules); [`SseStream`] drives it over a reqwest body.

use std::collections::VecDeque;
use std::pin::Pin;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde::Deserialize;

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// `event:` field, `"message"` when absent.
    pub event: String,
    /// `id:` field of this event, if it carried one.
    pub id: Option<String>,
    /// `data:` lines joined with `\n`.
    pub data: String,
}

/// The `data` of a Fast-Flow `log` event.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogLine {
    pub line: String,
    pub stream: String,
    pub ts: String,
}

impl SseEvent {
    /// The line number of the `id:` (`<line>`, or `<attempt>:<line>` after a
    /// retry); panics when absent or malformed.
    pub fn id_number(&self) -> u64 {
        let id = self.id.as_deref().unwrap_or_else(|| panic!("SSE event has no id: {self:?}"));
        let line = id.rsplit_once(':').map_or(id, |(_, line)| line);
        line.parse().unwrap_or_else(|_| panic!("SSE event id is not a line number: {self:?}"))
    }

    /// The parsed data of a `log` event; panics on anything else.
    pub fn log_line(&self) -> LogLine {
        assert_eq!(self.event, "log", "expected a log event, got {self:?}");
        let line: LogLine = serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("log event data is not {{line, stream, ts}} ({e}): {self:?}"));
        assert!(matches!(line.stream.as_str(), "stdout" | "stderr" | "system"), "unknown log stream in {self:?}");
        assert!(chrono::DateTime::parse_from_rfc3339(&line.ts).is_ok(), "log event ts is not RFC 3339: {self:?}");
        line
    }
}

/// Incremental parser: feed it byte chunks split anywhere.
#[derive(Debug, Default)]
pub struct SseParser {
    buffer: Vec<u8>,
    started: bool,
    event: Option<String>,
    data: Option<String>,
    id: Option<String>,
    /// `:` comment lines seen (keep-alives).
    pub comments: usize,
}

impl SseParser {
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        self.buffer.extend_from_slice(chunk);
        if !self.started {
            const BOM: &[u8] = "\u{feff}".as_bytes();
            if self.buffer.len() < BOM.len() && BOM.starts_with(&self.buffer) {
                return Vec::new();
            }
            if self.buffer.starts_with(BOM) {
                self.buffer.drain(..BOM.len());
            }
            self.started = true;
        }
        let mut events = Vec::new();
        let mut start = 0;
        let mut i = 0;
        while i < self.buffer.len() {
            let end_len = match self.buffer[i] {
                b'\n' => 1,
                // A lone CR ends a line too, but CR LF is one line end: wait for
                // the next byte before deciding.
                b'\r' if i + 1 == self.buffer.len() => break,
                b'\r' if self.buffer[i + 1] == b'\n' => 2,
                b'\r' => 1,
                _ => {
                    i += 1;
                    continue;
                }
            };
            let line = String::from_utf8_lossy(&self.buffer[start..i]).into_owned();
            if let Some(event) = self.process_line(&line) {
                events.push(event);
            }
            i += end_len;
            start = i;
        }
        self.buffer.drain(..start);
        events
    }

    /// End of stream: an event not terminated by a blank line is discarded (as
    /// `EventSource` does), so only a trailing lone CR is processed here.
    pub fn finish(&mut self) -> Vec<SseEvent> {
        if self.buffer.last() == Some(&b'\r') {
            return self.feed(b"\n");
        }
        Vec::new()
    }

    fn process_line(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            return self.dispatch();
        }
        if line.starts_with(':') {
            self.comments += 1;
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = Some(value.to_string()),
            "data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_string()),
            },
            "id" if !value.contains('\0') => self.id = Some(value.to_string()),
            _ => {} // "retry" and unknown fields are ignored.
        }
        None
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        let event = self.event.take();
        let id = self.id.take();
        let data = self.data.take()?;
        Some(SseEvent { event: event.filter(|e| !e.is_empty()).unwrap_or_else(|| "message".to_string()), id, data })
    }
}

type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// A live `text/event-stream` response.
pub struct SseStream {
    body: ByteStream,
    parser: SseParser,
    queue: VecDeque<SseEvent>,
    eof: bool,
    what: String,
}

/// Everything a log stream delivered up to its `end` event.
#[derive(Debug, Clone)]
pub struct SseTranscript {
    /// `(id, line)` of each `log` event, in arrival order.
    pub logs: Vec<(u64, LogLine)>,
    /// The `end` event's data: the final run JSON.
    pub end: serde_json::Value,
    /// The raw `id:` of each `log` event (`<attempt>:<line>` after a retry).
    pub raw_ids: Vec<String>,
    /// The data of each `attempt` event (a retry started).
    pub attempts: Vec<serde_json::Value>,
}

impl SseTranscript {
    /// The text of the stdout/stderr lines (system lines left out).
    pub fn output_lines(&self) -> Vec<&str> {
        self.logs.iter().filter(|(_, l)| l.stream != "system").map(|(_, l)| l.line.as_str()).collect()
    }

    pub fn ids(&self) -> Vec<u64> {
        self.logs.iter().map(|(id, _)| *id).collect()
    }
}

impl SseStream {
    pub(crate) fn new(response: reqwest::Response, what: String) -> Self {
        Self {
            body: Box::pin(response.bytes_stream()),
            parser: SseParser::default(),
            queue: VecDeque::new(),
            eof: false,
            what,
        }
    }

    /// The next event, `None` at end of stream; panics after `timeout` without one.
    pub async fn next_event(&mut self, timeout: Duration) -> Option<SseEvent> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(event) = self.queue.pop_front() {
                return Some(event);
            }
            if self.eof {
                return None;
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(remaining, self.body.next()).await {
                Err(_) => panic!(
                    "no SSE event within {timeout:?} on {} ({} keep-alive comments seen so far)",
                    self.what, self.parser.comments
                ),
                Ok(Some(Ok(chunk))) => self.queue.extend(self.parser.feed(&chunk)),
                Ok(Some(Err(e))) => panic!("reading SSE stream {} failed: {e}", self.what),
                Ok(None) => {
                    self.queue.extend(self.parser.finish());
                    self.eof = true;
                }
            }
        }
    }

    /// Reads `n` `log` events (panics on `end` or end of stream before that).
    pub async fn next_logs(&mut self, n: usize, timeout: Duration) -> Vec<(u64, LogLine)> {
        let deadline = Instant::now() + timeout;
        let mut logs = Vec::with_capacity(n);
        while logs.len() < n {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let event = self
                .next_event(remaining)
                .await
                .unwrap_or_else(|| panic!("{} ended after {} of {n} log events", self.what, logs.len()));
            match event.event.as_str() {
                "log" => logs.push((event.id_number(), event.log_line())),
                other => {
                    panic!("{}: expected {n} log events, got `{other}` after {}: {event:?}", self.what, logs.len())
                }
            }
        }
        logs
    }

    /// Reads until the `end` event; panics if the stream closes without one.
    pub async fn collect_until_end(&mut self, timeout: Duration) -> SseTranscript {
        let deadline = Instant::now() + timeout;
        let mut logs = Vec::new();
        let mut raw_ids = Vec::new();
        let mut attempts = Vec::new();
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let event = self.next_event(remaining).await.unwrap_or_else(|| {
                panic!("{} closed without an `end` event after {} log events", self.what, logs.len())
            });
            match event.event.as_str() {
                "log" => {
                    logs.push((event.id_number(), event.log_line()));
                    raw_ids.push(event.id.clone().unwrap_or_default());
                }
                "attempt" => attempts.push(
                    serde_json::from_str(&event.data)
                        .unwrap_or_else(|e| panic!("`attempt` data is not JSON ({e}): {event:?}")),
                ),
                "end" => {
                    let end = serde_json::from_str(&event.data)
                        .unwrap_or_else(|e| panic!("`end` data is not JSON ({e}): {event:?}"));
                    return SseTranscript { logs, end, raw_ids, attempts };
                }
                other => panic!("{}: unexpected event `{other}`: {event:?}", self.what),
            }
        }
    }

    /// Reads until a `:` comment (keep-alive) arrives; events read meanwhile are
    /// kept for [`Self::next_event`]. Panics after `timeout` or at end of stream.
    pub async fn wait_for_comment(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let before = self.parser.comments;
        while self.parser.comments == before {
            assert!(!self.eof, "{} ended while waiting for a keep-alive comment", self.what);
            let remaining = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(remaining, self.body.next()).await {
                Err(_) => panic!("no keep-alive comment within {timeout:?} on {}", self.what),
                Ok(Some(Ok(chunk))) => self.queue.extend(self.parser.feed(&chunk)),
                Ok(Some(Err(e))) => panic!("reading SSE stream {} failed: {e}", self.what),
                Ok(None) => self.eof = true,
            }
        }
    }

    /// Events received but not yet returned by [`Self::next_event`].
    pub fn buffered_events(&self) -> impl Iterator<Item = &SseEvent> {
        self.queue.iter()
    }

    /// Keep-alive comments seen so far.
    pub fn comments_seen(&self) -> usize {
        self.parser.comments
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_in_chunks(input: &[u8], chunk: usize) -> (Vec<SseEvent>, usize) {
        let mut parser = SseParser::default();
        let mut events = Vec::new();
        for part in input.chunks(chunk) {
            events.extend(parser.feed(part));
        }
        events.extend(parser.finish());
        (events, parser.comments)
    }

    fn event(event: &str, id: Option<&str>, data: &str) -> SseEvent {
        SseEvent { event: event.to_string(), id: id.map(str::to_string), data: data.to_string() }
    }

    #[test]
    fn parses_fastflow_log_and_end_events() {
        let input =
            b"event: log\nid: 1\ndata: {\"line\":\"hi\",\"stream\":\"stdout\",\"ts\":\"2026-01-01T00:00:00Z\"}\n\n\
                      : keep-alive\n\n\
                      event: end\ndata: {\"status\":\"success\"}\n\n";
        for chunk in [1, 2, 7, input.len()] {
            let (events, comments) = parse_in_chunks(input, chunk);
            assert_eq!(comments, 1, "chunk size {chunk}");
            assert_eq!(events.len(), 2, "chunk size {chunk}: {events:?}");
            assert_eq!(events[0].id_number(), 1);
            assert_eq!(events[0].log_line().line, "hi");
            assert_eq!(events[1], event("end", None, "{\"status\":\"success\"}"));
        }
    }

    #[test]
    fn joins_multi_line_data_and_defaults_event_name() {
        let (events, _) = parse_in_chunks(b"data: a\ndata:b\ndata\ndata:  c\n\n", 3);
        assert_eq!(events, vec![event("message", None, "a\nb\n\n c")]);
    }

    #[test]
    fn accepts_crlf_and_lone_cr_line_ends_split_across_chunks() {
        let input = b"event: log\r\nid: 7\r\ndata: x\r\n\r\nevent: end\rdata: y\r\r";
        for chunk in 1..=input.len() {
            let (events, _) = parse_in_chunks(input, chunk);
            assert_eq!(events, vec![event("log", Some("7"), "x"), event("end", None, "y")], "chunk size {chunk}");
        }
    }

    #[test]
    fn ignores_comments_unknown_fields_and_events_without_data() {
        let input = b":hello\nretry: 1000\nfoo: bar\n\nevent: lonely\n\nid: 3\ndata: z\n\n";
        let (events, comments) = parse_in_chunks(input, 4);
        assert_eq!(comments, 1);
        assert_eq!(events, vec![event("message", Some("3"), "z")]);
    }

    #[test]
    fn discards_an_unterminated_event_at_end_of_stream() {
        let (events, _) = parse_in_chunks(b"data: complete\n\ndata: partial\n", 5);
        assert_eq!(events, vec![event("message", None, "complete")]);
    }

    #[test]
    fn strips_a_leading_byte_order_mark_and_keeps_utf8_split_across_chunks() {
        let input = "\u{feff}data: héllo ✓\n\n".as_bytes();
        for chunk in 1..=input.len() {
            let (events, _) = parse_in_chunks(input, chunk);
            assert_eq!(events, vec![event("message", None, "héllo ✓")], "chunk size {chunk}");
        }
    }

    #[test]
    fn value_keeps_colons_after_the_first() {
        let (events, _) = parse_in_chunks(b"data: {\"a\":\"b:c\"}\n\n", 64);
        assert_eq!(events[0].data, "{\"a\":\"b:c\"}");
    }
}
