//! Run logs: numbered lines published live by runners to JetStream
//! (`logs.<run>.<attempt>`), archived to the object store when the attempt ends.
//!
//! An archive is two objects: `<attempt>.log`, the exact bytes the container
//! printed, and `<attempt>.idx`, one fixed-size entry per line (stream, time,
//! length) so a reader can resume at any line without scanning the log.

pub mod archive;
pub mod archived;
pub mod live;

use bytes::Bytes;
use shared::LogStream;
use uuid::Uuid;

/// One numbered line (or one piece of an over-long line).
#[derive(Debug, Clone)]
pub struct LogLine {
    pub number: u64,
    pub stream: LogStream,
    pub ts_ms: i64,
    pub bytes: Bytes,
}

pub fn log_key(run_id: Uuid, attempt: i32) -> String {
    format!("runs/{run_id}/{attempt}.log")
}

pub fn index_key(run_id: Uuid, attempt: i32) -> String {
    format!("runs/{run_id}/{attempt}.idx")
}

/// Size of one index entry: stream u8, ts_ms i64 LE, len u32 LE.
pub const INDEX_ENTRY_LEN: usize = 13;

pub fn encode_index_entry(out: &mut Vec<u8>, line: &LogLine) {
    out.push(line.stream.to_byte());
    out.extend_from_slice(&line.ts_ms.to_le_bytes());
    out.extend_from_slice(&(line.bytes.len() as u32).to_le_bytes());
}

/// Decodes one entry: (stream, ts_ms, len). `None` for a corrupt stream tag.
pub fn decode_index_entry(entry: &[u8; INDEX_ENTRY_LEN]) -> Option<(LogStream, i64, u32)> {
    let stream = LogStream::from_byte(entry[0])?;
    let mut ts = [0u8; 8];
    ts.copy_from_slice(&entry[1..9]);
    let mut len = [0u8; 4];
    len.copy_from_slice(&entry[9..13]);
    Some((stream, i64::from_le_bytes(ts), u32::from_le_bytes(len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_entries_round_trip() {
        let line = LogLine {
            number: 7,
            stream: LogStream::Stderr,
            ts_ms: 1_700_000_000_123,
            bytes: Bytes::from_static(b"abc\n"),
        };
        let mut out = Vec::new();
        encode_index_entry(&mut out, &line);
        let entry: [u8; INDEX_ENTRY_LEN] = out.as_slice().try_into().expect("13 bytes");
        assert_eq!(decode_index_entry(&entry), Some((LogStream::Stderr, 1_700_000_000_123, 4)));
    }
}
