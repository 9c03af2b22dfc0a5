//! Binary codec of one log batch, the payload of a message on `logs.<run>.<attempt>`.
//!
//! Output is bytes, not text: a record carries the exact bytes of one line
//! (including its `\n` if it had one), so concatenating every record of an
//! attempt in order reproduces the container's output byte for byte.
//! Layout per record: `stream: u8, ts_ms: i64 LE, len: u32 LE, bytes[len]`.
//! The number of the batch's first line travels in the [`FIRST_LINE_HEADER`].

use crate::LogStream;

pub const FIRST_LINE_HEADER: &str = "Ff-First-Line";
pub const FENCING_TOKEN_HEADER: &str = "Ff-Token";
const RECORD_HEADER_LEN: usize = 1 + 8 + 4;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord<'a> {
    pub stream: LogStream,
    pub ts_ms: i64,
    pub bytes: &'a [u8],
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("log batch truncated at byte {0}")]
    Truncated(usize),
    #[error("log batch has unknown stream tag {tag} at byte {at}")]
    UnknownStream { tag: u8, at: usize },
}

/// Appends one record to a batch buffer.
pub fn push_record(buf: &mut Vec<u8>, stream: LogStream, ts_ms: i64, bytes: &[u8]) {
    buf.reserve(RECORD_HEADER_LEN + bytes.len());
    buf.push(stream.to_byte());
    buf.extend_from_slice(&ts_ms.to_le_bytes());
    // A record is at most one (split) line, far below 4 GiB.
    buf.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    buf.extend_from_slice(bytes);
}

/// Size a record of `len` bytes adds to a batch.
pub fn record_size(len: usize) -> usize {
    RECORD_HEADER_LEN + len
}

/// Iterates over the records of a batch; stops at the first malformed record.
pub fn records(payload: &[u8]) -> Records<'_> {
    Records { payload, at: 0 }
}

pub struct Records<'a> {
    payload: &'a [u8],
    at: usize,
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<LogRecord<'a>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = &self.payload[self.at..];
        if rest.is_empty() {
            return None;
        }
        let start = self.at;
        let Some(header) = rest.get(..RECORD_HEADER_LEN) else {
            self.at = self.payload.len();
            return Some(Err(Error::Truncated(start)));
        };
        let tag = header[0];
        let Some(stream) = LogStream::from_byte(tag) else {
            self.at = self.payload.len();
            return Some(Err(Error::UnknownStream { tag, at: start }));
        };
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&header[1..9]);
        let mut len = [0u8; 4];
        len.copy_from_slice(&header[9..13]);
        let len = u32::from_le_bytes(len) as usize;
        let Some(bytes) = rest.get(RECORD_HEADER_LEN..RECORD_HEADER_LEN + len) else {
            self.at = self.payload.len();
            return Some(Err(Error::Truncated(start)));
        };
        self.at += RECORD_HEADER_LEN + len;
        Some(Ok(LogRecord { stream, ts_ms: i64::from_le_bytes(ts), bytes }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_with_arbitrary_bytes() {
        let mut buf = Vec::new();
        push_record(&mut buf, LogStream::Stdout, 17, b"hello\n");
        push_record(&mut buf, LogStream::Stderr, -1, &[0, 255, 10, 13]);
        push_record(&mut buf, LogStream::System, 99, b"");
        let got: Vec<_> = records(&buf).collect::<Result<_, _>>().unwrap_or_default();
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], LogRecord { stream: LogStream::Stdout, ts_ms: 17, bytes: b"hello\n" });
        assert_eq!(got[1].bytes, &[0, 255, 10, 13]);
        assert_eq!(got[1].stream, LogStream::Stderr);
        assert_eq!(got[2].bytes, b"");
        assert_eq!(buf.len(), record_size(6) + record_size(4) + record_size(0));
    }

    #[test]
    fn truncated_and_corrupt_batches_are_errors_not_panics() {
        let mut buf = Vec::new();
        push_record(&mut buf, LogStream::Stdout, 1, b"abcdef");
        let cut = &buf[..buf.len() - 2];
        let got: Vec<_> = records(cut).collect();
        assert_eq!(got, vec![Err(Error::Truncated(0))]);
        let mut bad = buf.clone();
        bad[0] = 9;
        assert_eq!(records(&bad).next(), Some(Err(Error::UnknownStream { tag: 9, at: 0 })));
        assert_eq!(records(&[]).next(), None);
    }
}
