//! Logs at scale: the size cap, the SSE rate limit and the retention sweeper. Every
//! test runs in both modes (`in_both_modes!`).

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use tests::{TestEnv, in_both_modes};

const RUN: Duration = Duration::from_secs(90);
const CAPPED_BYTES: u64 = 3 * 1024 * 1024;

in_both_modes! {
    async fn output_past_the_log_cap_is_dropped_with_a_marker_saying_how_much(options) {
        let env = TestEnv::start(options.control_plane_env("LOG_MAX_SIZE_MB", "1")).await;
        let run = env.run_pipeline("chatty", &[]).await;
        let done = env.wait_final(&run.id, RUN).await;
        assert_eq!(done.status, "success", "the job keeps running past the cap: {done:?}");

        let log = env.logs(&run.id).await;
        let text = String::from_utf8_lossy(&log);
        let (container, system): (Vec<&str>, Vec<&str>) =
            text.split_inclusive('\n').partition(|line| !line.starts_with("fastflow: "));
        let kept: usize = container.iter().map(|l| l.len()).sum();
        assert!(kept as u64 <= 1024 * 1024, "kept {kept} bytes of container output past a 1 MiB cap");
        assert!(kept > 1000 * 1024, "the cap kept only {kept} bytes");
        let marker =
            system.iter().find(|l| l.contains("were dropped")).unwrap_or_else(|| panic!("no marker in {system:?}"));
        // "fastflow: log limit of 1 MiB reached; <bytes> bytes in <lines> lines were dropped"
        let dropped: u64 = marker
            .split("reached; ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("unreadable marker {marker:?}"));
        assert_eq!(kept as u64 + dropped, CAPPED_BYTES, "kept + dropped must be everything printed: {marker:?}");
        let archived = env.archived_log(&run.id, 1).await;
        assert_eq!(archived, log, "the archive holds the same capped log");
    }
}

in_both_modes! {
    async fn a_slow_sse_client_gets_every_line_at_the_configured_rate(options) {
        let env = TestEnv::start(options.control_plane_env("LOG_STREAM_RATE_LIMIT", "20")).await;
        let run = env.run_pipeline("burst", &[]).await;
        env.wait_final(&run.id, RUN).await;

        let started = Instant::now();
        let transcript = env.stream_logs(&run.id, None).await.collect_until_end(RUN).await;
        let elapsed = started.elapsed();
        let expected: Vec<String> = (1..=100).map(|i| i.to_string()).collect();
        assert_eq!(transcript.output_lines(), expected, "every line, in order");
        assert_eq!(transcript.ids(), (1..=100).collect::<Vec<u64>>());
        // 100 lines at 20 per second with a one-second burst: about 4 s. A generous bound
        // that still fails if the limit is ignored (that takes milliseconds).
        assert!(elapsed >= Duration::from_secs(3), "100 lines at 20 lines/s arrived in {elapsed:?}");
    }
}

in_both_modes! {
    async fn the_retention_sweeper_deletes_old_logs_and_keeps_the_runs(options) {
        let env = TestEnv::start(
            options.control_plane_env("LOG_RETENTION_RUNS", "1").control_plane_env("SWEEP_INTERVAL_SECONDS", "1"),
        )
        .await;
        let old = env.run_pipeline("quick", &[("FASTFLOW_MARK", "old")]).await;
        env.wait_final(&old.id, RUN).await;
        assert!(env.s3_get(&format!("runs/{}/1.log", old.id)).await.is_some(), "archived before it expires");
        let new = env.run_pipeline("quick", &[("FASTFLOW_MARK", "new")]).await;
        env.wait_final(&new.id, RUN).await;

        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let body = env.cp(0).get_run(&old.id).await.expect(StatusCode::OK).clone();
            if !body["log_expired_at"].is_null() {
                assert_eq!(body["status"], "success", "the run itself stays: {body}");
                break;
            }
            assert!(Instant::now() < deadline, "the old run's log never expired: {body}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let gone = env.cp(0).get_logs(&old.id).await;
        assert_eq!(gone.status, StatusCode::GONE, "{}", String::from_utf8_lossy(&gone.body));
        let error: serde_json::Value = serde_json::from_slice(&gone.body).unwrap_or_default();
        assert_eq!(error["error"]["type"], "LogExpired", "{error}");
        // The sweeper marks the run before it deletes the objects, so the deletes may still be
        // in flight when the mark is seen.
        let deadline = Instant::now() + Duration::from_secs(10);
        for key in [format!("runs/{}/1.log", old.id), format!("runs/{}/1.idx", old.id)] {
            while env.s3_get(&key).await.is_some() {
                assert!(Instant::now() < deadline, "{key} was never deleted");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        assert_eq!(&env.logs(&new.id).await[..], b"ran new\n", "the newest run keeps its log");
    }
}
