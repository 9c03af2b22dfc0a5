//! Re-attach ("zombie reconciliation"): a runner killed while its containers run
//! is restarted with the same RUNNER_ID and data dir, finds its containers by label,
//! resumes their logs without gaps or duplicates, and reports their exits — all
//! within the 30 s lease, so the runs finish normally instead of ending `lost`.

use std::time::Duration;

use tests::checks::{
    assert_finished, assert_logs_agree, only_container, wait_container_running, wait_containers_removed,
};
use tests::{TestEnv, TestEnvOptions};

const RUN: Duration = Duration::from_secs(90);

fn numbered_lines(n: usize) -> String {
    (1..=n).map(|i| format!("line {i}\n")).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_runner_re_attaches_to_its_running_container() {
    let mut env = TestEnv::start(TestEnvOptions::default()).await;
    let created = env.run_pipeline("reattach_lines", &[]).await;
    // Follow the whole log from the first line, across the runner's crash.
    let mut sse = env.stream_logs(&created.id, None).await;
    env.wait_for_log(&created.id, "line 10\n", RUN).await;

    env.kill_runner(0);
    let container = only_container(&env, &created.id).await;
    wait_container_running(&env, &container, true, Duration::from_secs(1)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = String::from_utf8_lossy(&env.logs(&created.id).await).into_owned();
    assert!(!during.contains("line 40\n"), "the job should still run while the runner is down: {during:?}");
    env.restart_runner(0).await;

    let transcript = sse.collect_until_end(RUN).await;
    let run = env.wait_final(&created.id, RUN).await;
    assert_finished(&run, "success", None);
    assert_eq!(run.exit_code, Some(0), "{run:#?}");
    assert_eq!(run.runner_id.as_deref(), Some(env.runner_id(0)), "{run:#?}");

    let expected = numbered_lines(40);
    let http = env.logs(&run.id).await;
    assert_eq!(String::from_utf8_lossy(&http), expected, "GET logs after the re-attach");
    let archive = env.archived_log(&run.id, run.attempt).await;
    assert_logs_agree(&run, &http, &archive, &transcript);
    let streamed: Vec<String> = transcript.logs.iter().map(|(_, l)| format!("{}\n", l.line)).collect();
    assert_eq!(streamed.concat(), expected, "SSE lines, system lines included");

    assert_eq!(env.docker_created_count(&run.id).await, 1, "the run must run in exactly one container");
    wait_containers_removed(&env, &run.id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_container_that_exits_while_its_runner_is_down_is_reported_on_restart() {
    let mut env = TestEnv::start(TestEnvOptions::default()).await;
    let created = env.run_pipeline("reattach_exits", &[]).await;
    env.wait_for_log(&created.id, "line 2\n", RUN).await;

    env.kill_runner(0);
    let container = only_container(&env, &created.id).await;
    let state = wait_container_running(&env, &container, false, Duration::from_secs(20)).await;
    assert_eq!(state["ExitCode"], 5, "the container exits on its own: {state}");
    let during = env.get_run(&created.id).await;
    assert_eq!(during.status, "running", "nobody reported the exit yet: {during:#?}");
    env.restart_runner(0).await;

    let run = env.wait_final(&created.id, RUN).await;
    assert_finished(&run, "failed", Some("exit_code"));
    assert_eq!(run.exit_code, Some(5), "{run:#?}");
    let expected = numbered_lines(12);
    let http = env.logs(&run.id).await;
    assert_eq!(String::from_utf8_lossy(&http), expected, "GET logs: the lines printed while the runner was down too");
    let archive = env.archived_log(&run.id, run.attempt).await;
    assert_eq!(String::from_utf8_lossy(&archive), expected, "S3 archive");
    let transcript = env.stream_logs(&run.id, None).await.collect_until_end(RUN).await;
    assert_logs_agree(&run, &http, &archive, &transcript);

    assert_eq!(env.docker_created_count(&run.id).await, 1, "the run must run in exactly one container");
    wait_containers_removed(&env, &run.id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_runner_removes_the_container_of_a_run_that_was_lost_meanwhile() {
    // A short lease, so the control plane gives the run up while the runner is down
    // (the runner fences 2 s before it ends).
    let options = TestEnvOptions::default()
        .control_plane_env("RUN_LEASE_SECONDS", "4")
        .control_plane_env("SWEEP_INTERVAL_SECONDS", "1")
        .runner_env("HEARTBEAT_INTERVAL_SECONDS", "1")
        .runner_env("RUNNER_FENCE_MARGIN_SECONDS", "2");
    let mut env = TestEnv::start(options).await;
    let created = env.run_pipeline("sleeper", &[]).await;
    env.wait_for_log(&created.id, "started\n", RUN).await;

    env.kill_runner(0);
    let container = only_container(&env, &created.id).await;
    let lost = env.wait_final(&created.id, Duration::from_secs(30)).await;
    assert_finished(&lost, "failed", Some("lost"));
    // The killed runner's watchdog stopped the job at its fence, before the lease ran
    // out; the container itself stays for the restarted runner to find.
    wait_container_running(&env, &container, false, Duration::from_secs(1)).await;

    env.restart_runner(0).await;
    wait_containers_removed(&env, &created.id).await;
    let after = env.get_run(&created.id).await;
    assert_eq!(after, lost, "the run stays as the control plane finalised it");
    let log = String::from_utf8_lossy(&env.logs(&created.id).await).into_owned();
    assert_eq!(log, "started\n", "nothing more is added to a lost run's log");
}

/// A container with this runner's label but without an attempt's labels can never be
/// reported, so nobody else would remove it: the runner removes it when it starts.
#[tokio::test(flavor = "multi_thread")]
async fn a_container_without_an_attempts_labels_is_removed_when_the_runner_starts() {
    let mut env = TestEnv::start(TestEnvOptions::default()).await;
    env.kill_runner(0);
    // A run-id label only, so the harness can find it; no attempt or fencing token.
    let marker = uuid::Uuid::new_v4().to_string();
    let output = tokio::process::Command::new("docker")
        .args(["run", "-d", "--label", &format!("fastflow-runner-id={}", env.runner_id(0))])
        .args(["--label", &format!("fastflow-run-id={marker}"), env.dev.busybox_image.as_str(), "sleep", "300"])
        .output()
        .await
        .expect("run docker");
    assert!(output.status.success(), "docker run: {}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(env.docker_containers_with_label(&marker).await.len(), 1, "the stray container exists");

    env.restart_runner(0).await;
    wait_containers_removed(&env, &marker).await;
}
