//! Writing an attempt's whole live log from the bus to the log store.
//! Memory stays bounded: lines stream through multipart uploads.

use super::live::{self, SnapshotReader};
use super::{encode_index_entry, index_key, log_key};
use crate::bus::Bus;
use crate::object_store::{self, ObjectStore};
use crate::store::runs::ArchivedLog;
use shared::protocol::{AttemptRef, LogTotals};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Live(#[from] live::Error),
    #[error("object store: {0}")]
    Objects(#[from] object_store::Error),
}

/// Pauses before each re-read of a log that came out shorter than the runner's count
/// (3.75 s in all, spent only when lines are missing).
const REREAD_PAUSES: [Duration; 5] = [
    Duration::from_millis(50),
    Duration::from_millis(200),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
];

pub struct Archived {
    pub log: ArchivedLog,
    /// Lines the runner reported but the stream no longer had (a NATS store
    /// lost them). Never expected; recorded so it cannot pass unnoticed.
    pub missing_lines: u64,
}

/// Archives everything the stream holds for the attempt. `expected` is what
/// the runner says it published, when it said so.
pub async fn archive(
    bus: &Bus,
    objects: &ObjectStore,
    at: &AttemptRef,
    expected: Option<LogTotals>,
) -> Result<Archived, Error> {
    let mut reader = SnapshotReader::open(bus, at.run_id, at.attempt, at.fencing_token).await?;
    let key = log_key(at.run_id, at.attempt);
    let mut log = objects.begin_upload(&key).await?;
    let mut index = objects.begin_upload(&index_key(at.run_id, at.attempt)).await?;
    let mut copied = copy_lines(&mut reader, &mut log, &mut index).await;
    // The runner counted the lines JetStream acknowledged, so a read that ends short of
    // them met a store that had not caught up with itself (CI saw one end 17 lines
    // early, once): read on a few times before calling the lines lost.
    if let Some(totals) = expected {
        for pause in REREAD_PAUSES {
            let read = reader.next_line() - 1;
            if copied.is_err() || read >= totals.lines {
                break;
            }
            tokio::time::sleep(pause).await;
            copied = copy_lines(&mut reader, &mut log, &mut index).await;
            let now = reader.next_line() - 1;
            if now > read {
                tracing::warn!(run_id = %at.run_id, attempt = at.attempt, read, now, expected = totals.lines,
                    "the live log gave more lines when read again");
            }
        }
    }
    if let Err(e) = copied {
        log.abort().await;
        index.abort().await;
        return Err(e);
    }
    // The two objects are independent: finishing them side by side saves a round trip
    // per finished run (most logs are one small PUT each). Nothing refers to either
    // until the caller records the archive, so a failure of one leaves nothing visible.
    let (size, indexed) = tokio::join!(log.finish(), index.finish());
    let size = size?;
    indexed?;
    let lines = reader.next_line() - 1;
    let missing_lines = expected.map(|t| t.lines.saturating_sub(lines)).unwrap_or(0);
    if missing_lines > 0 {
        tracing::error!(run_id = %at.run_id, attempt = at.attempt, missing_lines, "archived log is incomplete");
    }
    Ok(Archived { log: ArchivedLog { key, size: size as i64 }, missing_lines })
}

async fn copy_lines(
    reader: &mut SnapshotReader,
    log: &mut object_store::Upload,
    index: &mut object_store::Upload,
) -> Result<(), Error> {
    let mut entries = Vec::new();
    while let Some(lines) = reader.next_lines().await? {
        entries.clear();
        for line in &lines {
            log.write(&line.bytes).await?;
            encode_index_entry(&mut entries, line);
        }
        index.write(&entries).await?;
    }
    Ok(())
}
