//! Where a Python job's uv cache lives on the runner host: one folder per pipeline.
//!
//! A job may write anything into the cache it gets (uv trusts what it finds there), so a
//! cache shared by all pipelines would let one pipeline plant packages that another
//! pipeline's jobs then run. Each pipeline gets its own folder under `UV_CACHE_DIR`
//! instead; runs of one pipeline still share it, so dependencies are downloaded once per
//! pipeline and host, and a pipeline's cache can be pre-filled on its own.

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// `<root>/pipelines/<name>`. Names the control plane accepts are safe path components;
/// anything else (never sent, but the runner does not rely on it) is hashed.
pub fn for_pipeline(root: &Path, pipeline: &str) -> PathBuf {
    let safe = !pipeline.is_empty()
        && pipeline.len() <= 64
        && !pipeline.starts_with(['.', '-'])
        && pipeline.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if safe {
        root.join("pipelines").join(pipeline)
    } else {
        root.join("pipelines-hashed").join(hex::encode(Sha256::digest(pipeline.as_bytes())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_pipeline_has_its_own_folder_inside_the_root() {
        let root = Path::new("/cache");
        assert_eq!(for_pipeline(root, "etl_daily-2"), Path::new("/cache/pipelines/etl_daily-2"));
        assert_ne!(for_pipeline(root, "a"), for_pipeline(root, "b"));
        for odd in ["..", "../x", "a/b", "", ".hidden"] {
            let path = for_pipeline(root, odd);
            assert!(path.starts_with("/cache/pipelines-hashed") && path.components().count() == 4, "{odd}: {path:?}");
        }
    }
}
