//! A minimal Server-Sent Events reader over a streaming HTTP response.

use std::pin::Pin;

use anyhow::Context;
use bytes::{Buf, Bytes, BytesMut};
use futures::{Stream, StreamExt};

#[derive(Debug, Clone, Default)]
pub struct SseEvent {
    /// `message` when the event has no `event:` field.
    pub event: String,
    pub id: Option<String>,
    pub data: String,
}

type Body = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

pub struct SseStream {
    body: Body,
    buffer: BytesMut,
}

impl SseStream {
    pub fn new(response: reqwest::Response) -> Self {
        Self { body: Box::pin(response.bytes_stream()), buffer: BytesMut::new() }
    }

    /// The next event (comments skipped); `None` when the server closed the stream.
    pub async fn next_event(&mut self) -> anyhow::Result<Option<SseEvent>> {
        loop {
            if let Some(block) = self.take_block() {
                if let Some(event) = parse_block(&block) {
                    return Ok(Some(event));
                }
                continue;
            }
            match self.body.next().await {
                Some(chunk) => self.buffer.extend_from_slice(&chunk.context("reading the SSE stream")?),
                None => return Ok(None),
            }
        }
    }

    /// One event block (up to a blank line), without the terminator.
    fn take_block(&mut self) -> Option<Vec<u8>> {
        let end = self.buffer.windows(2).position(|w| w == b"\n\n")?;
        let block = self.buffer[..end].to_vec();
        self.buffer.advance(end + 2);
        Some(block)
    }
}

fn parse_block(block: &[u8]) -> Option<SseEvent> {
    let text = String::from_utf8_lossy(block);
    let mut event = SseEvent { event: "message".into(), ..Default::default() };
    let mut has_data = false;
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "" => {} // a comment (keep-alive)
            "event" => event.event = value.to_string(),
            "id" => event.id = Some(value.to_string()),
            "data" => {
                if has_data {
                    event.data.push('\n');
                }
                event.data.push_str(value);
                has_data = true;
            }
            _ => {}
        }
    }
    (has_data || event.event != "message").then_some(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_events_and_skips_comments() {
        assert!(parse_block(b": keep-alive").is_none());
        let event = parse_block(b"event: log\nid: 3\ndata: {\"line\":\"x\"}").expect("an event");
        assert_eq!(event.event, "log");
        assert_eq!(event.id.as_deref(), Some("3"));
        assert_eq!(event.data, "{\"line\":\"x\"}");
    }
}
