//! Retries: attempts with their own logs and exit codes, back-off, the retry
//! policy, and a lost runner's run finished by another runner exactly once.
//!
//! The first two tests run in both modes (`in_both_modes!`); the lost-runner tests
//! kill or freeze runner processes and need two runners, so they stay distributed-only.

use std::time::Duration;

use reqwest::StatusCode;
use tests::{ContainerLifecycle, TestEnv, TestEnvOptions, in_both_modes, poll_until};

const RUN: Duration = Duration::from_secs(120);

/// Two runners and a 6 s lease (heartbeats every second, the fence 2 s before the
/// lease ends), so a lost runner is noticed within seconds.
fn two_runners_with_a_short_lease() -> TestEnvOptions {
    TestEnvOptions::default()
        .runners(2)
        .control_plane_env("RUN_LEASE_SECONDS", "6")
        .control_plane_env("SWEEP_INTERVAL_SECONDS", "1")
        .control_plane_env("RETRY_BACKOFF_SECONDS", "0.3")
        .runner_env("HEARTBEAT_INTERVAL_SECONDS", "1")
        .runner_env("RUNNER_FENCE_MARGIN_SECONDS", "2")
}

in_both_modes! {
    async fn a_flaky_job_is_retried_and_every_attempt_keeps_its_log_and_exit_code(options) {
        let env = TestEnv::start(options.control_plane_env("RETRY_BACKOFF_SECONDS", "0.3")).await;
        let run = env.run_pipeline("flaky", &[]).await;
        let done = env.wait_final(&run.id, RUN).await;
        assert_eq!((done.status.as_str(), done.attempt, done.exit_code), ("success", 3, Some(0)), "{done:?}");

        let body = env.cp(0).get_run(&run.id).await.expect(StatusCode::OK).clone();
        let attempts = body["attempts"].as_array().unwrap_or_else(|| panic!("no attempts list: {body}"));
        let summary: Vec<(i64, &str, Option<&str>, Option<i64>)> = attempts
            .iter()
            .map(|a| {
                (
                    a["attempt"].as_i64().unwrap_or(0),
                    a["status"].as_str().unwrap_or(""),
                    a["failure_reason"].as_str(),
                    a["exit_code"].as_i64(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (1, "failed", Some("exit_code"), Some(1)),
                (2, "failed", Some("exit_code"), Some(1)),
                (3, "success", None, Some(0))
            ],
            "{body}"
        );
        for attempt in 1..=3 {
            let log = env.cp(0).get_logs_query(&run.id, &[("attempt", &attempt.to_string())]).await;
            assert_eq!(log.status, StatusCode::OK);
            assert_eq!(String::from_utf8_lossy(&log.body), format!("attempt {attempt}\n"), "log of attempt {attempt}");
        }
        let bad = env.cp(0).get_logs_query(&run.id, &[("attempt", "4")]).await;
        assert_eq!(bad.status, StatusCode::BAD_REQUEST);

        // The stream walks through the attempts: ids `1`, then `2:1`, `3:1`.
        let transcript = env.stream_logs(&run.id, None).await.collect_until_end(RUN).await;
        assert_eq!(transcript.output_lines(), ["attempt 1", "attempt 2", "attempt 3"]);
        assert_eq!(transcript.raw_ids, ["1", "2:1", "3:1"]);
        assert_eq!(transcript.attempts, [serde_json::json!({"attempt": 2}), serde_json::json!({"attempt": 3})]);
        // Resuming inside attempt 2 continues there.
        let resumed = env.cp(0).stream_logs_after(&run.id, Some("2:1")).await.collect_until_end(RUN).await;
        assert_eq!(resumed.output_lines(), ["attempt 3"]);
    }
}

in_both_modes! {
    async fn retries_stop_at_the_limit_and_never_follow_a_cancel(options) {
        let env = TestEnv::start(
            options.control_plane_env("RETRY_ATTEMPTS", "1").control_plane_env("RETRY_BACKOFF_SECONDS", "0.3"),
        )
        .await;
        let failing = env.run_pipeline("fails", &[]).await;
        let done = env.wait_final(&failing.id, RUN).await;
        assert_eq!((done.status.as_str(), done.attempt, done.exit_code), ("failed", 2, Some(3)), "{done:?}");

        let slow = env.run_pipeline("counter", &[]).await;
        env.wait_for_log(&slow.id, "line 3", RUN).await;
        env.cp(0).cancel_run(&slow.id).await.expect(StatusCode::ACCEPTED);
        let cancelled = env.wait_final(&slow.id, RUN).await;
        assert_eq!((cancelled.status.as_str(), cancelled.attempt), ("cancelled", 1), "{cancelled:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_whose_runner_is_killed_gets_one_new_attempt_elsewhere() {
    let env = TestEnv::start(two_runners_with_a_short_lease()).await;
    let run = env.run_pipeline("ticker", &[]).await;
    let running = env.wait_for_status(&run.id, |r| r.status == "running", RUN).await;
    env.wait_for_log(&run.id, "tick 3 of attempt 1", RUN).await;
    let victim = (0..2).find(|i| Some(env.runner_id(*i)) == running.runner_id.as_deref()).expect("runner of the run");
    let mut env = env;
    env.kill_runner(victim);

    let done = env.wait_final(&run.id, RUN).await;
    assert_eq!((done.status.as_str(), done.attempt), ("success", 2), "{done:?}");
    assert_ne!(done.runner_id, running.runner_id, "attempt 2 ran on the other runner");
    let body = env.cp(0).get_run(&run.id).await.expect(StatusCode::OK).clone();
    assert_eq!(body["attempts"][0]["failure_reason"], "lost", "{body}");
    let log = String::from_utf8_lossy(&env.logs(&run.id).await).to_string();
    let expected: String = (1..=30).map(|i| format!("tick {i} of attempt 2\n")).collect();
    assert_eq!(log, expected, "attempt 2's log is complete");
    // One container per attempt: the killed runner's and the new one.
    assert_eq!(env.docker_created_count(&run.id).await, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_runner_frozen_past_its_lease_loses_the_attempt_and_its_late_writes_change_nothing() {
    let events = ContainerLifecycle::start().await;
    let mut env = TestEnv::start(two_runners_with_a_short_lease()).await;
    let run = env.run_pipeline("ticker", &[]).await;
    let running = env.wait_for_status(&run.id, |r| r.status == "running", RUN).await;
    env.wait_for_log(&run.id, "tick 3 of attempt 1", RUN).await;
    let victim = (0..2).find(|i| Some(env.runner_id(*i)) == running.runner_id.as_deref()).expect("runner of the run");
    env.freeze_runner(victim);

    // The lease runs out: attempt 1 is recorded as lost and attempt 2 runs elsewhere.
    env.wait_for_status(&run.id, |r| r.attempt == 2, RUN).await;
    // The frozen runner could not stop its job; its watchdog process did, at the
    // fence: attempt 1's container died before attempt 2's was created (engine clock).
    let second_created = poll_until("attempt 2's container", RUN, Duration::from_millis(100), || async {
        events.time_of(&run.id, 2, "create").ok_or_else(|| format!("events: {:?}", events.of_run(&run.id)))
    })
    .await;
    let first_died = events.time_of(&run.id, 1, "die").unwrap_or_else(|| {
        panic!("attempt 1's container is still running while attempt 2's exists: {:?}", events.of_run(&run.id))
    });
    assert!(first_died < second_created, "attempt 1 died after attempt 2 started: {:?}", events.of_run(&run.id));
    let first_log = env.cp(0).get_logs_query(&run.id, &[("attempt", "1")]).await.body;
    assert!(String::from_utf8_lossy(&first_log).contains("tick 3 of attempt 1"), "attempt 1's log was archived");
    // Thawed, the old runner finds its job done and reports with a stale token,
    // after publishing its remaining output under that token.
    env.thaw_runner(victim);

    let done = env.wait_final(&run.id, RUN).await;
    assert_eq!((done.status.as_str(), done.attempt), ("success", 2), "{done:?}");
    assert_ne!(done.runner_id, running.runner_id);
    // Give the thawed runner time to send everything it had.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let body = env.cp(0).get_run(&run.id).await.expect(StatusCode::OK).clone();
    assert_eq!(body["attempts"][0]["failure_reason"], "lost", "the late exit report changed attempt 1: {body}");
    assert_eq!(body["attempts"][1]["status"], "success", "{body}");
    let first_after = env.cp(0).get_logs_query(&run.id, &[("attempt", "1")]).await.body;
    assert_eq!(first_after, first_log, "late log batches changed attempt 1's archive");
    let second = String::from_utf8_lossy(&env.logs(&run.id).await).to_string();
    let expected: String = (1..=30).map(|i| format!("tick {i} of attempt 2\n")).collect();
    assert_eq!(second, expected, "attempt 2's log holds only its own lines");
}
