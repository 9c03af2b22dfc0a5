//! Pipeline code bundles fetched through the control link, verified against
//! their sha256 and unpacked once per digest under `<data dir>/code/<digest>`.

use crate::link::{ControlLink, LinkError};
use sha2::{Digest, Sha256};
use shared::protocol::CodeBundleRef;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

const MAX_BUNDLE_BYTES: u64 = 64 * 1024 * 1024;

/// Tries of one fetch. A fetch reads the bundle through a JetStream consumer with no
/// deadline of its own; a run once sat in its setup until the control plane ended it
/// (CI, round 9; the stalled step was not logged, the fetch is the likely one). A fresh
/// try with a new consumer gets past a stalled read.
const FETCH_TRIES: u32 = 3;

/// How long one try may take: a base plus a second per MiB (the bundle comes from
/// NATS, usually on the same network, at far more than 1 MiB/s).
fn try_deadline(size: u64) -> Duration {
    Duration::from_secs(10 + size / (1024 * 1024))
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("code bundle {digest} unavailable: {message}")]
    Unavailable { digest: String, message: String },
    #[error("code bundle {0} does not match its digest")]
    Corrupt(String),
    #[error("cannot unpack code bundle: {0}")]
    Io(#[from] std::io::Error),
}

#[derive(Clone)]
pub struct CodeCache {
    dir: PathBuf,
    link: Arc<dyn ControlLink>,
}

impl CodeCache {
    pub fn new(dir: PathBuf, link: Arc<dyn ControlLink>) -> CodeCache {
        CodeCache { dir, link }
    }

    /// The host folder holding the bundle's files, fetching it if needed.
    pub async fn ensure(&self, code: &CodeBundleRef) -> Result<PathBuf, Error> {
        if code.digest.len() != 64 || !code.digest.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::Corrupt(code.digest.clone()));
        }
        let target = self.dir.join(&code.digest);
        if tokio::fs::try_exists(&target).await? {
            return Ok(target);
        }
        let data = self.fetch(code).await?;
        if hex::encode(Sha256::digest(&data)) != code.digest {
            return Err(Error::Corrupt(code.digest.clone()));
        }
        let dir = self.dir.clone();
        let target_clone = target.clone();
        tokio::task::spawn_blocking(move || unpack(&dir, &target_clone, &data))
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))??;
        Ok(target)
    }

    async fn fetch(&self, code: &CodeBundleRef) -> Result<Vec<u8>, Error> {
        let unavailable = |message: String| Error::Unavailable { digest: code.digest.clone(), message };
        if code.size > MAX_BUNDLE_BYTES {
            return Err(unavailable(format!("larger than {MAX_BUNDLE_BYTES} bytes")));
        }
        let fetch = || self.link.fetch_bundle(code, MAX_BUNDLE_BYTES);
        let data = with_tries(&code.digest, try_deadline(code.size), FETCH_TRIES, fetch).await.map_err(unavailable)?;
        if data.len() as u64 > MAX_BUNDLE_BYTES {
            return Err(unavailable(format!("larger than {MAX_BUNDLE_BYTES} bytes")));
        }
        Ok(data)
    }
}

/// Calls `fetch` until it succeeds, at most `tries` times, giving each call `deadline`.
async fn with_tries<F, Fut>(digest: &str, deadline: Duration, tries: u32, mut fetch: F) -> Result<Vec<u8>, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Vec<u8>, LinkError>>,
{
    let mut tried = 0;
    loop {
        tried += 1;
        let failure = match tokio::time::timeout(deadline, fetch()).await {
            Ok(Ok(data)) => return Ok(data),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {}s", deadline.as_secs()),
        };
        if tried >= tries {
            return Err(format!("{failure} (tried {tried} times)"));
        }
        tracing::warn!(digest, tried, error = %failure, "fetching the code bundle failed; trying again");
        tokio::time::sleep(Duration::from_millis(500 * u64::from(tried))).await;
    }
}

/// Unpacks into a temporary folder, then renames it into place, so a crash
/// never leaves a half-written bundle under its final name.
fn unpack(dir: &Path, target: &Path, data: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".tmp-{}", uuid::Uuid::new_v4().simple()));
    let mut archive = tar::Archive::new(data);
    archive.set_preserve_permissions(true);
    archive.unpack(&tmp)?;
    match std::fs::rename(&tmp, target) {
        Ok(()) => Ok(()),
        // Another run unpacked the same digest first.
        Err(_) if target.exists() => std::fs::remove_dir_all(&tmp),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test(start_paused = true)]
    async fn a_fetch_that_never_answers_is_tried_again() {
        let calls = AtomicU32::new(0);
        let fetched = with_tries("d", Duration::from_secs(10), 3, || {
            let call = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if call == 0 {
                    std::future::pending::<()>().await;
                }
                Ok(b"bundle".to_vec())
            }
        })
        .await;
        assert_eq!(fetched, Ok(b"bundle".to_vec()));
        assert_eq!(calls.load(Ordering::SeqCst), 2, "the stalled first try was given up, the second answered");
    }

    #[tokio::test(start_paused = true)]
    async fn a_fetch_gives_up_after_its_tries_with_the_last_reason() {
        let calls = AtomicU32::new(0);
        let fetched = with_tries("d", Duration::from_secs(10), 3, || {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err::<Vec<u8>, _>(LinkError::new("code bundle", "no such object")) }
        })
        .await;
        assert_eq!(fetched, Err("code bundle: no such object (tried 3 times)".to_owned()));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }
}
