//! Reading an attempt's live log from the bus (JetStream or the local spool).

use super::LogLine;
use crate::bus::{self, Bus, RawBatch};
use shared::log_batch;
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Bus(#[from] bus::Error),
}

/// Decodes a batch into numbered lines. Batches written under another fencing token (a
/// runner that lost the attempt, or anyone else: the token is the holder's secret) are
/// ignored, and so is a batch that cannot be read (no line number, a broken record): it
/// is logged and dropped, and the run's log goes on without it, never stalls on it.
pub fn decode_batch(batch: &RawBatch, token: i64) -> Vec<LogLine> {
    if batch.token != Some(token) {
        if batch.token.is_none() {
            tracing::warn!(bytes = batch.payload.len(), "dropping a log batch without a fencing token header");
        }
        return Vec::new();
    }
    let Some(first) = batch.first_line else {
        tracing::warn!(header = log_batch::FIRST_LINE_HEADER, "dropping a log batch without a line number");
        return Vec::new();
    };
    let mut lines = Vec::new();
    for (i, record) in log_batch::records(&batch.payload).enumerate() {
        let record = match record {
            Ok(record) => record,
            Err(e) => {
                tracing::warn!(first_line = first, error = %e, "dropping the rest of a malformed log batch");
                break;
            }
        };
        lines.push(LogLine {
            number: first + i as u64,
            stream: record.stream,
            ts_ms: record.ts_ms,
            bytes: batch.payload.slice_ref(record.bytes),
        });
    }
    lines
}

/// Reads what the bus holds now for one attempt, batch by batch, in order,
/// without duplicates (a re-published batch is skipped by line number).
pub struct SnapshotReader {
    cursor: bus::LogCursor,
    token: i64,
    next_line: u64,
}

impl SnapshotReader {
    pub async fn open(bus: &Bus, run_id: Uuid, attempt: i32, token: i64) -> Result<Self, Error> {
        Ok(SnapshotReader { cursor: bus.log_cursor(run_id, attempt).await?, token, next_line: 1 })
    }

    /// The next lines, or `None` once everything stored so far was read.
    pub async fn next_lines(&mut self) -> Result<Option<Vec<LogLine>>, Error> {
        while let Some(batch) = self.cursor.next_batch().await? {
            let lines = self.fresh(decode_batch(&batch, self.token));
            if !lines.is_empty() {
                return Ok(Some(lines));
            }
        }
        Ok(None)
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
