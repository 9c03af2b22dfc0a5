//! `bus::nats::LogCursor` against the real NATS server of `scripts/dev-deps.sh up`
//! (`NATS_URL`): a long log is read past the point where the cursor switches from one
//! request per message to a consumer, in order, without other attempts' messages, and a
//! cursor that reached the end sees what is stored later. Fails, never skips, without NATS.

use bytes::Bytes;
use control_plane::bus::RawBatch;
use control_plane::bus::nats::{LogCursor, NatsBus};
use shared::log_batch::{FENCING_TOKEN_HEADER, FIRST_LINE_HEADER};
use uuid::Uuid;

async fn bus() -> NatsBus {
    let url = std::env::var("NATS_URL").unwrap_or_else(|_| {
        panic!("NATS_URL is not set: start the dev services with `scripts/dev-deps.sh up` and source its env.sh")
    });
    let bus = NatsBus::connect(&url, &dev_nats(), Default::default())
        .await
        .unwrap_or_else(|e| panic!("cannot reach NATS at {url}: {e}"));
    bus.ensure_streams().await.expect("create the streams");
    bus
}

/// Publishes one batch the way a runner does (first line and fencing token headers).
async fn publish(bus: &NatsBus, run_id: Uuid, first_line: u64, payload: Vec<u8>) {
    let js = async_nats::jetstream::new(bus.client().clone());
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(FIRST_LINE_HEADER, first_line.to_string().as_str());
    headers.insert(FENCING_TOKEN_HEADER, "7");
    let ack = js
        .publish_with_headers(names().log_subject(run_id, 1, "runner-1"), headers, Bytes::from(payload))
        .await
        .expect("publish");
    ack.await.expect("publish ack");
}

/// A payload that names its batch, sized like a full runner batch for the big ones.
fn payload(run: char, i: u64, size: usize) -> Vec<u8> {
    let mut bytes = format!("{run}{i}:").into_bytes();
    bytes.resize(size.max(bytes.len()), b'.');
    bytes
}

async fn read_to_end(cursor: &mut LogCursor) -> Vec<RawBatch> {
    let mut batches = Vec::new();
    while let Some(batch) = cursor.next_batch().await.expect("read a batch") {
        batches.push(batch);
    }
    batches
}

fn assert_batches(batches: &[RawBatch], run: char, lines: std::ops::Range<u64>, size: usize) {
    assert_eq!(batches.len() as u64, lines.end - lines.start, "batches read");
    for (batch, i) in batches.iter().zip(lines) {
        assert_eq!(batch.first_line, Some(i), "first line header of batch {i}");
        assert_eq!(batch.token, Some(7), "fencing token header of batch {i}");
        assert_eq!(batch.payload.as_ref(), payload(run, i, size).as_slice(), "payload of batch {i}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_long_log_is_read_whole_in_order_and_a_finished_cursor_sees_later_batches() {
    let bus = bus().await;
    let (ours, other) = (Uuid::new_v4(), Uuid::new_v4());
    const SIZE: usize = 60 * 1024;
    // 200 batches (far more than are read one request each), another attempt's interleaved.
    for i in 1..=200u64 {
        publish(&bus, ours, i, payload('a', i, SIZE)).await;
        if i % 3 == 0 {
            publish(&bus, other, i, payload('b', i, 100)).await;
        }
    }
    let mut cursor = bus.log_cursor(ours, 1).await.expect("cursor");
    let first = read_to_end(&mut cursor).await;
    assert_batches(&first, 'a', 1..201, SIZE);
    assert!(cursor.next_batch().await.expect("read at the end").is_none(), "the end repeats");

    // Stored after the cursor reached the end: a later read returns exactly these.
    for i in 201..=230u64 {
        publish(&bus, ours, i, payload('a', i, SIZE)).await;
    }
    let second = read_to_end(&mut cursor).await;
    assert_batches(&second, 'a', 201..231, SIZE);

    // The interleaved attempt: only its own batches, in order.
    let mut cursor = bus.log_cursor(other, 1).await.expect("cursor");
    let theirs = read_to_end(&mut cursor).await;
    let numbers: Vec<_> = theirs.iter().map(|b| b.first_line).collect();
    assert_eq!(numbers, (1..=66u64).map(|k| Some(3 * k)).collect::<Vec<_>>(), "the other attempt's batches");
    assert!(theirs.iter().all(|b| b.payload.first() == Some(&b'b')), "no batch of another attempt");

    // A short log (read one request per batch only) and an empty one.
    let short = Uuid::new_v4();
    for i in 1..=3u64 {
        publish(&bus, short, i, payload('c', i, 10)).await;
    }
    let mut cursor = bus.log_cursor(short, 1).await.expect("cursor");
    assert_batches(&read_to_end(&mut cursor).await, 'c', 1..4, 10);
    let mut cursor = bus.log_cursor(Uuid::new_v4(), 1).await.expect("cursor");
    assert!(read_to_end(&mut cursor).await.is_empty(), "an attempt that published nothing");

    bus.purge_log(ours, 1).await.expect("purge");
    bus.purge_log(other, 1).await.expect("purge");
    bus.purge_log(short, 1).await.expect("purge");
}

/// Around the switch from single reads to a consumer: a cursor that ended right at it
/// (8 batches read one request each) and is read on while batches keep arriving, one
/// at a time as a slow job prints them, sees each one; the live log of a job that
/// prints a line a second is read this way by every follower and the archive.
#[tokio::test(flavor = "multi_thread")]
async fn a_log_read_at_the_switch_to_streaming_sees_every_later_batch() {
    let bus = bus().await;
    let run = Uuid::new_v4();
    for i in 1..=8u64 {
        publish(&bus, run, i, payload('d', i, 10)).await;
    }
    let mut cursor = bus.log_cursor(run, 1).await.expect("cursor");
    assert_batches(&read_to_end(&mut cursor).await, 'd', 1..9, 10);
    for i in 9..=30u64 {
        publish(&bus, run, i, payload('d', i, 10)).await;
        let batches = read_to_end(&mut cursor).await;
        assert_batches(&batches, 'd', i..i + 1, 10);
    }
    let mut whole = bus.log_cursor(run, 1).await.expect("cursor");
    assert_batches(&read_to_end(&mut whole).await, 'd', 1..31, 10);
    bus.purge_log(run, 1).await.expect("purge");
}

/// The deployment's names without a prefix.
fn names() -> shared::subjects::Subjects {
    shared::subjects::Subjects::default()
}

/// The dev server's TLS (`NATS_TLS_CA` of env.sh); the URL carries the control plane's user.
fn dev_nats() -> shared::nats_settings::NatsSettings {
    let _ = rustls::crypto::ring::default_provider().install_default();
    shared::nats_settings::NatsSettings {
        tls_ca: std::env::var_os("NATS_TLS_CA").map(std::path::PathBuf::from),
        allow_plaintext: true,
        ..Default::default()
    }
}
