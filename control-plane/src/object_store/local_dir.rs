//! The plain-files backend of [`super::ObjectStore`] (single-node mode, `LOGS_DIR`).
//!
//! Invariants: a key maps to a path strictly inside the directory (keys with `..`, `.`, empty
//! components, backslashes or a leading `/` are refused); an object appears under its final name
//! only by an atomic rename of a complete, fsynced temporary file in the same directory, followed
//! by an fsync of that directory, so a crash never leaves a half-written object and a finished
//! upload survives power loss.

use std::io;
use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use tokio::fs;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt, BufWriter};

use super::Error;

/// Size of the chunks a reader returns, and of an upload's write buffer.
const CHUNK: usize = 256 * 1024;

/// How often `begin_upload` recreates a directory that a concurrent `delete` removed (it
/// removes a run's directory once empty, which it is until the temporary file exists).
const CREATE_ATTEMPTS: u32 = 3;

#[derive(Clone)]
pub struct LocalDir {
    root: Arc<PathBuf>,
}

impl LocalDir {
    pub fn open(dir: PathBuf) -> Result<LocalDir, Error> {
        std::fs::create_dir_all(&dir).map_err(|e| io_error("creating", &dir, &e))?;
        // Absolute and free of symlinks, so `describe` says where the files really are.
        let root = std::fs::canonicalize(&dir).map_err(|e| io_error("resolving", &dir, &e))?;
        Ok(LocalDir { root: Arc::new(root) })
    }

    pub fn describe(&self) -> String {
        format!("files in {}", self.root.display())
    }

    /// The directory exists and accepts new files.
    pub async fn health(&self) -> Result<(), Error> {
        let probe = self.root.join(format!(".health-{}", random_suffix()));
        let created = fs::OpenOptions::new().write(true).create_new(true).open(&probe).await;
        let result = match created {
            Ok(file) => {
                drop(file);
                fs::remove_file(&probe).await
            }
            Err(e) => Err(e),
        };
        result.map_err(|e| Error::Unavailable(format!("log directory {} is not writable: {e}", self.root.display())))
    }

    pub async fn begin_upload(&self, key: &str) -> Result<LocalUpload, Error> {
        let path = self.resolve(key)?;
        let (parent, name) = key.rsplit_once('/').unwrap_or(("", key));
        let dir = self.root.join(parent);
        let tmp = dir.join(format!(".{name}.part-{}", random_suffix()));
        let mut attempt = 1;
        let file = loop {
            self.create_dirs(parent).await?;
            match fs::OpenOptions::new().write(true).create_new(true).open(&tmp).await {
                Ok(file) => break file,
                Err(e) if e.kind() == io::ErrorKind::NotFound && attempt < CREATE_ATTEMPTS => attempt += 1,
                Err(e) => return Err(io_error("creating", &tmp, &e)),
            }
        };
        Ok(LocalUpload {
            path,
            dir,
            tmp,
            file: BufWriter::with_capacity(CHUNK, file),
            total: 0,
            broken: false,
            pending: true,
        })
    }

    pub async fn put(&self, key: &str, data: Bytes) -> Result<(), Error> {
        let mut upload = self.begin_upload(key).await?;
        upload.write(&data).await?;
        upload.finish().await.map(drop)
    }

    pub async fn get_stream(&self, key: &str, from_byte: u64) -> Result<LocalReader, Error> {
        let path = self.resolve(key)?;
        let mut file = match fs::File::open(&path).await {
            Ok(file) => file,
            Err(e) if is_missing(&e) => return Err(Error::NotFound { key: key.to_owned() }),
            Err(e) => return Err(io_error("opening", &path, &e)),
        };
        // Size of the open file, not of the path: a concurrent replace cannot mix two objects.
        let meta = file.metadata().await.map_err(|e| io_error("reading metadata of", &path, &e))?;
        if !meta.is_file() {
            return Err(Error::NotFound { key: key.to_owned() });
        }
        let size = meta.len();
        if from_byte > size {
            return Err(Error::InvalidRange { key: key.to_owned(), from_byte, size });
        }
        if from_byte > 0 {
            file.seek(SeekFrom::Start(from_byte)).await.map_err(|e| io_error("seeking in", &path, &e))?;
        }
        Ok(LocalReader { file, remaining: size - from_byte, path })
    }

    pub async fn size(&self, key: &str) -> Result<Option<u64>, Error> {
        let path = self.resolve(key)?;
        match fs::metadata(&path).await {
            Ok(meta) if meta.is_file() => Ok(Some(meta.len())),
            Ok(_) => Ok(None),
            Err(e) if is_missing(&e) => Ok(None),
            Err(e) => Err(io_error("reading metadata of", &path, &e)),
        }
    }

    pub async fn delete(&self, key: &str) -> Result<(), Error> {
        let path = self.resolve(key)?;
        match fs::remove_file(&path).await {
            Ok(()) => {}
            Err(e) if is_missing(&e) => {}
            Err(e) => return Err(io_error("removing", &path, &e)),
        }
        // The run's directory goes with its last object. Failing (not empty, already gone) is
        // fine; `begin_upload` copes with a directory removed under it.
        if let Some(dir) = path.parent()
            && dir != self.root.as_path()
        {
            let _ = fs::remove_dir(dir).await;
        }
        Ok(())
    }

    fn resolve(&self, key: &str) -> Result<PathBuf, Error> {
        check_key(key)?;
        Ok(self.root.join(key))
    }

    /// Creates the missing directories of `parent` (relative, already checked), fsyncing the
    /// directory that gained an entry so the new directory survives power loss too.
    async fn create_dirs(&self, parent: &str) -> Result<(), Error> {
        let mut dir = self.root.as_path().to_path_buf();
        for segment in parent.split('/').filter(|s| !s.is_empty()) {
            let child = dir.join(segment);
            match fs::create_dir(&child).await {
                Ok(()) => sync_dir(&dir).await.map_err(|e| io_error("syncing", &dir, &e))?,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_error("creating", &child, &e)),
            }
            dir = child;
        }
        Ok(())
    }
}

/// Writer for one object: a temporary file next to the target, renamed into place by
/// [`LocalUpload::finish`]. Dropping it unfinished removes the temporary file.
pub struct LocalUpload {
    path: PathBuf,
    dir: PathBuf,
    tmp: PathBuf,
    file: BufWriter<fs::File>,
    total: u64,
    /// A write failed or was cancelled: what reached the file is unknown.
    broken: bool,
    /// The temporary file still exists and belongs to this upload.
    pending: bool,
}

impl LocalUpload {
    pub async fn write(&mut self, data: &[u8]) -> Result<(), Error> {
        self.check_usable()?;
        // Cleared only on success, so an error or a cancelled future leaves the upload unusable.
        self.broken = true;
        self.file.write_all(data).await.map_err(|e| io_error("writing", &self.tmp, &e))?;
        self.total += data.len() as u64;
        self.broken = false;
        Ok(())
    }

    pub async fn finish(mut self) -> Result<u64, Error> {
        self.check_usable()?;
        // On any error below before the rename, Drop removes the temporary file.
        self.file.flush().await.map_err(|e| io_error("writing", &self.tmp, &e))?;
        self.file.get_mut().sync_all().await.map_err(|e| io_error("syncing", &self.tmp, &e))?;
        fs::rename(&self.tmp, &self.path).await.map_err(|e| io_error("renaming into", &self.path, &e))?;
        self.pending = false;
        // Makes the rename itself durable; until then power loss could undo it.
        sync_dir(&self.dir).await.map_err(|e| io_error("syncing", &self.dir, &e))?;
        Ok(self.total)
    }

    pub async fn abort(mut self) {
        self.pending = false;
        if let Err(e) = fs::remove_file(&self.tmp).await
            && e.kind() != io::ErrorKind::NotFound
        {
            let tmp = self.tmp.display();
            tracing::warn!(%tmp, error = %e, "removing the temporary file of an aborted upload failed");
        }
    }

    fn check_usable(&self) -> Result<(), Error> {
        if self.broken {
            let msg = format!("upload to {} failed to write earlier; abort it", self.path.display());
            return Err(Error::Unavailable(msg));
        }
        Ok(())
    }
}

impl Drop for LocalUpload {
    fn drop(&mut self) {
        // Synchronous on purpose: one unlink, and it must happen even without a runtime.
        if self.pending {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Remaining bytes of one file, read in chunks of [`CHUNK`].
#[derive(Debug)]
pub struct LocalReader {
    file: fs::File,
    remaining: u64,
    path: PathBuf,
}

impl LocalReader {
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, Error> {
        if self.remaining == 0 {
            return Ok(None);
        }
        let len = usize::try_from(self.remaining).map_or(CHUNK, |r| r.min(CHUNK));
        let mut buf = vec![0; len];
        // Objects never change once renamed into place, so a short file means outside damage.
        self.file.read_exact(&mut buf).await.map_err(|e| io_error("reading", &self.path, &e))?;
        self.remaining -= len as u64;
        Ok(Some(Bytes::from(buf)))
    }
}

/// Keys are relative `/`-separated paths such as `runs/<uuid>/1.log`; anything that could
/// resolve outside the directory, or to it, is refused.
fn check_key(key: &str) -> Result<(), Error> {
    let reason = if key.is_empty() {
        "empty"
    } else if key.starts_with('/') {
        "absolute"
    } else if key.contains('\\') {
        "contains a backslash"
    } else if key.contains('\0') {
        "contains a NUL byte"
    } else if key.split('/').any(|s| s.is_empty() || s == "." || s == "..") {
        "has an empty, `.` or `..` component"
    } else {
        return Ok(());
    };
    Err(Error::Unavailable(format!("invalid object key {key:?}: {reason}")))
}

fn is_missing(e: &io::Error) -> bool {
    // NotADirectory: a path component is a file, so the key cannot exist either.
    matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory)
}

async fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir).await?.sync_all().await
}

fn random_suffix() -> String {
    format!("{:016x}", rand::random::<u64>())
}

fn io_error(action: &str, path: &Path, e: &io::Error) -> Error {
    Error::Unavailable(format!("{action} {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object_store::{ObjectReader, ObjectStore};

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            TempDir(std::env::temp_dir().join(format!("fastflow-objects-{}", uuid::Uuid::new_v4().simple())))
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn store(dir: &TempDir) -> ObjectStore {
        ObjectStore::local(dir.0.join("logs")).expect("local store")
    }

    /// Every file under `dir`, as paths relative to it, sorted.
    fn files(dir: &Path) -> Vec<String> {
        fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).expect("read_dir") {
                let path = entry.expect("entry").path();
                if path.is_dir() {
                    walk(base, &path, out);
                } else {
                    out.push(path.strip_prefix(base).expect("prefix").display().to_string());
                }
            }
        }
        let mut out = Vec::new();
        walk(dir, dir, &mut out);
        out.sort();
        out
    }

    fn pseudo_random(len: usize) -> Vec<u8> {
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// Reads to the end, checking that chunks stay within the bound.
    async fn read_all(mut reader: ObjectReader) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(chunk) = reader.next_chunk().await.expect("chunk") {
            assert!(!chunk.is_empty() && chunk.len() <= CHUNK, "chunk of {} bytes", chunk.len());
            out.extend_from_slice(&chunk);
        }
        assert_eq!(out.len() as u64, reader.size);
        out
    }

    #[tokio::test]
    async fn multi_chunk_round_trip_from_start_and_offset() {
        let dir = TempDir::new();
        let store = store(&dir);
        let data = pseudo_random(3 * 1024 * 1024 + 17);
        let mut upload = store.begin_upload("runs/r1/1.log").await.expect("begin");
        let mut rest = &data[..];
        for size in [1, 4093, 70_001, 262_145, 999_983].iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (piece, tail) = rest.split_at((*size).min(rest.len()));
            upload.write(piece).await.expect("write");
            rest = tail;
        }
        assert_eq!(upload.finish().await.expect("finish"), data.len() as u64);
        assert_eq!(files(&dir.0), ["logs/runs/r1/1.log"], "only the final file, no temporary one");

        let whole = read_all(store.get_stream("runs/r1/1.log", 0).await.expect("get")).await;
        assert!(whole == data, "bytes read back differ");
        let offset = 1_234_567;
        let tail = read_all(store.get_stream("runs/r1/1.log", offset as u64).await.expect("get")).await;
        assert!(tail == data[offset..], "bytes read from offset {offset} differ");
    }

    #[tokio::test]
    async fn put_and_size() {
        let dir = TempDir::new();
        let store = store(&dir);
        assert_eq!(store.size("runs/r/1.idx").await.expect("size"), None);
        store.put("runs/r/1.idx", Bytes::from_static(b"0123456789")).await.expect("put");
        assert_eq!(store.size("runs/r/1.idx").await.expect("size"), Some(10));
        store.put("runs/r/1.idx", Bytes::from_static(b"abc")).await.expect("put replaces");
        assert_eq!(store.size("runs/r/1.idx").await.expect("size"), Some(3));
        assert_eq!(read_all(store.get_stream("runs/r/1.idx", 0).await.expect("get")).await, b"abc");
        // A directory is not an object.
        assert_eq!(store.size("runs/r").await.expect("size"), None);
        store.put("runs/r/empty.log", Bytes::new()).await.expect("put empty");
        assert_eq!(store.size("runs/r/empty.log").await.expect("size"), Some(0));
    }

    #[tokio::test]
    async fn reading_at_or_past_the_end() {
        let dir = TempDir::new();
        let store = store(&dir);
        store.put("runs/r/1.log", Bytes::from_static(b"hello")).await.expect("put");
        let at_end = store.get_stream("runs/r/1.log", 5).await.expect("from the end");
        assert_eq!(at_end.size, 0);
        assert!(read_all(at_end).await.is_empty());
        match store.get_stream("runs/r/1.log", 6).await {
            Err(Error::InvalidRange { from_byte: 6, size: 5, .. }) => {}
            other => panic!("expected InvalidRange, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn missing_objects_are_not_found() {
        let dir = TempDir::new();
        let store = store(&dir);
        assert!(matches!(store.get_stream("runs/none/1.log", 0).await, Err(Error::NotFound { .. })));
        store.put("runs/r/1.log", Bytes::from_static(b"x")).await.expect("put");
        // A file where a directory would be, and a directory where a file would be.
        assert!(matches!(store.get_stream("runs/r/1.log/2.log", 0).await, Err(Error::NotFound { .. })));
        assert!(matches!(store.get_stream("runs/r", 0).await, Err(Error::NotFound { .. })));
        assert_eq!(store.size("runs/r/1.log/2.log").await.expect("size"), None);
    }

    #[tokio::test]
    async fn abort_leaves_no_file() {
        let dir = TempDir::new();
        let store = store(&dir);
        let mut upload = store.begin_upload("runs/r/1.log").await.expect("begin");
        upload.write(&pseudo_random(CHUNK * 2 + 3)).await.expect("write");
        assert_eq!(files(&dir.0).len(), 1, "the temporary file exists while writing");
        upload.abort().await;
        assert!(files(&dir.0).is_empty(), "left behind: {:?}", files(&dir.0));
        assert_eq!(store.size("runs/r/1.log").await.expect("size"), None);
    }

    #[tokio::test]
    async fn drop_without_finish_leaves_no_temporary_file() {
        let dir = TempDir::new();
        let store = store(&dir);
        store.put("runs/r/1.log", Bytes::from_static(b"old")).await.expect("put");
        let mut upload = store.begin_upload("runs/r/1.log").await.expect("begin");
        upload.write(b"new and longer").await.expect("write");
        drop(upload);
        assert_eq!(files(&dir.0), ["logs/runs/r/1.log"]);
        let old = read_all(store.get_stream("runs/r/1.log", 0).await.expect("get")).await;
        assert_eq!(old, b"old", "an unfinished upload must not touch the object");
    }

    #[tokio::test]
    async fn delete_is_idempotent_and_removes_the_empty_run_directory() {
        let dir = TempDir::new();
        let store = store(&dir);
        store.put("runs/r/1.log", Bytes::from_static(b"log")).await.expect("put");
        store.put("runs/r/1.idx", Bytes::from_static(b"idx")).await.expect("put");
        store.delete("runs/r/1.log").await.expect("delete");
        assert!(dir.0.join("logs/runs/r").is_dir(), "still holds 1.idx");
        store.delete("runs/r/1.idx").await.expect("delete");
        assert!(!dir.0.join("logs/runs/r").exists(), "empty run directory removed");
        assert!(dir.0.join("logs/runs").is_dir());
        store.delete("runs/r/1.idx").await.expect("deleting again is fine");
        store.delete("runs/never/1.log").await.expect("deleting a missing key is fine");
        assert_eq!(store.size("runs/r/1.idx").await.expect("size"), None);
        // The run directory comes back for a new upload.
        store.put("runs/r/2.log", Bytes::from_static(b"again")).await.expect("put after delete");
    }

    #[tokio::test]
    async fn bad_keys_are_refused() {
        let dir = TempDir::new();
        let store = store(&dir);
        std::fs::write(dir.0.join("outside"), b"secret").expect("write outside");
        for key in ["", "/etc/passwd", "../outside", "runs/../../outside", "runs/./1.log", ".", "runs//1.log", "runs/"]
            .into_iter()
            .chain(["runs\\1.log", "a\0b"])
        {
            let refused = |what: &str, r: Result<(), Error>| match r {
                Err(Error::Unavailable(msg)) if msg.contains("invalid object key") => {}
                other => panic!("{what} {key:?}: expected a refusal, got {other:?}"),
            };
            refused("begin_upload", store.begin_upload(key).await.map(drop));
            refused("put", store.put(key, Bytes::from_static(b"x")).await);
            refused("get_stream", store.get_stream(key, 0).await.map(drop));
            refused("size", store.size(key).await.map(drop));
            refused("delete", store.delete(key).await);
        }
        assert_eq!(files(&dir.0), ["outside"]);
        assert_eq!(std::fs::read(dir.0.join("outside")).expect("read"), b"secret");
    }

    #[tokio::test]
    async fn local_creates_and_canonicalises_the_directory() {
        let dir = TempDir::new();
        let store = ObjectStore::local(dir.0.join("a/b/../c")).expect("local");
        let expected = std::fs::canonicalize(dir.0.join("a/c")).expect("created");
        assert_eq!(store.describe(), format!("files in {}", expected.display()));
        store.health().await.expect("healthy");
        assert!(files(&dir.0).is_empty(), "the health probe is removed");

        std::fs::remove_dir_all(&expected).expect("remove");
        match store.health().await {
            Err(Error::Unavailable(msg)) => assert!(msg.contains(&expected.display().to_string()), "{msg}"),
            other => panic!("expected Unavailable, got {other:?}"),
        }
    }
}
