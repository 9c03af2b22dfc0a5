//! Pipeline code bundles fetched through the control link, verified against
//! their sha256 and unpacked once per digest under `<data dir>/code/<digest>`.

use crate::link::ControlLink;
use sha2::{Digest, Sha256};
use shared::protocol::CodeBundleRef;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const MAX_BUNDLE_BYTES: u64 = 64 * 1024 * 1024;

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
        let data = self.link.fetch_bundle(code, MAX_BUNDLE_BYTES).await.map_err(|e| unavailable(e.to_string()))?;
        if data.len() as u64 > MAX_BUNDLE_BYTES {
            return Err(unavailable(format!("larger than {MAX_BUNDLE_BYTES} bytes")));
        }
        Ok(data)
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
