//! Supervision under faults: nothing runs unsupervised and nothing runs twice.
//!
//! * The log pipe never blocks supervision: a chatty job while nats-server is frozen
//!   is stopped by the runner's fence, and its container is dead before the next
//!   attempt's container is created (checked on the engine's event clock).
//! * The fence follows the control plane's lease; settings that would let a lease
//!   run out before the fence are refused at start.
//! * A database outage longer than the fence keeps running jobs (provisional
//!   heartbeat replies), and an exit report that cannot be delivered meanwhile is
//!   kept on disk across a runner restart.
//!
//! The runner-freeze case (the watchdog) is in `retries.rs`, next to the other
//! lost-runner tests.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use tests::checks::assert_finished;
use tests::{ContainerLifecycle, TestEnv, TestEnvOptions, poll_until};

const RUN: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(100);

/// Waits until the container of `run_id`'s attempt `attempt` is no longer running.
async fn wait_not_running(env: &TestEnv, container: &str, within: Duration) {
    poll_until(&format!("container {container} to stop running"), within, POLL, || async move {
        match env.docker_inspect(container).await {
            None => Ok(()),
            Some(inspect) if inspect["State"]["Running"] == false => Ok(()),
            Some(inspect) => Err(format!("still running: {}", inspect["State"])),
        }
    })
    .await;
}

/// The one container of the run (waits for it).
async fn only_container(env: &TestEnv, run_id: &str) -> String {
    poll_until(&format!("one container of run {run_id}"), RUN, POLL, || async move {
        let ids = env.docker_containers_with_label(run_id).await;
        if ids.len() == 1 { Ok(ids[0].clone()) } else { Err(format!("containers: {ids:?}")) }
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_chatty_job_is_fenced_while_nats_is_frozen_and_dead_before_its_next_attempt_starts() {
    let events = ContainerLifecycle::start().await;
    // A 12 s lease: the runner fences 7 s after its last renewal (5 s margin).
    let mut env = TestEnv::start(
        TestEnvOptions::default()
            .control_plane_env("RUN_LEASE_SECONDS", "12")
            .control_plane_env("SWEEP_INTERVAL_SECONDS", "1")
            .control_plane_env("RETRY_BACKOFF_SECONDS", "0.3")
            .runner_env("HEARTBEAT_INTERVAL_SECONDS", "1"),
    )
    .await;
    let run = env.run_pipeline("chatty_forever", &[]).await;
    env.wait_for_log(&run.id, "chatter 200 of attempt 1", RUN).await;
    let container = only_container(&env, &run.id).await;

    env.freeze_nats();
    let frozen_at = Instant::now();
    // Log batches can no longer be acknowledged and heartbeats go unanswered: the fence
    // (≤ 7 s after the last renewal, which was ≤ 1 s before the freeze) stops the job
    // although the log publisher is stuck.
    wait_not_running(&env, &container, Duration::from_secs(12)).await;
    let stopped_after = frozen_at.elapsed();
    eprintln!("attempt 1's container stopped {stopped_after:?} after nats-server was frozen");
    assert!(stopped_after < Duration::from_secs(12), "stopped only after the lease: {stopped_after:?}");

    // Frozen for 60 s in all; the lease expires meanwhile (Postgres decides) and attempt 2
    // is queued, offered once NATS answers again.
    tokio::time::sleep(Duration::from_secs(60).saturating_sub(frozen_at.elapsed())).await;
    env.thaw_nats();
    let second = env.wait_for_status(&run.id, |r| r.attempt == 2 && r.status == "running", RUN).await;
    env.wait_for_log(&run.id, "chatter 200 of attempt 2", RUN).await;
    env.cp(0).cancel_run(&run.id).await.expect(StatusCode::ACCEPTED);
    let done = env.wait_final(&run.id, RUN).await;
    assert_eq!((done.status.as_str(), done.attempt), ("cancelled", 2), "{done:#?} (was {second:#?})");
    let body = env.cp(0).get_run(&run.id).await.expect(StatusCode::OK).clone();
    assert_eq!(body["attempts"][0]["failure_reason"], "lost", "{body}");

    let died = events.time_of(&run.id, 1, "die").expect("attempt 1's container died");
    let created = events.time_of(&run.id, 2, "create").expect("attempt 2's container was created");
    assert!(
        died < created,
        "attempt 1's container died at {died}, after attempt 2's was created at {created}: {:#?}",
        events.of_run(&run.id)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn fence_settings_that_would_outlast_the_lease_are_refused_at_start() {
    let mut env = TestEnv::start(TestEnvOptions::default().runners(0)).await;
    // The example: a 25 s lease (the default) against a 20 s fence plus a 5 s margin.
    let i = env.launch_runner_with_env(&[("RUNNER_SELF_FENCE_SECONDS", "20")]);
    let status = env.wait_runner_exit(i, Duration::from_secs(60)).await;
    assert!(!status.success(), "the runner started with unsafe fence settings: {status:?}");
    let log = std::fs::read_to_string(env.runner_log_path(i)).expect("runner log");
    assert!(
        log.contains("refusing to start") && log.contains("RUNNER_SELF_FENCE_SECONDS"),
        "the runner should say why it refused: {log}"
    );

    // A fence that ends before the lease is accepted, and the runner runs jobs.
    let ok = env.launch_runner_with_env(&[("RUNNER_SELF_FENCE_SECONDS", "15")]);
    let run = env.run_pipeline("quick", &[]).await;
    let done = env.wait_final(&run.id, RUN).await;
    assert_finished(&done, "success", None);
    assert_eq!(done.runner_id.as_deref(), Some(env.runner_id(ok)));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_outage_longer_than_the_fence_keeps_jobs_and_a_waiting_exit_report_survives_a_runner_restart() {
    // A 12 s lease: without provisional replies the runner would stop the job 7 s
    // after the database went away.
    let mut env = TestEnv::start(
        TestEnvOptions::default()
            .private_postgres()
            .control_plane_env("RUN_LEASE_SECONDS", "12")
            .control_plane_env("SWEEP_INTERVAL_SECONDS", "1")
            .runner_env("HEARTBEAT_INTERVAL_SECONDS", "1"),
    )
    .await;
    let run = env.run_pipeline("outage_job", &[]).await;
    env.wait_for_log(&run.id, "line 2\n", RUN).await;
    let container = only_container(&env, &run.id).await;

    env.stop_postgres().await;
    let stopped_at = Instant::now();
    // Well past the fence: the job still runs.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let inspect = env.docker_inspect(&container).await.expect("the container exists");
    assert_eq!(inspect["State"]["Running"], true, "the job was stopped during the outage: {}", inspect["State"]);

    // The job ends during the outage: its exit report cannot be accepted (the store is
    // down), so the runner keeps it on disk, and the container with it.
    wait_not_running(&env, &container, Duration::from_secs(40)).await;
    eprintln!("the job exited {:?} into the database outage", stopped_at.elapsed());
    let reports = env.runner_data_dir(0).join("exit-reports");
    poll_until("the exit report saved on disk", Duration::from_secs(10), POLL, || {
        let reports = reports.clone();
        async move {
            let saved = std::fs::read_dir(&reports).map(|d| d.count()).unwrap_or(0);
            if saved == 1 { Ok(()) } else { Err(format!("{saved} files in {}", reports.display())) }
        }
    })
    .await;
    env.kill_runner(0);
    // Not waiting for it to be listed: the API cannot read the database either.
    env.relaunch_runner(0);

    env.start_postgres().await;
    let done = env.wait_final(&run.id, RUN).await;
    assert_finished(&done, "success", None);
    assert_eq!((done.attempt, done.exit_code), (1, Some(0)), "{done:#?}");
    let log = String::from_utf8_lossy(&env.logs(&run.id).await).into_owned();
    let expected: String = (1..=24).map(|i| format!("line {i}\n")).collect();
    assert_eq!(log, expected, "the whole log, once");
    poll_until("the delivered report to be forgotten and the container removed", RUN, POLL, || {
        let reports = reports.clone();
        let env = &env;
        let run_id = run.id.clone();
        async move {
            let saved = std::fs::read_dir(&reports).map(|d| d.count()).unwrap_or(0);
            let containers = env.docker_containers_with_label(&run_id).await;
            if saved == 0 && containers.is_empty() {
                Ok(())
            } else {
                Err(format!("{saved} saved reports, containers {containers:?}"))
            }
        }
    })
    .await;
}

/// Issue 16: a lost runner's attempt is not ended (and its live log not purged) while
/// the log store refuses the archive. Runner killed mid-job, the S3 bucket removed: the
/// sweeper's archive fails, the run stays open and `GET logs` still returns every line
/// published before the kill; with the bucket back, the archive holds exactly those
/// lines and the run ends as lost.
#[tokio::test(flavor = "multi_thread")]
async fn a_lost_runners_log_is_kept_while_the_log_store_is_down_and_archived_once_it_is_back() {
    let mut env = TestEnv::start(
        TestEnvOptions::default()
            .control_plane_env("RUN_LEASE_SECONDS", "12")
            .control_plane_env("SWEEP_INTERVAL_SECONDS", "1")
            .runner_env("HEARTBEAT_INTERVAL_SECONDS", "1"),
    )
    .await;
    let run = env.run_pipeline("outage_job", &[]).await;
    env.wait_for_log(&run.id, "line 3\n", RUN).await;
    env.kill_runner(0);
    env.s3_refuse_writes().await;
    // What the runner published before it died (read after the kill: nothing is added).
    let published = env.logs(&run.id).await;
    assert!(String::from_utf8_lossy(&published).starts_with("line 1\nline 2\nline 3\n"), "{published:?}");

    let log_path = env.control_plane_log_path(0);
    poll_until("the sweeper to fail archiving the lost attempt", RUN, POLL, || {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        async move {
            if text.contains("its live log is kept until the log store takes it") {
                Ok(())
            } else {
                Err("no failed archive yet".to_string())
            }
        }
    })
    .await;
    let during = env.get_run(&run.id).await;
    assert_eq!(during.status, "running", "the attempt stays open while its log cannot be archived: {during:?}");
    assert_eq!(env.logs(&run.id).await, published, "the live log is still served, whole");

    env.s3_accept_writes().await;
    let done = env.wait_final(&run.id, RUN).await;
    assert_finished(&done, "failed", Some("lost"));
    assert_eq!(env.archived_log(&run.id, 1).await, published, "the archive holds every published line");
    assert_eq!(env.logs(&run.id).await, published, "and GET logs serves it from there");
}
