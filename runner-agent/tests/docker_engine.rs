//! `runner_agent::docker` against the real Docker engine (`scripts/dev-deps.sh up`).
//!
//! These tests fail, never skip, when the engine is unreachable: a skipped suite would hide
//! exactly the breakage it exists to catch. Every container carries a per-test label, and a
//! guard removes all containers with that label even when an assertion panics.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::StreamExt;
use runner_agent::docker::{BindMount, ContainerSpec, Docker, Error, LogDriver, Output, OutputStream};
use tokio::sync::mpsc;

const TEST_LABEL: &str = "fastflow.test";

fn busybox() -> String {
    std::env::var("FASTFLOW_BUSYBOX_IMAGE").unwrap_or_else(|_| "fastflow-busybox:latest".into())
}

async fn engine() -> Docker {
    let result = match Docker::connect().await {
        Ok(docker) => docker.ping().await.map(|()| docker),
        Err(err) => Err(err),
    };
    result.unwrap_or_else(|err| {
        panic!(
            "Docker engine not reachable (DOCKER_HOST or /var/run/docker.sock): {err}. \
             Start it with `scripts/dev-deps.sh up`."
        )
    })
}

/// Removes every container of one test when dropped, also while unwinding from a panic.
/// It runs on its own thread and runtime because `Drop` cannot await.
struct Cleanup {
    run: String,
}

impl Cleanup {
    fn new() -> Cleanup {
        Cleanup { run: uuid::Uuid::new_v4().to_string() }
    }

    /// A spec labelled for this cleanup, named uniquely.
    fn spec(&self, command: &[&str]) -> ContainerSpec {
        ContainerSpec {
            name: format!("fastflow-test-{}", uuid::Uuid::new_v4()),
            image: busybox(),
            command: command.iter().map(|s| s.to_string()).collect(),
            labels: HashMap::from([(TEST_LABEL.to_owned(), self.run.clone())]),
            ..Default::default()
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let run = self.run.clone();
        let cleaned = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("cleanup runtime");
            runtime.block_on(async {
                let docker = Docker::connect().await.expect("connect for cleanup");
                for id in docker.containers_with_label(TEST_LABEL, &run).await.expect("list") {
                    docker.remove(&id).await.expect("remove");
                }
            });
        })
        .join();
        if cleaned.is_err() {
            eprintln!("cleanup of containers labelled {TEST_LABEL}={} failed", self.run);
        }
    }
}

/// Reads the output to its end, stdout and stderr apart.
async fn collect(mut output: OutputStream) -> (Vec<u8>, Vec<u8>) {
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    while let Some(chunk) = output.next().await {
        match chunk.expect("output stream") {
            Output::Stdout(bytes) => stdout.extend_from_slice(&bytes),
            Output::Stderr(bytes) => stderr.extend_from_slice(&bytes),
        }
    }
    (stdout, stderr)
}

/// Deterministic bytes covering all 256 values (xorshift), so a mangled byte is noticed.
fn binary_blob(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// A host directory for bind mounts, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let path = std::env::temp_dir().join(format!("fastflow-docker-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn output_is_byte_exact_per_stream_and_exit_code_is_reported() {
    let docker = engine().await;
    let cleanup = Cleanup::new();
    let dir = TempDir::new();
    let blob = binary_blob(5_000_000);
    std::fs::write(dir.0.join("blob.bin"), &blob).expect("write blob");

    let script = "cat /data/blob.bin; echo 'to stderr' >&2; \
                  printf 'last line without newline'; printf 'err tail' >&2; exit 7";
    let mut spec = cleanup.spec(&["sh", "-c", script]);
    spec.mounts.push(BindMount { host_path: dir.0.clone(), container_path: "/data".into(), read_only: true });
    let started = docker.start(&spec).await.expect("start");
    let (stdout, stderr) = collect(started.output).await;
    let code = docker.wait(&started.container_id).await.expect("wait");

    let mut expected = blob;
    expected.extend_from_slice(b"last line without newline");
    assert_eq!(stdout.len(), expected.len(), "stdout length");
    assert!(stdout == expected, "stdout differs from the 5 MB blob + tail");
    assert_eq!(String::from_utf8_lossy(&stderr), "to stderr\nerr tail");
    assert_eq!(code, 7);
}

/// `docker inspect` of one field, through the CLI: the runner's Docker module has no
/// reason to read a container's log configuration back.
fn inspect_field(container_id: &str, template: &str) -> String {
    let out = std::process::Command::new("docker")
        .args(["inspect", "--format", template, container_id])
        .output()
        .expect("run docker inspect");
    assert!(out.status.success(), "docker inspect: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The engine's copy of the output is what a restarted runner re-reads (`logs`): with the
/// default `local` driver it must be configured not to rotate and give back every byte.
#[tokio::test]
async fn engine_log_holds_the_whole_output_with_either_log_driver() {
    let docker = engine().await;
    let cleanup = Cleanup::new();
    let dir = TempDir::new();
    // Binary with newlines at random places: `local` stores raw bytes, so even output that
    // is not UTF-8 comes back unchanged.
    let blob = binary_blob(3_000_000);
    std::fs::write(dir.0.join("blob.bin"), &blob).expect("write blob");
    let text: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
    std::fs::write(dir.0.join("text.txt"), &text).expect("write text");

    for (driver, file, expected) in [
        (LogDriver::Local, "blob.bin", blob.clone()),
        (LogDriver::EngineDefault, "text.txt", text.clone().into_bytes()),
    ] {
        let mut spec = cleanup.spec(&["sh", "-c", &format!("cat /data/{file}; echo to-stderr >&2")]);
        spec.mounts.push(BindMount { host_path: dir.0.clone(), container_path: "/data".into(), read_only: true });
        spec.log_driver = driver;
        let started = docker.start(&spec).await.expect("start");
        let (attached, _) = collect(started.output).await;
        assert_eq!(docker.wait(&started.container_id).await.expect("wait"), 0);
        assert!(attached == expected, "{driver:?}: attached stdout differs");

        let (logged, logged_err) = collect(docker.logs(&started.container_id, false)).await;
        assert_eq!(logged.len(), expected.len(), "{driver:?}: length of the engine's log");
        assert!(logged == expected, "{driver:?}: the engine's log differs from the output");
        assert_eq!(String::from_utf8_lossy(&logged_err), "to-stderr\n");

        let config = inspect_field(
            &started.container_id,
            "{{.HostConfig.LogConfig.Type}} {{json .HostConfig.LogConfig.Config}}",
        );
        match driver {
            LogDriver::Local => {
                assert!(config.starts_with("local "), "{config}");
                for option in [r#""max-file":"1""#, r#""max-size":"1t""#, r#""compress":"false""#] {
                    assert!(config.contains(option), "{option} missing in {config}");
                }
            }
            LogDriver::EngineDefault => {
                let out = std::process::Command::new("docker")
                    .args(["info", "--format", "{{.LoggingDriver}}"])
                    .output()
                    .expect("docker info");
                let engine_default = String::from_utf8_lossy(&out.stdout).trim().to_owned();
                assert!(config.starts_with(&format!("{engine_default} ")), "{config} vs {engine_default}");
            }
        }
        docker.remove(&started.container_id).await.expect("remove");
    }
}

/// With a log cap, the engine's own copy of the output is bounded too (two files of
/// twice the cap + 1 MiB): a job that prints 24 MiB past a 1 MiB cap leaves a few MiB on
/// the host's disk, not 24.
#[tokio::test]
async fn a_log_cap_bounds_the_engines_copy_of_the_output() {
    let docker = engine().await;
    let cleanup = Cleanup::new();
    let mut spec = cleanup.spec(&["sh", "-c", "yes 'a line of output to fill the engine log' | head -c 25165824"]);
    spec.log_max_bytes = Some(1024 * 1024);
    let started = docker.start(&spec).await.expect("start");
    let (attached, _) = collect(started.output).await;
    assert_eq!(attached.len(), 25_165_824, "the live output is whole: only the engine's copy is bounded");
    assert_eq!(docker.wait(&started.container_id).await.expect("wait"), 0);

    let config =
        inspect_field(&started.container_id, "{{.HostConfig.LogConfig.Type}} {{json .HostConfig.LogConfig.Config}}");
    for option in [r#""max-file":"2""#, r#""max-size":"3072k""#] {
        assert!(config.contains(option), "{option} missing in {config}");
    }
    let root = std::process::Command::new("docker")
        .args(["info", "--format", "{{.DockerRootDir}}"])
        .output()
        .expect("docker info");
    let logs_dir = std::path::PathBuf::from(String::from_utf8_lossy(&root.stdout).trim())
        .join("containers")
        .join(&started.container_id)
        .join("local-logs");
    let on_disk: u64 = std::fs::read_dir(&logs_dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", logs_dir.display()))
        .filter_map(|entry| entry.ok()?.metadata().ok())
        .map(|meta| meta.len())
        .sum();
    assert!(on_disk > 0, "no engine log in {}", logs_dir.display());
    assert!(on_disk <= 7 * 1024 * 1024, "the engine kept {on_disk} bytes of a capped job's output (2 × 3 MiB)");
    docker.remove(&started.container_id).await.expect("remove");
}

#[tokio::test]
async fn container_exiting_at_once_still_delivers_its_output() {
    let docker = engine().await;
    let cleanup = Cleanup::new();
    // Several rounds: a lost first chunk would show up as an intermittent failure.
    for round in 0..5 {
        let mut spec = cleanup.spec(&["sh", "-c", r#"printf '%s|%s' "$GREETING" "$PWD""#]);
        spec.env.push(("GREETING".into(), format!("hello {round}")));
        spec.working_dir = Some("/tmp".into());
        let started = docker.start(&spec).await.expect("start");
        let (stdout, stderr) = collect(started.output).await;
        assert_eq!(String::from_utf8_lossy(&stdout), format!("hello {round}|/tmp"));
        assert!(stderr.is_empty(), "unexpected stderr: {stderr:?}");
        assert_eq!(docker.wait(&started.container_id).await.expect("wait"), 0);
        docker.remove(&started.container_id).await.expect("remove");
    }
}

/// Starts `command` and returns once it printed its first output, so traps are in place.
async fn start_and_await_ready(docker: &Docker, spec: &ContainerSpec) -> (String, OutputStream) {
    let mut started = docker.start(spec).await.expect("start");
    let first = tokio::time::timeout(Duration::from_secs(10), started.output.next()).await;
    assert!(matches!(first, Ok(Some(Ok(Output::Stdout(_))))), "no readiness line: {first:?}");
    (started.container_id, started.output)
}

#[tokio::test]
async fn stop_kills_a_container_ignoring_sigterm_after_the_grace_period() {
    let docker = engine().await;
    let cleanup = Cleanup::new();
    let spec = cleanup.spec(&["sh", "-c", r#"trap "" TERM; echo ready; sleep 300"#]);
    let (id, _output) = start_and_await_ready(&docker, &spec).await;

    let grace = Duration::from_secs(2);
    let begun = Instant::now();
    docker.stop(&id, grace).await.expect("stop");
    let code = tokio::time::timeout(Duration::from_secs(10), docker.wait(&id))
        .await
        .expect("wait returns after stop")
        .expect("wait");
    let took = begun.elapsed();

    assert!(took >= grace - Duration::from_millis(200), "SIGTERM was not ignored: {took:?}");
    assert!(took < grace + Duration::from_secs(5), "stop took {took:?}");
    assert_eq!(code, 137, "expected death by SIGKILL");
}

#[tokio::test]
async fn stop_ends_a_plain_sleep_promptly_via_sigterm() {
    let docker = engine().await;
    let cleanup = Cleanup::new();
    // Without an init as PID 1, `sleep` would ignore SIGTERM and wait for the SIGKILL.
    let spec = cleanup.spec(&["sh", "-c", "echo ready; exec sleep 300"]);
    let (id, _output) = start_and_await_ready(&docker, &spec).await;

    let begun = Instant::now();
    docker.stop(&id, Duration::from_secs(20)).await.expect("stop");
    let code = docker.wait(&id).await.expect("wait");

    assert!(begun.elapsed() < Duration::from_secs(5), "took {:?}", begun.elapsed());
    assert_eq!(code, 143, "expected death by SIGTERM");
    // Stopping what is already stopped is fine.
    docker.stop(&id, Duration::from_secs(1)).await.expect("second stop");
}

#[tokio::test]
async fn missing_image_is_reported_as_unavailable() {
    let docker = engine().await;
    let (tx, mut rx) = mpsc::channel(64);
    let image = "fastflow-does-not-exist:latest";

    let err = docker.ensure_image(image, &tx).await.expect_err("pull must fail");
    drop(tx);
    let mut lines = Vec::new();
    while let Some(line) = rx.recv().await {
        lines.push(line);
    }

    let Error::ImageUnavailable { image: reported, message } = &err else {
        panic!("expected ImageUnavailable, got {err:?}");
    };
    assert_eq!(reported, image);
    assert!(!message.is_empty());
    assert!(err.to_string().contains(image), "message lacks the image: {err}");
    assert!(!lines.is_empty(), "no progress or error line was sent");
    eprintln!("reported: {err}\nprogress lines: {lines:?}");
}

#[tokio::test]
async fn local_image_is_ensured_without_pulling() {
    let docker = engine().await;
    let (tx, mut rx) = mpsc::channel(64);
    docker.ensure_image(&busybox(), &tx).await.expect("local image");
    drop(tx);
    assert_eq!(rx.recv().await, None, "a local image must not produce pull progress");
}

#[tokio::test]
async fn labelled_containers_are_found_and_removed() {
    let docker = engine().await;
    let cleanup = Cleanup::new();
    let mut spec = cleanup.spec(&["sleep", "300"]);
    spec.labels.insert("fastflow.role".into(), "labels-test".into());
    let started = docker.start(&spec).await.expect("start");
    let id = started.container_id;

    let found = docker.containers_with_label(TEST_LABEL, &cleanup.run).await.expect("list");
    assert_eq!(found, vec![id.clone()]);
    let by_role = docker.containers_with_label("fastflow.role", "labels-test").await;
    assert!(by_role.expect("list").contains(&id));
    let other = docker.containers_with_label(TEST_LABEL, "no-such-run").await.expect("list");
    assert!(other.is_empty());

    docker.remove(&id).await.expect("remove a running container");
    let left = docker.containers_with_label(TEST_LABEL, &cleanup.run).await.expect("list");
    assert!(left.is_empty(), "still there: {left:?}");
    docker.remove(&id).await.expect("removing twice is fine");
    docker.stop(&id, Duration::from_secs(1)).await.expect("stopping a removed one is fine");
    assert!(matches!(docker.wait(&id).await, Err(Error::NotFound(_))));
}

#[tokio::test]
async fn bad_mount_is_an_invalid_spec_and_leaves_nothing_behind() {
    let docker = engine().await;
    let cleanup = Cleanup::new();
    let mut spec = cleanup.spec(&["true"]);
    spec.mounts.push(BindMount {
        host_path: PathBuf::from("/nonexistent/fastflow/path"),
        container_path: "/data".into(),
        read_only: false,
    });
    let err = docker.start(&spec).await.err().expect("start must fail");
    assert!(matches!(err, Error::InvalidSpec { .. }), "got {err:?}");
    let left = docker.containers_with_label(TEST_LABEL, &cleanup.run).await.expect("list");
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[tokio::test]
async fn background_removals_stay_bounded_and_finish_before_shutdown() {
    let docker = engine().await;
    let cleanup = Cleanup::new();
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(docker.start(&cleanup.spec(&["sleep", "300"])).await.expect("start").container_id);
    }
    let removals = runner_agent::removals::Removals::new(docker.clone(), 2);
    for (i, id) in ids.iter().enumerate() {
        removals.remove(id.clone()).await;
        // Whatever was handed over and still exists is being removed in the background:
        // never more than its room of 2 (beyond that, `remove` removes before returning).
        let listed = docker.containers_with_label(TEST_LABEL, &cleanup.run).await.expect("list");
        let pending: Vec<_> = ids[..=i].iter().filter(|id| listed.contains(id)).collect();
        assert!(pending.len() <= 2, "after {} removals, {} still pending: {pending:?}", i + 1, pending.len());
    }
    assert!(removals.finish(Duration::from_secs(60)).await, "background removals did not finish");
    assert_eq!(removals.in_background(), 0);
    let left = docker.containers_with_label(TEST_LABEL, &cleanup.run).await.expect("list");
    assert!(left.is_empty(), "containers left after finish: {left:?}");
}
