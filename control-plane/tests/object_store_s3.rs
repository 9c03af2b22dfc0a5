//! `object_store` against a real, signature-checking S3 server (s3s-fs from
//! `scripts/dev-deps.sh up`). Each test creates its own bucket, so bucket creation is covered too.
//! Without the server these tests fail: they are never skipped.

use bytes::Bytes;
use control_plane::object_store::{Error, ObjectReader, ObjectStore, PART_SIZE, S3Settings};
use sha2::{Digest, Sha256};

const HOW_TO: &str = "start the dev services with `scripts/dev-deps.sh up` and \
                      `source /var/tmp/fastflow-dev/env.sh`";

fn env(name: &str) -> String {
    std::env::var(name).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| panic!("{name} is not set: {HOW_TO}"))
}

fn settings() -> S3Settings {
    S3Settings {
        endpoint: Some(env("S3_ENDPOINT")),
        bucket: format!("t-{}", uuid::Uuid::new_v4().simple()),
        region: env("S3_REGION"),
        access_key_id: env("AWS_ACCESS_KEY_ID"),
        secret_access_key: env("AWS_SECRET_ACCESS_KEY"),
    }
}

async fn store() -> ObjectStore {
    let settings = settings();
    match ObjectStore::connect(&settings).await {
        Ok(store) => store,
        Err(e) => panic!("cannot use S3 at {:?}: {e}; {HOW_TO}", settings.endpoint),
    }
}

async fn read_all(mut reader: ObjectReader) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(chunk) = reader.next_chunk().await.expect("read chunk") {
        out.extend_from_slice(&chunk);
    }
    out
}

/// Deterministic, incompressible-looking bytes (xorshift), so misplaced parts change the hash.
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

async fn round_trip(store: &ObjectStore, key: &str, data: &[u8], chunk_sizes: &[usize]) {
    let mut upload = store.begin_upload(key).await.expect("begin upload");
    let mut rest = data;
    for size in chunk_sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (chunk, tail) = rest.split_at((*size).min(rest.len()));
        upload.write(chunk).await.expect("write");
        rest = tail;
    }
    assert_eq!(upload.finish().await.expect("finish"), data.len() as u64);

    let reader = store.get_stream(key, 0).await.expect("get");
    assert_eq!(reader.size, data.len() as u64);
    let read = read_all(reader).await;
    assert_eq!(read.len(), data.len());
    assert_eq!(hex::encode(Sha256::digest(&read)), hex::encode(Sha256::digest(data)));
}

#[tokio::test]
async fn empty_and_tiny_objects_round_trip() {
    let store = store().await;
    round_trip(&store, "empty", b"", &[1]).await;
    round_trip(&store, "tiny", b"abc", &[1, 2]).await;

    store.put("put", Bytes::from_static(b"hello world")).await.expect("put");
    assert_eq!(read_all(store.get_stream("put", 0).await.expect("get")).await, b"hello world");
}

#[tokio::test]
async fn large_object_goes_multipart_and_reads_back_from_any_offset() {
    let store = store().await;
    let data = pseudo_random(50 * 1024 * 1024 + 12_345);
    // Uneven sizes so part boundaries never line up with write boundaries.
    let chunks = [1, 4_093, 65_537, 3 * 1024 * 1024 + 7, PART_SIZE + 1];
    round_trip(&store, "logs/big", &data, &chunks).await;

    let from = 20_000_001;
    let reader = store.get_stream("logs/big", from as u64).await.expect("ranged get");
    assert_eq!(reader.size, (data.len() - from) as u64);
    let read = read_all(reader).await;
    assert_eq!(Sha256::digest(&read), Sha256::digest(&data[from..]));

    store.delete("logs/big").await.expect("delete");
    assert!(matches!(store.get_stream("logs/big", 0).await, Err(Error::NotFound { .. })));
}

#[tokio::test]
async fn ranged_reads_of_a_small_object() {
    let store = store().await;
    store.put("k", Bytes::from_static(b"hello world")).await.expect("put");

    let reader = store.get_stream("k", 6).await.expect("ranged get");
    assert_eq!(reader.size, 5);
    assert_eq!(read_all(reader).await, b"world");

    // A follower that has read everything gets an empty reader, not an error.
    let reader = store.get_stream("k", 11).await.expect("get at end");
    assert_eq!(reader.size, 0);
    assert!(read_all(reader).await.is_empty());

    let past_end = store.get_stream("k", 12).await;
    assert!(matches!(past_end, Err(Error::InvalidRange { size: 11, .. })), "{past_end:?}");
}

#[tokio::test]
async fn missing_key_is_not_found() {
    let store = store().await;
    for from in [0, 5] {
        match store.get_stream("no/such/key", from).await {
            Err(Error::NotFound { key }) => assert_eq!(key, "no/such/key"),
            other => panic!("expected NotFound, got {other:?}"),
        }
    }
    store.delete("no/such/key").await.expect("deleting a missing key is fine");
}

#[tokio::test]
async fn unfinished_uploads_leave_no_object() {
    let store = store().await;
    let part = pseudo_random(PART_SIZE + 10);

    let mut aborted = store.begin_upload("aborted").await.expect("begin");
    aborted.write(&part).await.expect("write"); // Started a multipart upload.
    aborted.abort().await;

    let mut dropped = store.begin_upload("dropped").await.expect("begin");
    dropped.write(&part).await.expect("write");
    drop(dropped);

    let mut small = store.begin_upload("small").await.expect("begin");
    small.write(b"abc").await.expect("write");
    drop(small);

    for key in ["aborted", "dropped", "small"] {
        assert!(matches!(store.get_stream(key, 0).await, Err(Error::NotFound { .. })), "{key}");
    }
    // Drop aborts in a background task: give it time to finish before the test's runtime stops,
    // or s3s-fs may be left with a half-removed upload.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
}

#[tokio::test]
async fn connect_twice_to_the_same_bucket_and_health() {
    let settings = settings();
    let first = ObjectStore::connect(&settings).await.expect("first connect creates the bucket");
    let second = ObjectStore::connect(&settings).await.expect("second connect finds it");
    first.health().await.expect("health");
    second.health().await.expect("health");
}

#[tokio::test]
async fn wrong_secret_is_rejected_without_leaking_it() {
    let secret = "definitely-not-the-secret";
    let settings = S3Settings { secret_access_key: secret.into(), ..settings() };
    assert!(!format!("{settings:?}").contains(secret), "Debug must redact the secret");

    let err = match ObjectStore::connect(&settings).await {
        Err(e) => e,
        Ok(_) => panic!("the server accepted a wrong signature"),
    };
    assert!(matches!(&err, Error::Unavailable(m) if m.contains("403")), "{err:?}");
    assert!(!err.to_string().contains(secret), "{err}");
}
