//! Log streaming and archiving: SSE resume with Last-Event-ID, huge outputs. Every
//! test runs in both modes (`in_both_modes!`): the archive is the S3 bucket or the
//! single node's log directory.

use std::time::Duration;

use reqwest::StatusCode;
use tests::checks::assert_finished;
use tests::expected::{BIG_OUTPUT_LAST_LINE_BYTES, BIG_OUTPUT_YES_BYTES, big_output_digest};
use tests::{LogLine, TestEnv, TestEnvOptions, in_both_modes};

const RUN: Duration = Duration::from_secs(90);

fn counter_lines() -> Vec<String> {
    (1..=60).map(|i| format!("line {i}")).collect()
}

fn output_lines(logs: &[(u64, LogLine)]) -> Vec<String> {
    logs.iter().filter(|(_, l)| l.stream != "system").map(|(_, l)| l.line.clone()).collect()
}

in_both_modes! {
    async fn a_log_stream_resumes_after_last_event_id_live_and_after_the_end(options) {
        let env = TestEnv::start(options).await;
        let run = env.run_pipeline("counter", &[]).await;

        // Live: read 20 events, hang up, resume after the last id seen.
        let mut first = env.stream_logs(&run.id, None).await;
        let head = first.next_logs(20, RUN).await;
        drop(first);
        let last_id = head.last().map(|(id, _)| *id).expect("20 events");
        let still_running = env.get_run(&run.id).await;
        let mut second = env.stream_logs(&run.id, Some(last_id)).await;
        let tail = second.collect_until_end(RUN).await;

        let mut all = head.clone();
        all.extend(tail.logs.iter().cloned());
        let ids: Vec<u64> = all.iter().map(|(id, _)| *id).collect();
        let expected_ids: Vec<u64> = (1..=ids.len() as u64).collect();
        assert_eq!(ids, expected_ids, "ids across the reconnect are not 1..n once each");
        assert_eq!(output_lines(&all), counter_lines(), "lines across the reconnect");
        assert_eq!(tail.end["status"], "success", "end event: {}", tail.end);
        assert!(
            !still_running.is_final(),
            "counter already finished before the reconnect, so the live resume path was not exercised: \
             {still_running:?}"
        );

        // After the end: resuming reads from the archive.
        let finished = env.wait_final(&run.id, RUN).await;
        assert_finished(&finished, "success", None);
        let resume_at = all.iter().find(|(_, l)| l.line == "line 30").map(|(id, _)| *id).expect("line 30 was streamed");
        let archived_tail = env.stream_logs(&run.id, Some(resume_at)).await.collect_until_end(RUN).await;
        let expected: Vec<(u64, LogLine)> = all.iter().filter(|(id, _)| *id > resume_at).cloned().collect();
        let got: Vec<(u64, String, String)> =
            archived_tail.logs.iter().map(|(id, l)| (*id, l.line.clone(), l.stream.clone())).collect();
        let want: Vec<(u64, String, String)> =
            expected.iter().map(|(id, l)| (*id, l.line.clone(), l.stream.clone())).collect();
        assert_eq!(got, want, "resume after the end must replay exactly the later lines");
        assert_eq!(archived_tail.end["status"], "success");

        let last = *ids.last().expect("ids");
        let nothing_left = env.stream_logs(&run.id, Some(last)).await.collect_until_end(RUN).await;
        assert!(
            nothing_left.logs.is_empty(),
            "resuming after the last line must send only `end`: {:?}",
            nothing_left.logs
        );
    }
}

in_both_modes! {
    async fn a_200_mb_log_with_a_10_mib_line_is_archived_and_served_byte_exactly(options) {
        // Past the default log cap (100 MiB): every byte is the point here.
        let env = TestEnv::start(options.control_plane_env("LOG_MAX_SIZE_MB", "0")).await;
        // Computed while the job runs; independent of the product.
        let expected = tokio::task::spawn_blocking(big_output_digest);

        let created = env.run_pipeline("big_output", &[]).await;
        let run = env.wait_final(&created.id, Duration::from_secs(900)).await;
        assert_finished(&run, "success", None);
        assert_eq!(run.exit_code, Some(0));

        let expected = expected.await.expect("digest task");
        assert_eq!(expected.len, BIG_OUTPUT_YES_BYTES + BIG_OUTPUT_LAST_LINE_BYTES);
        assert_eq!(run.log_size_bytes, Some(expected.len), "{run:#?}");

        let archive = env.s3_digest(&format!("runs/{}/1.log", run.id)).await.expect("archived log exists");
        assert_eq!(archive, expected, "the archived log differs from what the job printed");

        let (status, served) = env.cp(0).get_logs_digest(&run.id).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(served, expected, "GET logs differs from what the job printed");
    }
}

in_both_modes! {
    async fn an_idle_log_stream_stays_open_with_keep_alive_comments(options) {
        // No runner: the run stays queued and its stream has nothing to say.
        let env = TestEnv::start(options.runners(0)).await;
        let run = env.run_pipeline("quick", &[("FASTFLOW_MARK", "idle")]).await;

        let mut stream = env.stream_logs(&run.id, None).await;
        stream.wait_for_comment(Duration::from_secs(40)).await;
        assert!(
            stream.buffered_events().all(|e| e.event == "log"),
            "an idle stream of a queued run sent a non-log event: {:?}",
            stream.buffered_events().collect::<Vec<_>>()
        );
        assert_eq!(env.get_run(&run.id).await.status, "queued");
    }
}

in_both_modes! {
    /// Issue 16: live log streams are bounded per user and per replica; past a bound a
    /// new stream gets 503 with `Retry-After`, the open ones go on, and a stream the
    /// client closed frees its slot even while the job prints nothing.
    async fn live_log_streams_are_bounded_per_user_and_in_total(options) {
        let env = TestEnv::start(
            options.control_plane_env("SSE_MAX_STREAMS", "3").control_plane_env("SSE_MAX_STREAMS_PER_USER", "2"),
        )
        .await;
        let run = env.run_pipeline("sleeper", &[]).await;
        env.wait_for_log(&run.id, "started\n", RUN).await;
        let path = format!("/api/v1/runs/{}/logs/stream", run.id);
        let open = |client: &tests::ControlPlaneClient| client.request(reqwest::Method::GET, &path).send();

        let admin = env.cp(0);
        let first = open(admin).await.expect("first stream");
        let second = open(admin).await.expect("second stream");
        assert_eq!((first.status(), second.status()), (StatusCode::OK, StatusCode::OK));
        let third = open(admin).await.expect("third stream");
        assert_limited(third, "per_user", 2).await;

        env.create_user("streamer", "viewer").await;
        let token = env.create_token("streamer", "streams", None).await;
        let viewer = admin.with_token(&token);
        let theirs = open(&viewer).await.expect("another user's stream");
        assert_eq!(theirs.status(), StatusCode::OK, "another user has slots of their own");
        assert_limited(open(&viewer).await.expect("past the total"), "total", 3).await;

        // A closed stream frees its slot, though the job prints nothing meanwhile.
        drop(first);
        tests::poll_until("a slot freed by the closed stream", Duration::from_secs(30), Duration::from_millis(200), || {
            let request = open(admin);
            async move {
                match request.await {
                    Ok(response) if response.status() == StatusCode::OK => Ok(()),
                    Ok(response) => Err(format!("HTTP {}", response.status())),
                    Err(e) => Err(e.to_string()),
                }
            }
        })
        .await;
        env.cp(0).cancel_run(&run.id).await;
    }
}

async fn assert_limited(response: reqwest::Response, limit: &str, max: u64) {
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "past the {limit} limit");
    let retry_after = response.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
    assert!(
        retry_after.as_deref().is_some_and(|s| s.parse::<u64>().is_ok_and(|n| n > 0)),
        "Retry-After: {retry_after:?}"
    );
    let body: serde_json::Value = response.json().await.expect("a JSON error body");
    assert_eq!(body["error"]["type"], "TooManyStreams", "{body}");
    assert_eq!(body["error"]["details"]["limit"], limit, "{body}");
    assert_eq!(body["error"]["details"]["max"], max, "{body}");
}

/// A batch a cut-off runner publishes after its attempt ended (archived, subject purged)
/// does not stay until the stream's age limit: the sweeper purges the subject again
/// `LATE_LOG_PURGE_AFTER_SECONDS` after the end.
#[tokio::test(flavor = "multi_thread")]
async fn a_late_batch_on_an_ended_attempts_log_subject_is_purged_by_the_sweeper() {
    let env = TestEnv::start(
        TestEnvOptions::default()
            .control_plane_env("LATE_LOG_PURGE_AFTER_SECONDS", "10")
            .control_plane_env("SWEEP_INTERVAL_SECONDS", "1"),
    )
    .await;
    let run = env.run_pipeline("quick", &[("FASTFLOW_MARK", "late")]).await;
    let finished = env.wait_final(&run.id, RUN).await;
    assert_finished(&finished, "success", None);

    // Play the runner (with its credentials): one more batch on the attempt's subject, well
    // before the purge is due. Checked through the control plane's connection.
    let runner = env.runner_credentials(0);
    let client = env.connect_nats_as_runner(0).await;
    let js = async_nats::jetstream::new(client);
    let subject = format!("logs.{}.1.{}", run.id, runner.runner_id);
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Ff-First-Line", "2");
    headers.insert("Ff-Token", "1");
    let ack = js.publish_with_headers(subject.clone(), headers, "late line\n".into()).await.expect("publish");
    ack.await.expect("the late batch is stored");
    let admin = async_nats::jetstream::new(env.connect_nats_as_control_plane().await);
    let stream = admin.get_stream("FASTFLOW_LOGS").await.expect("the logs stream");
    let held = |found: Result<_, async_nats::jetstream::stream::LastRawMessageError>| match found {
        Ok(_) => true,
        Err(e) if e.kind() == async_nats::jetstream::stream::LastRawMessageErrorKind::NoMessageFound => false,
        Err(e) => panic!("reading the subject failed: {e}"),
    };
    assert!(held(stream.get_last_raw_message_by_subject(&subject).await), "the late batch is on the subject");

    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while held(stream.get_last_raw_message_by_subject(&subject).await) {
        assert!(std::time::Instant::now() < deadline, "the late batch was not purged within 60 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The run itself is untouched: its archived log still reads as before.
    let log = String::from_utf8_lossy(&env.logs(&run.id).await).into_owned();
    assert!(log.contains("ran late") && !log.contains("late line"), "{log}");
}
