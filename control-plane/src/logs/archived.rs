//! Reading an archived log line by line, from any line number.

use super::{INDEX_ENTRY_LEN, LogLine, decode_index_entry, index_key};
use crate::object_store::{self, ObjectReader, ObjectStore};
use bytes::{Bytes, BytesMut};
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("object store: {0}")]
    Objects(#[from] object_store::Error),
    #[error("archived log of run {0} is corrupt: {1}")]
    Corrupt(Uuid, &'static str),
}

pub struct ArchiveReader {
    run_id: Uuid,
    index: ObjectReader,
    index_buf: BytesMut,
    log: ObjectReader,
    log_buf: BytesMut,
    next_line: u64,
}

impl ArchiveReader {
    /// Opens the archive positioned at line `from_line` (1-based).
    pub async fn open(
        objects: &ObjectStore,
        log_key: &str,
        run_id: Uuid,
        attempt: i32,
        from_line: u64,
    ) -> Result<Self, Error> {
        let mut index = objects.get_stream(&index_key(run_id, attempt), 0).await?;
        let mut index_buf = BytesMut::new();
        // Sum the lengths of the lines to skip to find where to start in the log.
        let mut offset = 0u64;
        let mut line = 1u64;
        while line < from_line {
            match next_entry(&mut index, &mut index_buf, run_id).await? {
                Some((_, _, len)) => offset += u64::from(len),
                None => break,
            }
            line += 1;
        }
        let log = objects.get_stream(log_key, offset).await?;
        Ok(ArchiveReader { run_id, index, index_buf, log, log_buf: BytesMut::new(), next_line: line })
    }

    pub async fn next_line(&mut self) -> Result<Option<LogLine>, Error> {
        let Some((stream, ts_ms, len)) = next_entry(&mut self.index, &mut self.index_buf, self.run_id).await? else {
            return Ok(None);
        };
        let len = len as usize;
        while self.log_buf.len() < len {
            match self.log.next_chunk().await? {
                Some(chunk) => self.log_buf.extend_from_slice(&chunk),
                None => return Err(Error::Corrupt(self.run_id, "log shorter than its index")),
            }
        }
        let bytes: Bytes = self.log_buf.split_to(len).freeze();
        let line = LogLine { number: self.next_line, stream, ts_ms, bytes };
        self.next_line += 1;
        Ok(Some(line))
    }
}

async fn next_entry(
    index: &mut ObjectReader,
    buf: &mut BytesMut,
    run_id: Uuid,
) -> Result<Option<(shared::LogStream, i64, u32)>, Error> {
    while buf.len() < INDEX_ENTRY_LEN {
        match index.next_chunk().await? {
            Some(chunk) => buf.extend_from_slice(&chunk),
            None if buf.is_empty() => return Ok(None),
            None => return Err(Error::Corrupt(run_id, "truncated index")),
        }
    }
    let raw = buf.split_to(INDEX_ENTRY_LEN);
    let mut entry = [0u8; INDEX_ENTRY_LEN];
    entry.copy_from_slice(&raw);
    decode_index_entry(&entry).map(Some).ok_or(Error::Corrupt(run_id, "bad stream tag in index"))
}
