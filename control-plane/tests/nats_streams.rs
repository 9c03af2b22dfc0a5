//! The NATS streams' limits (`bus::StreamBounds`) against a private nats-server
//! (`NATS_SERVER_BIN`, as `scripts/dev-deps.sh up` installs it): streams made before
//! with other limits are updated at connect, and a live log publish past the byte
//! limit is refused at the publisher while what is stored stays. Fails, never skips,
//! without the binary.

use async_nats::jetstream::{self, object_store, stream};
use bytes::Bytes;
use control_plane::bus::StreamBounds;
use control_plane::bus::nats::NatsBus;
use std::process::{Child, Command};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// A nats-server with JetStream in a temp dir, killed when dropped.
struct Server {
    child: Child,
    dir: std::path::PathBuf,
    url: String,
}

impl Server {
    async fn start() -> Server {
        let bin = std::env::var("NATS_SERVER_BIN").unwrap_or_else(|_| {
            panic!(
                "NATS_SERVER_BIN is not set: start the dev services with `scripts/dev-deps.sh up` and source its env.sh"
            )
        });
        let dir = std::env::temp_dir().join(format!("ff-nats-streams-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        let child = Command::new(&bin)
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(dir.join("store"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        let server = Server { child, dir, url: format!("nats://127.0.0.1:{port}") };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(client) = async_nats::connect(&server.url).await
                && jetstream::new(client).query_account().await.is_ok()
            {
                return server;
            }
            assert!(Instant::now() < deadline, "nats-server did not become ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn jetstream(&self) -> jetstream::Context {
        jetstream::new(async_nats::connect(&self.url).await.expect("connect"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const KIB: i64 = 1024;

fn bounds(logs_max_bytes: i64) -> StreamBounds {
    StreamBounds {
        jobs_max_bytes: 512 * KIB,
        jobs_max_age: Duration::from_secs(3600),
        logs_max_bytes,
        logs_max_age: Duration::from_secs(2 * 3600),
        code_max_bytes: 2048 * KIB,
        code_max_age: Duration::from_secs(3 * 3600),
    }
}

/// (max_bytes, max_age, discard) of one stream.
async fn limits(js: &jetstream::Context, name: &str) -> (i64, Duration, stream::DiscardPolicy) {
    let mut stream = js.get_stream(name).await.expect("the stream exists");
    let info = stream.info().await.expect("stream info");
    (info.config.max_bytes, info.config.max_age, info.config.discard)
}

#[tokio::test]
async fn streams_made_with_other_limits_get_the_configured_ones_at_connect() {
    let server = Server::start().await;
    let js = server.jetstream().await;
    // As an older control plane made them: no byte limit, older messages dropped.
    for (name, subject) in [(names().jobs_stream(), "jobs.>"), (names().logs_stream(), "logs.>")] {
        js.create_stream(stream::Config {
            name: name.clone(),
            subjects: vec![subject.into()],
            retention: if name == names().jobs_stream() {
                stream::RetentionPolicy::WorkQueue
            } else {
                stream::RetentionPolicy::Limits
            },
            ..Default::default()
        })
        .await
        .expect("create an unbounded stream");
    }
    js.create_object_store(object_store::Config { bucket: names().code_bucket(), ..Default::default() })
        .await
        .expect("create an unbounded bucket");
    let code_stream = names().code_stream();
    assert_eq!(limits(&js, &names().logs_stream()).await.0, -1, "unbounded before");

    let wanted = bounds(64 * KIB);
    let _bus = NatsBus::connect(&server.url, &plaintext(), wanted).await.expect("connect");
    let new = stream::DiscardPolicy::New;
    assert_eq!(limits(&js, &names().jobs_stream()).await, (wanted.jobs_max_bytes, wanted.jobs_max_age, new));
    assert_eq!(limits(&js, &names().logs_stream()).await, (wanted.logs_max_bytes, wanted.logs_max_age, new));
    assert_eq!(limits(&js, &code_stream).await, (wanted.code_max_bytes, wanted.code_max_age, new));

    // Changed settings are applied by the next start (and by every sweep).
    let changed = bounds(128 * KIB);
    let bus = NatsBus::connect(&server.url, &plaintext(), changed).await.expect("connect again");
    assert_eq!(limits(&js, &names().logs_stream()).await.0, 128 * KIB);
    bus.ensure_streams().await.expect("a sweep's check with nothing to change");
    assert_eq!(limits(&js, &names().logs_stream()).await.0, 128 * KIB);
}

#[tokio::test]
async fn a_live_log_publish_past_the_byte_limit_is_refused_and_nothing_stored_is_dropped() {
    let server = Server::start().await;
    let bus = NatsBus::connect(&server.url, &plaintext(), bounds(64 * KIB)).await.expect("connect");
    let js = jetstream::new(bus.client().clone());
    let subject = names().log_subject(Uuid::new_v4(), 1, "runner-1");
    let batch = Bytes::from(vec![b'x'; 8 * 1024]);
    let mut stored = 0;
    let refusal = loop {
        let result = match js.publish(subject.clone(), batch.clone()).await {
            Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match result {
            Ok(()) => stored += 1,
            Err(e) => break e,
        }
        assert!(stored < 32, "{stored} batches of 8 KiB stored under a 64 KiB limit");
    };
    assert!(stored >= 4, "only {stored} batches stored before the refusal: {refusal}");
    assert!(refusal.to_lowercase().contains("maximum bytes"), "the publisher is told why: {refusal}");
    let mut stream = js.get_stream(names().logs_stream()).await.expect("logs stream");
    let state = stream.info().await.expect("info").state.clone();
    assert_eq!((state.messages, state.first_sequence), (stored, 1), "every stored batch is kept, the first one too");
}

/// The deployment's names without a prefix.
fn names() -> shared::subjects::Subjects {
    shared::subjects::Subjects::default()
}

/// A private test server without TLS.
fn plaintext() -> shared::nats_settings::NatsSettings {
    shared::nats_settings::NatsSettings { allow_plaintext: true, ..Default::default() }
}
