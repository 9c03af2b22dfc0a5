//! `object_store::copy` between the two backends: files → S3 → files, against a real,
//! signature-checking S3 server (s3s-fs from `scripts/dev-deps.sh up`), each test with its own
//! bucket and temp directory. Without the server these tests fail: they are never skipped.

use std::path::PathBuf;

use bytes::Bytes;
use control_plane::object_store::{self, CopyOutcome, Error, ObjectStore, PART_SIZE, S3Settings};

const HOW_TO: &str = "start the dev services with `scripts/dev-deps.sh up` and \
                      `source /var/tmp/fastflow-dev/env.sh`";

fn env(name: &str) -> String {
    std::env::var(name).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| panic!("{name} is not set: {HOW_TO}"))
}

async fn s3_store() -> ObjectStore {
    let settings = S3Settings {
        endpoint: Some(env("S3_ENDPOINT")),
        bucket: format!("t-{}", uuid::Uuid::new_v4().simple()),
        region: env("S3_REGION"),
        access_key_id: env("AWS_ACCESS_KEY_ID"),
        secret_access_key: env("AWS_SECRET_ACCESS_KEY"),
    };
    match ObjectStore::connect(&settings).await {
        Ok(store) => store,
        Err(e) => panic!("cannot use S3 at {:?}: {e}; {HOW_TO}", settings.endpoint),
    }
}

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        TempDir(std::env::temp_dir().join(format!("fastflow-copy-{}", uuid::Uuid::new_v4().simple())))
    }

    fn store(&self, name: &str) -> ObjectStore {
        ObjectStore::local(self.0.join(name)).expect("local store")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn pseudo_random(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

async fn read_all(store: &ObjectStore, key: &str) -> Vec<u8> {
    let mut reader = store.get_stream(key, 0).await.expect("get");
    let mut out = Vec::new();
    while let Some(chunk) = reader.next_chunk().await.expect("read chunk") {
        out.extend_from_slice(&chunk);
    }
    out
}

#[tokio::test]
async fn copy_files_to_s3_and_back() {
    let s3 = s3_store().await;
    let dir = TempDir::new();
    let (files, back) = (dir.store("files"), dir.store("back"));
    assert!(s3.describe().starts_with("s3 bucket `t-"), "{}", s3.describe());

    // Larger than one part, so the S3 side goes through a multipart upload.
    let log = pseudo_random(PART_SIZE + 1_000_003);
    let index = pseudo_random(4_000);
    let objects = [("runs/r1/1.log", &log), ("runs/r1/1.idx", &index)];
    for (key, data) in objects {
        files.put(key, Bytes::from(data.clone())).await.expect("put");
    }

    for (key, data) in objects {
        let len = data.len() as u64;
        assert_eq!(s3.size(key).await.expect("size"), None);
        assert_eq!(object_store::copy(&files, &s3, key).await.expect("copy"), CopyOutcome::Copied(len));
        assert_eq!(s3.size(key).await.expect("size"), Some(len));
        assert_eq!(object_store::copy(&files, &s3, key).await.expect("copy again"), CopyOutcome::AlreadyThere);

        assert_eq!(object_store::copy(&s3, &back, key).await.expect("copy back"), CopyOutcome::Copied(len));
        assert_eq!(object_store::copy(&s3, &back, key).await.expect("copy back again"), CopyOutcome::AlreadyThere);
        assert!(read_all(&s3, key).await == *data, "{key}: bytes in S3 differ");
        assert!(read_all(&back, key).await == *data, "{key}: bytes copied back differ");
    }
}

#[tokio::test]
async fn copy_replaces_a_different_object_and_reports_a_missing_one() {
    let s3 = s3_store().await;
    let dir = TempDir::new();
    let files = dir.store("files");
    files.put("runs/r/1.log", Bytes::from_static(b"the whole log")).await.expect("put");
    // A leftover of an interrupted earlier copy, say: same key, other size.
    s3.put("runs/r/1.log", Bytes::from_static(b"the wh")).await.expect("put partial");
    assert_eq!(object_store::copy(&files, &s3, "runs/r/1.log").await.expect("copy"), CopyOutcome::Copied(13));
    assert_eq!(read_all(&s3, "runs/r/1.log").await, b"the whole log");

    assert!(matches!(object_store::copy(&files, &s3, "runs/none/1.log").await, Err(Error::NotFound { .. })));
    assert!(matches!(object_store::copy(&s3, &files, "runs/none/1.log").await, Err(Error::NotFound { .. })));
    assert_eq!(s3.size("runs/none/1.log").await.expect("size"), None);
}
