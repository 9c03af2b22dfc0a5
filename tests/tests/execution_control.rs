//! Execution control: container hardening and resource limits, timeouts (runner and
//! control plane), force cancel, concurrency limits (reject and queue), and runner
//! self-fencing when it loses NATS.
//!
//! Tests in `in_both_modes!` run against the distributed deployment and the single
//! node; the others need several replicas or runners, or control runner or NATS
//! processes, and stay distributed-only.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, FixedOffset};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tests::checks::assert_finished;
use tests::{Run, TestEnv, TestEnvOptions, assert_error_shape, in_both_modes, poll_until};

const START: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(100);

/// Waits until the run printed `started` (its container is running).
async fn wait_started(env: &TestEnv, run_id: &str) {
    env.wait_for_log(run_id, "started\n", START).await;
}

/// The one container labelled with the run (waits for it to exist).
async fn container_of(env: &TestEnv, run_id: &str) -> String {
    poll_until(&format!("exactly one container labelled fastflow-run-id={run_id}"), START, POLL, || async move {
        let ids = env.docker_containers_with_label(run_id).await;
        if ids.len() == 1 { Ok(ids[0].clone()) } else { Err(format!("containers: {ids:?}")) }
    })
    .await
}

/// `docker inspect` of the running container of a run that printed `started`.
async fn inspect_running(env: &TestEnv, run_id: &str) -> Value {
    wait_started(env, run_id).await;
    let id = container_of(env, run_id).await;
    let inspect = env
        .docker_inspect(&id)
        .await
        .unwrap_or_else(|| panic!("container {id} of run {run_id} vanished while running"));
    assert_eq!(
        inspect["State"]["Running"], true,
        "container {id} of run {run_id} is not running: {:#}",
        inspect["State"]
    );
    inspect
}

/// Waits until no container of the run exists any more.
async fn wait_containers_gone(env: &TestEnv, run_id: &str, timeout: Duration) {
    poll_until(&format!("the containers of run {run_id} to be removed"), timeout, POLL, || async move {
        let ids = env.docker_containers_with_label(run_id).await;
        if ids.is_empty() { Ok(()) } else { Err(format!("still there: {ids:?}")) }
    })
    .await
}

fn ts(value: &str) -> DateTime<FixedOffset> {
    DateTime::parse_from_rfc3339(value).unwrap_or_else(|e| panic!("{value:?} is not RFC 3339: {e}"))
}

fn i64_of(value: &Value, what: &str) -> i64 {
    value.as_i64().unwrap_or_else(|| panic!("{what} is not an integer: {value}"))
}

fn assert_hardened(inspect: &Value, what: &str) {
    let host = &inspect["HostConfig"];
    assert_eq!(host["CapDrop"], json!(["ALL"]), "{what}: CapDrop: {:#}", host["CapDrop"]);
    let security = host["SecurityOpt"].as_array().cloned().unwrap_or_default();
    assert!(
        security.iter().any(|o| o == "no-new-privileges:true"),
        "{what}: SecurityOpt lacks no-new-privileges:true: {:#}",
        host["SecurityOpt"]
    );
    assert_eq!(host["Privileged"], false, "{what}: Privileged");
    assert_eq!(host["Init"], true, "{what}: Init");
    let cap_add = host["CapAdd"].as_array().cloned().unwrap_or_default();
    assert!(cap_add.is_empty(), "{what}: CapAdd should be empty by default: {:#}", host["CapAdd"]);

    let mounts = inspect["Mounts"].as_array().cloned().unwrap_or_default();
    let binds = host["Binds"].as_array().cloned().unwrap_or_default();
    let all = format!("Mounts {mounts:#?}, Binds {binds:#?}");
    assert!(!all.contains("docker.sock"), "{what}: the Docker socket is mounted: {all}");
    assert_eq!(mounts.len(), 1, "{what}: a busybox job should have exactly one mount (/app): {all}");
    let app = &mounts[0];
    assert_eq!(app["Destination"], "/app", "{what}: {all}");
    assert_eq!(app["RW"], false, "{what}: /app must be read-only: {all}");
}

/// Memory, NanoCpus, PidsLimit of a container.
fn limits(inspect: &Value) -> (Value, Value, Value) {
    let host = &inspect["HostConfig"];
    (host["Memory"].clone(), host["NanoCpus"].clone(), host["PidsLimit"].clone())
}

in_both_modes! {
    async fn job_containers_are_hardened_with_default_and_pipeline_limits(options) {
        let env = TestEnv::start(options).await;

        let plain = env.run_pipeline("sleeper", &[]).await;
        let limited = env.run_pipeline("limited", &[]).await;

        let inspect = inspect_running(&env, &plain.id).await;
        assert_hardened(&inspect, "sleeper (defaults)");
        let (memory, nano_cpus, pids) = limits(&inspect);
        assert_eq!(i64_of(&memory, "Memory"), 2 * 1024 * 1024 * 1024, "default memory limit is 2 GiB");
        assert_eq!(i64_of(&nano_cpus, "NanoCpus"), 2_000_000_000, "default CPU limit is 2 CPUs");
        assert_eq!(i64_of(&pids, "PidsLimit"), 1024, "default pids limit");
        // No swap on top of the memory limit.
        assert_eq!(inspect["HostConfig"]["MemorySwap"], memory, "MemorySwap should equal Memory");

        let inspect = inspect_running(&env, &limited.id).await;
        assert_hardened(&inspect, "limited ([resources])");
        let (memory, nano_cpus, pids) = limits(&inspect);
        assert_eq!(i64_of(&memory, "Memory"), 64 * 1024 * 1024, "[resources] memory_mb = 64");
        assert_eq!(i64_of(&nano_cpus, "NanoCpus"), 500_000_000, "[resources] cpus = 0.5");
        assert_eq!(i64_of(&pids, "PidsLimit"), 64, "[resources] pids = 64");

        for run in [&plain, &limited] {
            let response = env.cp(0).cancel_run_with_body(&run.id, &json!({"force": true})).await;
            response.expect(StatusCode::ACCEPTED);
        }
        for run in [&plain, &limited] {
            let run = env.wait_final(&run.id, START).await;
            assert_finished(&run, "cancelled", Some("cancelled"));
        }
    }
}

in_both_modes! {
    async fn control_plane_env_changes_the_default_limits(options) {
        // Changed values.
        {
            let env = TestEnv::start(
                options
                    .clone()
                    .control_plane_env("CONTAINER_MEMORY_MB", "512")
                    .control_plane_env("CONTAINER_CPUS", "1.5")
                    .control_plane_env("CONTAINER_PIDS_LIMIT", "200"),
            )
            .await;
            let plain = env.run_pipeline("sleeper", &[]).await;
            let limited = env.run_pipeline("limited", &[]).await;

            let inspect = inspect_running(&env, &plain.id).await;
            assert_hardened(&inspect, "sleeper (changed defaults)");
            let (memory, nano_cpus, pids) = limits(&inspect);
            assert_eq!(i64_of(&memory, "Memory"), 512 * 1024 * 1024, "CONTAINER_MEMORY_MB=512");
            assert_eq!(i64_of(&nano_cpus, "NanoCpus"), 1_500_000_000, "CONTAINER_CPUS=1.5");
            assert_eq!(i64_of(&pids, "PidsLimit"), 200, "CONTAINER_PIDS_LIMIT=200");

            // A pipeline's own [resources] still win over the configured defaults.
            let (memory, nano_cpus, pids) = limits(&inspect_running(&env, &limited.id).await);
            assert_eq!(
                (i64_of(&memory, "Memory"), i64_of(&nano_cpus, "NanoCpus"), i64_of(&pids, "PidsLimit")),
                (64 * 1024 * 1024, 500_000_000, 64),
                "[resources] of `limited` under changed defaults"
            );
        }
        // 0 leaves each limit to the runner's defaults: a job never runs unlimited. (The
        // single node's embedded runner reads the runner settings from the node's env.)
        {
            let runner_defaults =
                [("RUNNER_DEFAULT_MEMORY_MB", "300"), ("RUNNER_DEFAULT_CPU_MILLIS", "700"), ("RUNNER_DEFAULT_PIDS", "150")];
            let mut options = options
                .control_plane_env("CONTAINER_MEMORY_MB", "0")
                .control_plane_env("CONTAINER_CPUS", "0")
                .control_plane_env("CONTAINER_PIDS_LIMIT", "0");
            for (key, value) in runner_defaults {
                options = options.control_plane_env(key, value).runner_env(key, value);
            }
            let env = TestEnv::start(options).await;
            let plain = env.run_pipeline("sleeper", &[]).await;
            let inspect = inspect_running(&env, &plain.id).await;
            assert_hardened(&inspect, "sleeper (limits left to the runner)");
            let (memory, nano_cpus, pids) = limits(&inspect);
            assert_eq!(i64_of(&memory, "Memory"), 300 * 1024 * 1024, "CONTAINER_MEMORY_MB=0: RUNNER_DEFAULT_MEMORY_MB");
            assert_eq!(i64_of(&nano_cpus, "NanoCpus"), 700_000_000, "CONTAINER_CPUS=0: RUNNER_DEFAULT_CPU_MILLIS");
            assert_eq!(i64_of(&pids, "PidsLimit"), 150, "CONTAINER_PIDS_LIMIT=0: RUNNER_DEFAULT_PIDS");
        }
    }
}

in_both_modes! {
    async fn a_fork_bomb_and_a_memory_hog_fail_and_the_runner_stays_healthy(options) {
        let env = TestEnv::start(options).await;

        let bomb = env.run_pipeline("fork_bomb", &[]).await;
        let hog = env.run_pipeline("memory_hog", &[]).await;

        let hog = env.wait_final(&hog.id, Duration::from_secs(90)).await;
        assert_finished(&hog, "failed", Some("exit_code"));
        assert_eq!(hog.exit_code, Some(137), "the OOM-killed memory hog should exit 137 (SIGKILL): {hog:#?}");

        let bomb = env.wait_final(&bomb.id, Duration::from_secs(90)).await;
        assert_eq!(bomb.status, "failed", "the fork bomb should fail: {bomb:#?}");
        assert!(
            matches!(bomb.failure_reason.as_deref(), Some("timeout" | "exit_code")),
            "the fork bomb should fail by timeout or exit code: {bomb:#?}"
        );
        eprintln!("fork bomb ended {:?} / exit code {:?}", bomb.failure_reason, bomb.exit_code);

        for run in [&hog, &bomb] {
            wait_containers_gone(&env, &run.id, Duration::from_secs(30)).await;
        }

        // The same runner still runs jobs.
        let mark = format!("after-{}", uuid::Uuid::new_v4().simple());
        let quick = env.run_pipeline("quick", &[("FASTFLOW_MARK", &mark)]).await;
        let quick = env.wait_final(&quick.id, START).await;
        assert_finished(&quick, "success", None);
        assert_eq!(quick.runner_id.as_deref(), Some(env.runner_id(0)), "{quick:#?}");
        let log = env.logs(&quick.id).await;
        assert_eq!(String::from_utf8_lossy(&log), format!("ran {mark}\n"));
        let runners = env.cp(0).list_runners().await;
        let listed = runners.expect(StatusCode::OK).as_array().cloned().unwrap_or_default();
        assert!(
            listed.iter().any(|r| r["id"] == env.runner_id(0)),
            "the runner should still heartbeat: {}",
            runners.text
        );
    }
}

in_both_modes! {
    async fn a_job_ignoring_sigterm_is_killed_at_its_timeout(options) {
        let env = TestEnv::start(options.runner_env("RUNNER_STOP_GRACE_SECONDS", "2")).await;

        let created = env.run_pipeline("ignores_term", &[]).await;
        wait_started(&env, &created.id).await;
        let started = Instant::now();
        let run = env.wait_final(&created.id, Duration::from_secs(15)).await;
        assert_finished(&run, "failed", Some("timeout"));
        assert!(started.elapsed() < Duration::from_secs(15), "took {:?}", started.elapsed());

        let log = String::from_utf8_lossy(&env.logs(&run.id).await).into_owned();
        assert!(
            log.contains("fastflow: timeout reached; stopping the container"),
            "the log should carry the timeout system line: {log:?}"
        );
        wait_containers_gone(&env, &run.id, Duration::from_secs(15)).await;
    }
}

in_both_modes! {
    async fn container_timeout_applies_to_pipelines_without_their_own(options) {
        let env = TestEnv::start(
            options.control_plane_env("CONTAINER_TIMEOUT", "3").runner_env("RUNNER_STOP_GRACE_SECONDS", "2"),
        )
        .await;

        let created = env.run_pipeline("ignores_term_no_timeout", &[]).await;
        wait_started(&env, &created.id).await;
        let run = env.wait_final(&created.id, Duration::from_secs(20)).await;
        assert_finished(&run, "failed", Some("timeout"));
        let log = String::from_utf8_lossy(&env.logs(&run.id).await).into_owned();
        assert!(log.contains("fastflow: timeout reached; stopping the container"), "log: {log:?}");
        wait_containers_gone(&env, &run.id, Duration::from_secs(15)).await;
    }
}

in_both_modes! {
    async fn force_cancel_kills_a_job_ignoring_sigterm_without_waiting_the_grace(options) {
        let env = TestEnv::start(options.runner_env("RUNNER_STOP_GRACE_SECONDS", "30")).await;

        let created = env.run_pipeline("ignores_term_no_timeout", &[]).await;
        wait_started(&env, &created.id).await;

        // A malformed body is refused and changes nothing.
        let bad = env.cp(0).cancel_run_with_body(&created.id, &json!({"force": "yes"})).await;
        assert_error_shape(&bad, StatusCode::BAD_REQUEST);
        assert_eq!(bad.body["error"]["details"]["field"], "body", "{}", bad.text);
        assert_eq!(env.get_run(&created.id).await.status, "running");

        let cancel_sent = Instant::now();
        let accepted = env.cp(0).cancel_run_with_body(&created.id, &json!({"force": true})).await;
        let accepted = accepted.run(StatusCode::ACCEPTED);
        assert_eq!(accepted.id, created.id);
        let run = env.wait_final(&created.id, Duration::from_secs(12)).await;
        let took = cancel_sent.elapsed();
        assert_finished(&run, "cancelled", Some("cancelled"));
        assert!(took < Duration::from_secs(12), "force cancel took {took:?} (runner grace is 30 s)");
        wait_containers_gone(&env, &run.id, Duration::from_secs(15)).await;
    }
}

in_both_modes! {
    async fn reject_policy_answers_429_while_the_limit_is_reached(options) {
        let env = TestEnv::start(
            options.control_plane_env("CONCURRENCY_POLICY", "reject").control_plane_env("MAX_CONCURRENT_RUNS", "1"),
        )
        .await;

        let first = env.run_pipeline("sleeper", &[]).await;
        env.wait_for_status(&first.id, |r| r.status == "running", START).await;

        let refused = env.cp(0).create_run("quick", None).await;
        assert_error_shape(&refused, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            refused.headers.get("retry-after").and_then(|v| v.to_str().ok()),
            Some("5"),
            "Retry-After header; headers: {:?}",
            refused.headers
        );
        assert_eq!(refused.body["error"]["type"], "TooManyRuns", "{}", refused.text);
        assert_eq!(refused.body["error"]["details"]["limit"], "MAX_CONCURRENT_RUNS", "{}", refused.text);

        // The refused request created no run.
        let list = env.cp(0).list_runs(&[]).await;
        let items = list.expect(StatusCode::OK)["items"].as_array().cloned().unwrap_or_default();
        assert_eq!(items.len(), 1, "only the first run should exist: {}", list.text);

        // Once the active run is gone, runs are accepted again.
        env.cp(0).cancel_run_with_body(&first.id, &json!({"force": true})).await.expect(StatusCode::ACCEPTED);
        env.wait_final(&first.id, START).await;
        let again = env.run_pipeline("quick", &[]).await;
        let again = env.wait_final(&again.id, START).await;
        assert_finished(&again, "success", None);
    }
}

/// What polling `GET /api/v1/runs` saw while runs were queued and running.
#[derive(Default, Debug)]
struct Observed {
    /// Most runs of the watched pipelines running in one snapshot, and that snapshot.
    max_running: usize,
    max_running_snapshot: String,
    /// waiting_reason values seen per run.
    waiting_reasons: BTreeMap<String, BTreeSet<String>>,
    /// Runs of other pipelines seen running at the same time as a watched run.
    ran_beside: BTreeSet<String>,
}

/// Polls the run list until every run of `ids` is final; counts how many runs of
/// `watched` (by id) are running in each snapshot.
async fn observe_until_final(env: &TestEnv, ids: &[String], watched: &BTreeSet<String>) -> Observed {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut observed = Observed::default();
    loop {
        let list = env.cp(0).list_runs(&[("limit", "100")]).await;
        let items = list.expect(StatusCode::OK)["items"].as_array().cloned().unwrap_or_default();
        let runs: Vec<(Run, Value)> = items.iter().map(|v| (Run::from_json(v), v.clone())).collect();
        let running: Vec<&Run> =
            runs.iter().map(|(r, _)| r).filter(|r| r.status == "running" && watched.contains(&r.id)).collect();
        if running.len() > observed.max_running {
            observed.max_running = running.len();
            observed.max_running_snapshot = list.text.clone();
        }
        if !running.is_empty() {
            for (r, _) in &runs {
                if r.status == "running" && !watched.contains(&r.id) {
                    observed.ran_beside.insert(r.id.clone());
                }
            }
        }
        for (r, v) in &runs {
            if let Some(reason) = v.get("waiting_reason").and_then(Value::as_str) {
                observed.waiting_reasons.entry(r.id.clone()).or_default().insert(reason.to_string());
            }
        }
        let finals = runs.iter().filter(|(r, _)| ids.contains(&r.id) && r.is_final()).count();
        if finals == ids.len() {
            return observed;
        }
        assert!(Instant::now() < deadline, "runs did not all finish within 120 s; last list: {}", list.text);
        tokio::time::sleep(POLL).await;
    }
}

/// The runs ran one after another: intervals do not overlap, each starts within
/// `max_gap` of the previous one's end.
fn assert_serial(runs: &[Run], max_gap: Duration) {
    let mut intervals: Vec<(DateTime<FixedOffset>, DateTime<FixedOffset>, &Run)> = runs
        .iter()
        .map(|r| {
            let started = ts(r.started_at.as_deref().unwrap_or_else(|| panic!("no started_at: {r:#?}")));
            let finished = ts(r.finished_at.as_deref().unwrap_or_else(|| panic!("no finished_at: {r:#?}")));
            (started, finished, r)
        })
        .collect();
    intervals.sort_by_key(|(started, _, _)| *started);
    let summary: Vec<String> =
        intervals.iter().map(|(s, f, r)| format!("{} {} .. {}", r.id, s.to_rfc3339(), f.to_rfc3339())).collect();
    for pair in intervals.windows(2) {
        let (_, prev_end, prev) = &pair[0];
        let (next_start, _, next) = &pair[1];
        assert!(
            next_start >= prev_end,
            "run {} started before run {} finished; intervals:\n{}",
            next.id,
            prev.id,
            summary.join("\n")
        );
        let gap = (*next_start - *prev_end).to_std().unwrap_or_default();
        eprintln!("run {} started {gap:?} after run {} finished", next.id, prev.id);
        assert!(
            gap < max_gap,
            "run {} started {gap:?} after run {} finished (expected < {max_gap:?}); intervals:\n{}",
            next.id,
            prev.id,
            summary.join("\n")
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn max_concurrent_runs_queues_runs_across_replicas() {
    let env = TestEnv::start(
        TestEnvOptions::default().control_planes(2).runners(2).control_plane_env("MAX_CONCURRENT_RUNS", "1"),
    )
    .await;

    let mut ids = Vec::new();
    for i in 0..4 {
        let run = env.cp(i % 2).create_run("two_seconds", None).await.run(StatusCode::CREATED);
        ids.push(run.id);
    }
    let watched: BTreeSet<String> = ids.iter().cloned().collect();
    let observed = observe_until_final(&env, &ids, &watched).await;
    assert!(
        observed.max_running <= 1,
        "MAX_CONCURRENT_RUNS=1 but {} runs were running at once: {}",
        observed.max_running,
        observed.max_running_snapshot
    );
    let waited: Vec<&String> = observed
        .waiting_reasons
        .iter()
        .filter(|(_, reasons)| reasons.contains("max_concurrent_runs"))
        .map(|(id, _)| id)
        .collect();
    assert!(!waited.is_empty(), "no queued run ever showed waiting_reason max_concurrent_runs: {observed:#?}");

    let mut runs = Vec::new();
    for id in &ids {
        let run = env.get_run(id).await;
        assert_finished(&run, "success", None);
        runs.push(run);
    }
    assert_serial(&runs, Duration::from_secs(3));
}

in_both_modes! {
    async fn pipeline_max_concurrent_queues_only_that_pipeline(options) {
        let env = TestEnv::start(options).await;

        let mut ids = Vec::new();
        for _ in 0..3 {
            ids.push(env.run_pipeline("one_at_a_time", &[]).await.id);
        }
        let other = env.run_pipeline("two_seconds", &[]).await;
        let watched: BTreeSet<String> = ids.iter().cloned().collect();
        let mut all = ids.clone();
        all.push(other.id.clone());
        let observed = observe_until_final(&env, &all, &watched).await;

        assert!(
            observed.max_running <= 1,
            "max_concurrent = 1 but {} runs of one_at_a_time were running at once: {}",
            observed.max_running,
            observed.max_running_snapshot
        );
        assert!(
            observed.waiting_reasons.values().any(|reasons| reasons.contains("pipeline_max_concurrent")),
            "no queued run ever showed waiting_reason pipeline_max_concurrent: {observed:#?}"
        );
        assert!(
            observed.ran_beside.contains(&other.id),
            "the other pipeline's run should run beside one_at_a_time, not wait for it: {observed:#?}"
        );
        assert!(
            !observed.waiting_reasons.contains_key(&other.id),
            "the other pipeline's run should not have waited: {observed:#?}"
        );

        let mut runs = Vec::new();
        for id in &ids {
            let run = env.get_run(id).await;
            assert_finished(&run, "success", None);
            runs.push(run);
        }
        assert_serial(&runs, Duration::from_secs(3));
        assert_finished(&env.get_run(&other.id).await, "success", None);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_control_plane_ends_a_timed_out_run_whose_runner_is_frozen() {
    let mut env = TestEnv::start(
        TestEnvOptions::default()
            .control_plane_env("RUN_LEASE_SECONDS", "300")
            .control_plane_env("RUNNER_STOP_GRACE_SECONDS", "1"),
    )
    .await;

    let created = env.run_pipeline("short_timeout", &[]).await;
    // Freeze as soon as the run is claimed, before the runner's own 2 s timer can fire.
    env.wait_for_status(&created.id, |r| r.status == "running", START).await;
    env.freeze_runner(0);
    let frozen_at = Instant::now();

    let run = env.wait_final(&created.id, Duration::from_secs(45)).await;
    assert_finished(&run, "failed", Some("timeout"));
    let message = run.error_message.clone().unwrap_or_default();
    assert!(
        message.contains("control plane"),
        "the error message should say the control plane ended the run: {run:#?}"
    );
    eprintln!("control plane ended the run {:?} after the freeze", frozen_at.elapsed());

    // Thawed, the runner stops its job; the run keeps the control plane's verdict.
    env.thaw_runner(0);
    wait_containers_gone(&env, &run.id, Duration::from_secs(60)).await;
    let after = env.get_run(&run.id).await;
    assert_eq!(
        (after.status.as_str(), after.failure_reason.as_deref(), after.error_message.as_deref()),
        ("failed", Some("timeout"), Some(message.as_str())),
        "the run changed after the runner came back: {after:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_runner_cut_off_from_nats_stops_its_jobs() {
    let mut env = TestEnv::start(
        TestEnvOptions::default()
            .runner_env("RUNNER_SELF_FENCE_SECONDS", "6")
            .runner_env("HEARTBEAT_INTERVAL_SECONDS", "1"),
    )
    .await;

    let created = env.run_pipeline("sleeper", &[("SLEEP_SECONDS", "300")]).await;
    let inspect = inspect_running(&env, &created.id).await;
    let container = inspect["Id"].as_str().expect("container Id").to_string();

    env.kill_nats();
    let killed_at = Instant::now();
    poll_until(
        &format!("container {container} to stop after NATS went away (self-fence after 6 s)"),
        Duration::from_secs(20),
        Duration::from_millis(200),
        || {
            let container = container.clone();
            let env = &env;
            async move {
                match env.docker_inspect(&container).await {
                    None => Ok(()),
                    Some(inspect) if inspect["State"]["Running"] == false => Ok(()),
                    Some(inspect) => Err(format!("still running: {}", inspect["State"])),
                }
            }
        },
    )
    .await;
    eprintln!("the job's container stopped {:?} after NATS went away", killed_at.elapsed());
}

/// Port of the never-answering "registry" named by the `stalled_pull` fixture.
const STALLED_REGISTRY: &str = "127.0.0.1:45999";

#[tokio::test(flavor = "multi_thread")]
async fn a_run_cancelled_while_its_image_pull_hangs_ends_cancelled_without_waiting_for_the_pull() {
    // A registry that accepts connections and never answers: the engine's pull waits on it
    // (about 25 s before it gives up), so the run sits in its setup.
    let registry = tokio::net::TcpListener::bind(STALLED_REGISTRY).await.expect("bind the stalled registry port");
    let (accepted_tx, mut accepted) = tokio::sync::mpsc::unbounded_channel();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = registry.accept().await {
            held.push(conn);
            let _ = accepted_tx.send(());
        }
    });
    let env = TestEnv::start(TestEnvOptions::default()).await;

    let created = env.run_pipeline("stalled_pull", &[]).await;
    tokio::time::timeout(START, accepted.recv())
        .await
        .expect("the engine never connected to the stalled registry")
        .expect("registry listener ended");
    assert_eq!(env.get_run(&created.id).await.status, "running", "the run is claimed and in its setup");

    env.cp(0).cancel_run(&created.id).await.expect(StatusCode::ACCEPTED);
    let run = env.wait_final(&created.id, START).await;
    assert_finished(&run, "cancelled", Some("cancelled"));
    let log = String::from_utf8_lossy(&env.logs(&run.id).await).into_owned();
    // Ended by the cancel, not by the pull failing later.
    assert!(log.contains("fastflow: cancelled before the container started"), "log: {log:?}");
    assert!(!log.contains("pull failed"), "the run waited for the pull to fail: {log:?}");
    assert!(env.docker_containers_with_label(&run.id).await.is_empty(), "a container was created");
    holder.abort();
}
