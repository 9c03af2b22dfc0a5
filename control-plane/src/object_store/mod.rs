//! Object storage for archived run logs: the log-store seam of DESIGN.md's single-node default.
//!
//! Exactly two backends, chosen at start: S3 ([`ObjectStore::connect`], the only code that knows
//! `aws-sdk-s3`, in `s3.rs`) and plain files under a directory ([`ObjectStore::local`], in
//! `local_dir.rs`). Both give the same guarantees to callers: an object is visible under its key
//! only once its upload finished, memory stays bounded whatever the object size, and reads stream
//! from any byte offset.

use std::fmt;
use std::path::PathBuf;

use bytes::Bytes;

mod local_dir;
mod s3;

pub use s3::PART_SIZE;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("object {key:?} not found")]
    NotFound { key: String },
    #[error("object {key:?} has {size} bytes; cannot read from byte {from_byte}")]
    InvalidRange { key: String, from_byte: u64, size: u64 },
    /// Transport, service or file-system failure (after the SDK's retries), or a key the
    /// backend refuses; the message never holds secrets.
    #[error("object store unavailable: {0}")]
    Unavailable(String),
}

#[derive(Clone)]
pub struct S3Settings {
    /// `None` means AWS itself; set it for MinIO, SeaweedFS, s3s-fs...
    pub endpoint: Option<String>,
    pub bucket: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Settings")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .finish()
    }
}

#[derive(Clone)]
pub struct ObjectStore {
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    S3(s3::S3Store),
    Local(local_dir::LocalDir),
}

impl ObjectStore {
    /// Builds the S3 client and creates the bucket if it is missing.
    pub async fn connect(settings: &S3Settings) -> Result<ObjectStore, Error> {
        Ok(ObjectStore { backend: Backend::S3(s3::S3Store::connect(settings).await?) })
    }

    /// Files under `dir`, which is created if missing. Synchronous: it runs once, at start.
    pub fn local(dir: PathBuf) -> Result<ObjectStore, Error> {
        Ok(ObjectStore { backend: Backend::Local(local_dir::LocalDir::open(dir)?) })
    }

    /// One line for the start-up log: where the objects go.
    pub fn describe(&self) -> String {
        match &self.backend {
            Backend::S3(s) => s.describe(),
            Backend::Local(l) => l.describe(),
        }
    }

    pub async fn health(&self) -> Result<(), Error> {
        match &self.backend {
            Backend::S3(s) => s.health().await,
            Backend::Local(l) => l.health().await,
        }
    }

    /// Starts writing one object of any size with bounded memory (see [`Upload`]).
    pub async fn begin_upload(&self, key: &str) -> Result<Upload, Error> {
        let inner = match &self.backend {
            Backend::S3(s) => UploadInner::S3(s.begin_upload(key).await?),
            Backend::Local(l) => UploadInner::Local(l.begin_upload(key).await?),
        };
        Ok(Upload { inner })
    }

    /// Writes a small object in one go.
    pub async fn put(&self, key: &str, data: Bytes) -> Result<(), Error> {
        match &self.backend {
            Backend::S3(s) => s.put(key, data).await,
            Backend::Local(l) => l.put(key, data).await,
        }
    }

    /// Streams an object from `from_byte` on. Reading from exactly the end gives an empty
    /// reader, so a follower that has caught up needs no special case.
    pub async fn get_stream(&self, key: &str, from_byte: u64) -> Result<ObjectReader, Error> {
        Ok(match &self.backend {
            Backend::S3(s) => {
                let r = s.get_stream(key, from_byte).await?;
                ObjectReader { size: r.size, inner: ReaderInner::S3(r) }
            }
            Backend::Local(l) => {
                let r = l.get_stream(key, from_byte).await?;
                ObjectReader { size: r.remaining(), inner: ReaderInner::Local(r) }
            }
        })
    }

    /// Size of an object in bytes, `None` if it does not exist.
    pub async fn size(&self, key: &str) -> Result<Option<u64>, Error> {
        match &self.backend {
            Backend::S3(s) => s.size(key).await,
            Backend::Local(l) => l.size(key).await,
        }
    }

    /// Deletes an object; deleting a missing key is not an error (S3 semantics).
    pub async fn delete(&self, key: &str) -> Result<(), Error> {
        match &self.backend {
            Backend::S3(s) => s.delete(key).await,
            Backend::Local(l) => l.delete(key).await,
        }
    }
}

/// Writer for one object. Nothing is visible under the key until [`Upload::finish`] succeeds;
/// dropping an unfinished upload discards what was written (S3: aborts the multipart upload in
/// the background; files: removes the temporary file).
pub struct Upload {
    inner: UploadInner,
}

enum UploadInner {
    S3(s3::S3Upload),
    Local(local_dir::LocalUpload),
}

impl Upload {
    pub async fn write(&mut self, data: &[u8]) -> Result<(), Error> {
        match &mut self.inner {
            UploadInner::S3(u) => u.write(data).await,
            UploadInner::Local(u) => u.write(data).await,
        }
    }

    /// Makes the object visible; returns its size in bytes.
    pub async fn finish(self) -> Result<u64, Error> {
        match self.inner {
            UploadInner::S3(u) => u.finish().await,
            UploadInner::Local(u) => u.finish().await,
        }
    }

    /// Discards everything written so far. Best effort: a failure is logged.
    pub async fn abort(self) {
        match self.inner {
            UploadInner::S3(u) => u.abort().await,
            UploadInner::Local(u) => u.abort().await,
        }
    }
}

/// Remaining bytes of one object, streamed.
#[derive(Debug)]
pub struct ObjectReader {
    /// Bytes left to read when the reader was created.
    pub size: u64,
    inner: ReaderInner,
}

#[derive(Debug)]
enum ReaderInner {
    S3(s3::S3Reader),
    Local(local_dir::LocalReader),
}

impl ObjectReader {
    /// Next chunk of the body, `None` at the end.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, Error> {
        match &mut self.inner {
            ReaderInner::S3(r) => r.next_chunk().await,
            ReaderInner::Local(r) => r.next_chunk().await,
        }
    }
}

/// What [`copy`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyOutcome {
    /// The destination already held an object of the same size under the key.
    AlreadyThere,
    /// Copied this many bytes.
    Copied(u64),
}

/// Copies one object between stores with bounded memory (reader chunks into an upload).
/// Idempotent, so an interrupted migration can simply run again: an object already at the
/// destination with the same size is left alone. Logs are written once and never change, so
/// equal sizes mean equal objects.
pub async fn copy(from: &ObjectStore, to: &ObjectStore, key: &str) -> Result<CopyOutcome, Error> {
    let source_size = from.size(key).await?.ok_or_else(|| Error::NotFound { key: key.to_owned() })?;
    if to.size(key).await? == Some(source_size) {
        return Ok(CopyOutcome::AlreadyThere);
    }
    let mut reader = from.get_stream(key, 0).await?;
    let mut upload = to.begin_upload(key).await?;
    if let Err(e) = pump(&mut reader, &mut upload).await {
        upload.abort().await;
        return Err(e);
    }
    upload.finish().await.map(CopyOutcome::Copied)
}

async fn pump(reader: &mut ObjectReader, upload: &mut Upload) -> Result<(), Error> {
    let mut copied = 0u64;
    while let Some(chunk) = reader.next_chunk().await? {
        upload.write(&chunk).await?;
        copied += chunk.len() as u64;
    }
    // A body that ended early would otherwise become a truncated object at the destination.
    if copied != reader.size {
        return Err(Error::Unavailable(format!("reading object body: got {copied} of {} bytes", reader.size)));
    }
    Ok(())
}
