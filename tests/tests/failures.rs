//! Failures of the parts around a run: NATS and Postgres restarting mid-run, a
//! control-plane replica dying under a log stream, a runner asked to drain, and
//! 1 GiB of output that must pass with bounded memory.
//!
//! Only the 1 GiB test runs in both modes (`in_both_modes!`); the others control
//! NATS, Postgres, runner processes or several replicas and stay distributed-only.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use sha2::{Digest as _, Sha256};
use tests::checks::assert_finished;
use tests::{ContainerCreations, Digest, TestEnv, TestEnvOptions, in_both_modes, poll_until};

const RUN: Duration = Duration::from_secs(120);
/// Time given to a (wrong) second container to show up before counting.
const SETTLE: Duration = Duration::from_secs(2);

/// `line 1\n` … `line {n}\n`: what the `counter` and `slow_counter` fixtures print.
fn numbered_lines(n: usize) -> String {
    (1..=n).map(|i| format!("line {i}\n")).collect()
}

/// Asserts `GET …/logs` and the archived log of a finished run are both exactly `expected`.
async fn assert_log_is(env: &TestEnv, run: &tests::Run, expected: &str) {
    let log = env.logs(&run.id).await;
    assert_eq!(String::from_utf8_lossy(&log), expected, "GET logs of run {} (attempt {})", run.id, run.attempt);
    let archive = env.archived_log(&run.id, run.attempt).await;
    assert_eq!(String::from_utf8_lossy(&archive), expected, "archived log of run {} (attempt {})", run.id, run.attempt);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_nats_restart_mid_run_keeps_every_line_once_and_the_one_container() {
    let mut env = TestEnv::start(TestEnvOptions::default()).await;
    let creations = ContainerCreations::start().await;
    let created = env.run_pipeline("slow_counter", &[]).await;
    env.wait_for_log(&created.id, "line 10\n", RUN).await;

    // Crash NATS (kill -9) and bring it back on the same port with its store, ~2 s later.
    env.kill_nats();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    env.restart_nats_keeping_store().await;
    let during = env.get_run(&created.id).await;
    assert_eq!(during.status, "running", "the run should still be running when NATS is back: {during:#?}");

    let run = env.wait_final(&created.id, RUN).await;
    assert_finished(&run, "success", None);
    assert_eq!(run.attempt, 1, "no retry should have been needed: {run:#?}");
    assert_log_is(&env, &run, &numbered_lines(60)).await;
    // Give a duplicate start time to show up before counting containers.
    assert_eq!(creations.count(&run.id, SETTLE).await, 1, "exactly one container for run {}", run.id);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_postgres_restart_mid_run_loses_nothing_and_later_runs_work() {
    let mut env = TestEnv::start(TestEnvOptions::default().private_postgres()).await;
    let creations = ContainerCreations::start().await;
    let created = env.run_pipeline("counter", &[]).await;
    env.wait_for_log(&created.id, "line 10\n", RUN).await;

    env.stop_postgres().await;
    let stopped_at = Instant::now();
    // While the database is down, /health says so.
    let health = env.cp(0).health().await;
    eprintln!(
        "/health with Postgres down ({:?} after the stop): {} {}",
        stopped_at.elapsed(),
        health.status,
        health.text
    );
    assert_eq!(health.status, StatusCode::SERVICE_UNAVAILABLE, "/health with Postgres down: {}", health.text);
    assert_eq!(health.body["status"], "unavailable", "/health with Postgres down: {}", health.text);
    let database = health.body["checks"]["database"].as_str().unwrap_or_default();
    assert!(database.starts_with("error"), "the database check should name the failure: {}", health.text);
    assert_eq!(health.body["checks"]["bus"], "ok", "{}", health.text);
    assert_eq!(health.body["checks"]["log_store"], "ok", "{}", health.text);
    tokio::time::sleep(Duration::from_secs(2).saturating_sub(stopped_at.elapsed())).await;
    env.start_postgres().await;
    eprintln!("Postgres was down for {:?}", stopped_at.elapsed());

    let run = env.wait_final(&created.id, RUN).await;
    assert_finished(&run, "success", None);
    assert_eq!(run.attempt, 1, "no retry should have been needed: {run:#?}");
    assert_log_is(&env, &run, &numbered_lines(60)).await;
    assert_eq!(creations.count(&run.id, SETTLE).await, 1, "exactly one container for run {}", run.id);

    // The control plane is whole again: healthy, and a new run goes through.
    let client = env.cp(0).clone();
    poll_until("/health to answer 200 after the restart", Duration::from_secs(30), Duration::from_millis(200), || {
        let client = client.clone();
        async move {
            let health = client.health().await;
            if health.status == StatusCode::OK { Ok(()) } else { Err(health.text) }
        }
    })
    .await;
    let mark = format!("after-restart-{}", uuid::Uuid::new_v4().simple());
    let second = env.run_pipeline("quick", &[("FASTFLOW_MARK", &mark)]).await;
    let second = env.wait_final(&second.id, RUN).await;
    assert_finished(&second, "success", None);
    assert_log_is(&env, &second, &format!("ran {mark}\n")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_log_stream_resumes_on_another_replica_when_its_replica_is_killed() {
    let mut env = TestEnv::start(TestEnvOptions::default().control_planes(2)).await;
    let created = env.run_pipeline("counter", &[]).await;

    let mut stream = env.cp(1).stream_logs(&created.id, None).await;
    let first = stream.next_logs(15, RUN).await;
    let last_id = first.last().map(|(id, _)| *id).expect("15 log events");
    let during = env.get_run(&created.id).await;
    assert_eq!(during.status, "running", "the run should still be running when replica 1 dies: {during:#?}");
    env.kill_control_plane(1);
    drop(stream);

    let rest = env.cp(0).stream_logs(&created.id, Some(last_id)).await.collect_until_end(RUN).await;
    assert!(!rest.logs.is_empty(), "replica 0 should have streamed the lines after {last_id}");
    let ids: Vec<u64> = first.iter().map(|(id, _)| *id).chain(rest.ids()).collect();
    let expected_ids: Vec<u64> = (1..=ids.len() as u64).collect();
    assert_eq!(ids, expected_ids, "ids from replica 1 then replica 0 (resumed after {last_id})");
    let lines: Vec<&str> = first
        .iter()
        .map(|(_, l)| l)
        .chain(rest.logs.iter().map(|(_, l)| l))
        .filter(|l| l.stream != "system")
        .map(|l| l.line.as_str())
        .collect();
    let expected: Vec<String> = (1..=60).map(|i| format!("line {i}")).collect();
    assert_eq!(lines, expected, "lines from replica 1 then replica 0 (resumed after {last_id})");
    assert_eq!(rest.end["status"], "success", "end: {}", rest.end);
}

#[tokio::test(flavor = "multi_thread")]
async fn one_sigterm_drains_a_runner_its_job_finishes_and_new_runs_go_elsewhere() {
    let mut env = TestEnv::start(TestEnvOptions::default()).await;
    let creations = ContainerCreations::start().await;
    let created = env.run_pipeline("five_seconds", &[]).await;
    env.wait_for_log(&created.id, "step 1 of 10\n", RUN).await;

    env.signal_runner(0, "TERM");
    // Let the runner handle the signal before the next run is offered.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mark = format!("after-drain-{}", uuid::Uuid::new_v4().simple());
    let later = env.run_pipeline("quick", &[("FASTFLOW_MARK", &mark)]).await;

    let run = env.wait_final(&created.id, RUN).await;
    assert_finished(&run, "success", None);
    let steps: String = (1..=10).map(|i| format!("step {i} of 10\n")).collect();
    assert_log_is(&env, &run, &steps).await;
    assert_eq!(run.runner_id.as_deref(), Some(env.runner_id(0)), "{run:#?}");
    let finished_at = Instant::now();

    let status = env.wait_runner_exit(0, Duration::from_secs(15)).await;
    eprintln!("drained runner exited {:?} after its job ended", finished_at.elapsed());
    assert_eq!(status.code(), Some(0), "the drained runner should exit with status 0, not {status}");
    // Containers are removed off the slot; a drained runner still waits for that.
    let left = env.docker_containers_with_label(&run.id).await;
    assert!(left.is_empty(), "the drained runner left the container of run {} behind: {left:?}", run.id);

    let waiting = env.get_run(&later.id).await;
    assert_eq!(
        (waiting.status.as_str(), waiting.runner_id.as_deref()),
        ("queued", None),
        "a run submitted after the SIGTERM must not be claimed by the draining runner: {waiting:#?}"
    );
    let second = env.start_runner().await;
    let started = Instant::now();
    let later = env.wait_final(&later.id, RUN).await;
    eprintln!("the run submitted during the drain finished {:?} after a new runner started", started.elapsed());
    assert_finished(&later, "success", None);
    assert_eq!(later.runner_id.as_deref(), Some(env.runner_id(second)), "{later:#?}");
    assert_log_is(&env, &later, &format!("ran {mark}\n")).await;
    assert_eq!(creations.count(&run.id, SETTLE).await, 1, "exactly one container for run {}", run.id);
    assert_eq!(creations.count(&later.id, Duration::ZERO).await, 1, "exactly one container for run {}", later.id);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_sigterm_cancels_the_running_job_and_the_runner_exits() {
    let mut env = TestEnv::start(TestEnvOptions::default()).await;
    let created = env.run_pipeline("sleeper", &[("SLEEP_SECONDS", "300")]).await;
    env.wait_for_log(&created.id, "started\n", RUN).await;

    env.signal_runner(0, "TERM");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(env.runner_exit_status(0).is_none(), "one SIGTERM must not stop a runner with a job running");
    let draining = env.get_run(&created.id).await;
    assert_eq!(draining.status, "running", "one SIGTERM must let the job run on: {draining:#?}");

    env.signal_runner(0, "TERM");
    let run = env.wait_final(&created.id, Duration::from_secs(60)).await;
    let status = env.wait_runner_exit(0, Duration::from_secs(30)).await;
    eprintln!("runner exited after the second SIGTERM: {status}");
    let log = String::from_utf8_lossy(&env.logs(&run.id).await).into_owned();
    assert!(log.starts_with("started\n") && !log.contains("\ndone"), "log of the stopped job: {log:?}");
    assert_eq!(status.code(), Some(0), "the runner should exit cleanly after stopping its job, not {status}");
    assert_finished(&run, "cancelled", Some("cancelled"));
}

/// Exactly what the `gibibyte` fixture prints: `yes 'some line of text' | head -c 1 GiB`.
const GIBIBYTE: u64 = 1 << 30;

fn gibibyte_digest() -> Digest {
    const LINE: &[u8] = b"some line of text\n";
    let chunk: Vec<u8> = LINE.iter().copied().cycle().take(LINE.len() * 58_000).collect(); // ~1 MB, whole lines
    let mut hasher = Sha256::new();
    let mut remaining = GIBIBYTE as usize;
    while remaining > 0 {
        let n = remaining.min(chunk.len());
        hasher.update(&chunk[..n]);
        remaining -= n;
    }
    Digest { len: GIBIBYTE, sha256: hex::encode(hasher.finalize()) }
}

/// VmRSS of a process in KiB, from /proc/<pid>/status; `None` once it is gone.
fn vm_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Samples the VmRSS of `processes` every 200 ms until stopped; keeps each maximum.
struct RssSampler {
    maxima: Arc<Mutex<BTreeMap<String, u64>>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl RssSampler {
    fn start(processes: Vec<(String, u32)>) -> Self {
        let maxima = Arc::new(Mutex::new(BTreeMap::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (m, s) = (maxima.clone(), stop.clone());
        let task = tokio::spawn(async move {
            while !s.load(Ordering::Relaxed) {
                for (name, pid) in &processes {
                    if let Some(kib) = vm_rss_kib(*pid) {
                        let mut maxima = m.lock().unwrap_or_else(|e| e.into_inner());
                        let max = maxima.entry(name.clone()).or_insert(0);
                        *max = (*max).max(kib);
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        Self { maxima, stop, task }
    }

    /// Stops sampling; the maximum VmRSS (KiB) seen of each process.
    async fn finish(self) -> BTreeMap<String, u64> {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        self.maxima.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

in_both_modes! {
    async fn a_gibibyte_of_output_is_archived_exactly_with_bounded_memory(options) {
        const BOUND_KIB: u64 = 256 * 1024;
        // Past the default log cap (100 MiB): the whole gibibyte is the point here.
        let env = TestEnv::start(options.control_plane_env("LOG_MAX_SIZE_MB", "0")).await;
        let expected = tokio::task::spawn_blocking(gibibyte_digest);
        // The single node runs its runner in-process: one process holds both.
        let processes = if env.is_single_node() {
            vec![("single node".to_string(), env.control_plane_pid(0))]
        } else {
            vec![
                ("runner-agent #0".to_string(), env.runner_pid(0)),
                ("control-plane #0".to_string(), env.control_plane_pid(0)),
            ]
        };
        let baseline: Vec<(String, Option<u64>)> =
            processes.iter().map(|(n, pid)| (n.clone(), vm_rss_kib(*pid))).collect();

        let sampler = RssSampler::start(processes.clone());
        let started = Instant::now();
        let created = env.run_pipeline("gibibyte", &[]).await;
        let run = env.wait_final(&created.id, Duration::from_secs(1500)).await;
        let run_took = started.elapsed();
        let during_run = sampler.finish().await;

        // Serving the whole log back must stream too.
        let sampler = RssSampler::start(processes.clone());
        let (status, served) = env.cp(0).get_logs_digest(&run.id).await;
        let during_get = sampler.finish().await;

        eprintln!("1 GiB run took {run_took:?}; VmRSS before the run (KiB): {baseline:?}");
        eprintln!("max VmRSS during the run (KiB): {during_run:?}");
        eprintln!("max VmRSS while serving GET …/logs (KiB): {during_get:?}");

        assert_finished(&run, "success", None);
        let expected = expected.await.expect("digest task panicked");
        let archived = env
            .s3_digest(&format!("runs/{}/{}.log", run.id, run.attempt))
            .await
            .unwrap_or_else(|| panic!("no archived log for run {}", run.id));
        assert_eq!(archived, expected, "the archived log of run {} is not the 1 GiB printed", run.id);
        assert_eq!(run.log_size_bytes, Some(GIBIBYTE), "{run:#?}");
        assert_eq!(status, StatusCode::OK);
        assert_eq!(served, expected, "GET …/logs of run {} is not the 1 GiB printed", run.id);
        for (phase, maxima) in [("during the run", &during_run), ("while serving GET …/logs", &during_get)] {
            for (name, kib) in maxima {
                assert!(*kib < BOUND_KIB, "{name} reached {} MiB of RSS {phase} (bound 256 MiB)", kib / 1024);
            }
            assert_eq!(maxima.len(), processes.len(), "every process should have been sampled {phase}: {maxima:?}");
        }
    }
}

/// Measured once with GNU coreutils: `yes 'some line of text' | head -c 1073741824 | sha256sum`.
const GIBIBYTE_SHELL_SHA256: &str = "d71feb18d036c619ab82da98486e24dc64f27f099ea2aff587597c1920cc5a64";

#[test]
fn the_expected_gibibyte_matches_what_the_shell_prints() {
    assert_eq!(gibibyte_digest(), Digest { len: GIBIBYTE, sha256: GIBIBYTE_SHELL_SHA256.to_string() });
}
