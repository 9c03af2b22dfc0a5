//! Runner identity (issue 18): runners are enrolled with a registration token, connect
//! to NATS (TLS) with their own credentials, and can act only as themselves. Real NATS
//! with TLS and the control plane's auth callout, real Postgres, Docker.

use std::time::Duration;

use async_nats::ConnectErrorKind;
use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::json;
use shared::protocol::{AttemptRef, ClaimReply, ClaimRequest, ExitOutcome, ExitReport, Heartbeat, LogTotals};
use tests::expected::log_lines;
use tests::{TestEnv, TestEnvOptions};
use tokio::sync::mpsc;

const RUN: Duration = Duration::from_secs(120);

/// The numbered lines `slow_counter` prints, in order.
fn counter_lines() -> Vec<String> {
    (1..=60).map(|i| format!("line {i}")).collect()
}

/// The archived log and the SSE stream of a finished `slow_counter` run both hold exactly its lines.
async fn assert_exact_counter_log(env: &TestEnv, run_id: &str) {
    let archived: Vec<String> =
        log_lines(&env.logs(run_id).await).into_iter().filter(|l| !l.starts_with("[fastflow]")).collect();
    assert_eq!(archived, counter_lines(), "the archived log");
    let streamed = env.stream_logs(run_id, None).await.collect_until_end(RUN).await;
    assert_eq!(streamed.output_lines(), counter_lines(), "the SSE stream");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_registration_token_enrolls_once_expires_and_the_identity_survives_restarts() {
    let mut env = TestEnv::start(TestEnvOptions::default().runners(0)).await;
    // Non-admins cannot make registration tokens.
    let viewer = env.create_user("viewer-1", "viewer").await;
    let viewer_token = env.create_token(&viewer.username, "viewer-token", None).await;
    let denied = env
        .cp(0)
        .with_token(&viewer_token)
        .json(Method::POST, "/api/v1/runners/registration-tokens", Some(&json!({})))
        .await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN, "{}", denied.text);
    let bad = env.cp(0).json(Method::POST, "/api/v1/runners/registration-tokens", Some(&json!({"pool": "a.b"}))).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.text);

    let single = env.create_registration_token(&json!({ "description": "one host" })).await;
    let first = env.launch_runner_with_env(&[("RUNNER_REGISTRATION_TOKEN", single.as_str())]);
    env.wait_runner_listed(first).await;
    let creds_path = env.runner_data_dir(first).join("credentials.json");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&creds_path).expect("credentials").permissions());
    assert_eq!(mode & 0o777, 0o600, "the credentials file is private");
    let creds = env.runner_credentials(first);
    assert_eq!(creds.runner_id, env.runner_id(first));
    assert_eq!(creds.pool, "default");
    let listed = env.cp(0).json(Method::GET, "/api/v1/runners/registration-tokens", None).await;
    let listed = listed.expect(StatusCode::OK);
    assert!(!listed.to_string().contains(&single), "a listing never shows a token's value");
    assert_eq!(listed["items"][0]["uses"], 1, "{listed}");

    // The single-use token is spent: a second host cannot enroll with it.
    let second = env.launch_runner_with_env(&[("RUNNER_REGISTRATION_TOKEN", single.as_str())]);
    let status = env.wait_runner_exit(second, Duration::from_secs(60)).await;
    assert!(!status.success());
    let log = std::fs::read_to_string(env.runner_log_path(second)).unwrap_or_default();
    assert!(log.contains("registration token") && log.contains("refused"), "{log}");

    // An expired token is refused with a clear error.
    let expiry = chrono::Utc::now() + chrono::Duration::milliseconds(1500);
    let expiring = env.create_registration_token(&json!({ "expires_at": expiry })).await;
    while chrono::Utc::now() <= expiry {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let third = env.launch_runner_with_env(&[("RUNNER_REGISTRATION_TOKEN", expiring.as_str())]);
    assert!(!env.wait_runner_exit(third, Duration::from_secs(60)).await.success());
    let log = std::fs::read_to_string(env.runner_log_path(third)).unwrap_or_default();
    assert!(log.contains("registration token was refused"), "{log}");
    assert!(!env.runner_data_dir(third).join("credentials.json").exists());

    // A restart reuses the identity (no token needed, none used).
    let before = std::fs::read(&creds_path).expect("credentials");
    env.kill_runner(first);
    env.restart_runner(first).await;
    assert_eq!(std::fs::read(&creds_path).expect("credentials"), before, "the same credentials");
    let run = env.run_pipeline("quick", &[("FASTFLOW_MARK", "after-restart")]).await;
    let done = env.wait_final(&run.id, RUN).await;
    assert_eq!((done.status.as_str(), done.runner_id.as_deref()), ("success", Some(env.runner_id(first))));
}

/// Server errors (permission violations) a client receives.
fn error_events() -> (async_nats::ConnectOptions, mpsc::UnboundedReceiver<String>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let options = async_nats::ConnectOptions::new().event_callback(move |event| {
        let tx = tx.clone();
        async move {
            if let async_nats::Event::ServerError(e) = event {
                let _ = tx.send(e.to_string());
            }
        }
    });
    (options, rx)
}

/// Waits for a server error mentioning `subject`.
async fn violation(errors: &mut mpsc::UnboundedReceiver<String>, subject: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let next = tokio::time::timeout_at(deadline, errors.recv()).await;
        match next {
            Ok(Some(e)) if e.to_lowercase().contains("permissions violation") && e.contains(subject) => return,
            Ok(Some(_)) => continue,
            Ok(None) | Err(_) => panic!("no permissions violation for {subject} within 10 s"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rogue_client_with_another_runners_credentials_cannot_touch_its_run() {
    let mut env = TestEnv::start(TestEnvOptions::default()).await;
    let b = env.start_runner_with_env(&[("RUNNER_POOL", "other")]).await;
    let a_id = env.runner_id(0).to_owned();
    let b_creds = env.runner_credentials(b);
    assert_eq!(b_creds.pool, "other");

    let run = env.run_pipeline("slow_counter", &[]).await;
    env.wait_for_status(&run.id, |r| r.status == "running", RUN).await;
    let run_id: uuid::Uuid = run.id.parse().expect("uuid");

    let (options, mut errors) = error_events();
    let (url, ca) = env.nats_client();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rogue = options
        .require_tls(true)
        .add_root_certificates(ca)
        .user_and_password(b_creds.runner_id.clone(), b_creds.secret.clone())
        .custom_inbox_prefix(format!("_INBOX.{}", b_creds.runner_id))
        .connect(url)
        .await
        .expect("B's credentials connect");
    let request = |subject: String, body: serde_json::Value| {
        let rogue = rogue.clone();
        async move {
            let request = async_nats::Request::new()
                .payload(serde_json::to_vec(&body).expect("json").into())
                .timeout(Some(Duration::from_secs(3)));
            rogue.send_request(subject, request).await
        }
    };

    // Claim of another pool's run (queued for pool `gpu`), on B's own subject: refused.
    let gpu_run = env.run_pipeline("gpu_job", &[]).await;
    let claim = ClaimRequest { run_id: gpu_run.id.parse().expect("uuid"), attempt: 1, runner_id: a_id.clone() };
    let reply = request(format!("ff.r.{}.claim", b_creds.runner_id), json!(claim)).await.expect("a claim reply");
    let reply: ClaimReply = serde_json::from_slice(&reply.payload).expect("claim reply");
    assert!(matches!(reply, ClaimReply::Refused { .. }), "{reply:?}");
    assert_eq!(env.get_run(&gpu_run.id).await.status, "queued");

    // An exit report for A's attempt, sent as B (it cannot know A's token): refused.
    let report = ExitReport {
        attempt: AttemptRef { run_id, attempt: 1, fencing_token: 1 },
        runner_id: a_id.clone(),
        outcome: ExitOutcome::Exited { exit_code: 1 },
        log: LogTotals::default(),
        timed_out: false,
        cancelled: false,
    };
    let reply = request(format!("ff.r.{}.exit", b_creds.runner_id), json!(report)).await.expect("an exit reply");
    let text = String::from_utf8_lossy(&reply.payload).into_owned();
    assert!(text.contains("rejected"), "{text}");

    // A heartbeat `starting: true` on A's subject: the server refuses the publish.
    let beat = Heartbeat {
        runner_id: a_id.clone(),
        version: "rogue".into(),
        pool: "default".into(),
        slots: 1,
        running: vec![],
        starting: true,
    };
    let a_heartbeat = format!("ff.r.{a_id}.heartbeat");
    assert!(request(a_heartbeat.clone(), json!(beat)).await.is_err(), "no answer to a forged heartbeat");
    violation(&mut errors, &a_heartbeat).await;

    // A log batch on A's log subject of the run: refused by the server.
    let a_log = format!("logs.{run_id}.1.{a_id}");
    let js = async_nats::jetstream::new(rogue.clone());
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Ff-First-Line", "1");
    headers.insert("Ff-Token", "1");
    let published = async {
        js.publish_with_headers(a_log.clone(), headers, "forged line\n".into()).await?.await?;
        Ok::<_, async_nats::Error>(())
    };
    assert!(tokio::time::timeout(Duration::from_secs(10), published).await.map_or(true, |r| r.is_err()));
    violation(&mut errors, &a_log).await;

    // Reading everyone's replies or another pool's offers: refused.
    let mut inboxes = rogue.subscribe("_INBOX.>").await.expect("subscribe call");
    violation(&mut errors, "_INBOX.>").await;
    let mut offers = rogue.subscribe("jobs.default.*").await.expect("subscribe call");
    violation(&mut errors, "jobs.default.*").await;

    // A's run is untouched: success, one container, an exact log; nothing reached the rogue.
    let done = env.wait_final(&run.id, RUN).await;
    assert_eq!((done.status.as_str(), done.runner_id.as_deref()), ("success", Some(a_id.as_str())), "{done:?}");
    assert_eq!(env.docker_created_count(&run.id).await, 1);
    assert_exact_counter_log(&env, &run.id).await;
    let leaked = tokio::time::timeout(Duration::from_millis(500), async {
        tokio::select! { m = inboxes.next() => m, m = offers.next() => m }
    })
    .await;
    assert!(matches!(leaked, Err(_) | Ok(None)), "a refused subscription delivered a message");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_credentials_nothing_connects_and_a_revoked_runner_is_fenced_like_a_lost_one() {
    let env = TestEnv::start(
        TestEnvOptions::default()
            .control_plane_env("RUN_LEASE_SECONDS", "12")
            .control_plane_env("SWEEP_INTERVAL_SECONDS", "1")
            .runner_env("HEARTBEAT_INTERVAL_SECONDS", "2")
            .runner_env("RUNNER_FENCE_MARGIN_SECONDS", "4"),
    )
    .await;
    let creds = env.runner_credentials(0);
    let anonymous = env.connect_nats_as("", "", "_INBOX").await;
    assert!(anonymous.is_err(), "an anonymous client connected");
    let wrong = env.connect_nats_as(&creds.runner_id, "ffrs_wrong", &format!("_INBOX.{}", creds.runner_id)).await;
    assert!(matches!(wrong.map_err(|e| e.kind()), Err(ConnectErrorKind::AuthorizationViolation)));
    let cp_user = env.connect_nats_as("control-plane", "not-the-password", "_INBOX").await;
    assert!(cp_user.is_err(), "the control plane's user with a wrong password connected");

    let run = env.run_pipeline("sleeper", &[("SLEEP_SECONDS", "300")]).await;
    env.wait_for_status(&run.id, |r| r.status == "running", RUN).await;
    let unknown = env.cp(0).json(Method::DELETE, "/api/v1/runners/no-such-runner", None).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{}", unknown.text);
    let revoked = env.cp(0).json(Method::DELETE, &format!("/api/v1/runners/{}", creds.runner_id), None).await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT, "{}", revoked.text);

    // The credentials no longer connect, and the attempt ends like a lost runner's.
    let again = env.connect_nats_as(&creds.runner_id, &creds.secret, &format!("_INBOX.{}", creds.runner_id)).await;
    assert!(again.is_err(), "a revoked runner's credentials connected");
    let done = env.wait_final(&run.id, Duration::from_secs(90)).await;
    assert_eq!((done.status.as_str(), done.failure_reason.as_deref()), ("failed", Some("lost")), "{done:?}");
    let audit = env.cp(0).audit(&[("action", "runner_change")]).await;
    assert!(audit.text.contains(&creds.runner_id), "{}", audit.text);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_poisoned_batch_mid_run_is_dropped_and_the_log_stays_exact() {
    let env = TestEnv::start(TestEnvOptions::default()).await;
    let run = env.run_pipeline("slow_counter", &[]).await;
    let mut stream = env.stream_logs(&run.id, None).await;
    let first = stream.next_logs(5, RUN).await;
    assert_eq!(first.len(), 5);
    // The runner's own credentials, its own subject: no headers, then a wrong token.
    let runner = env.runner_credentials(0);
    let client = env.connect_nats_as_runner(0).await;
    let js = async_nats::jetstream::new(client);
    let subject = format!("logs.{}.1.{}", run.id, runner.runner_id);
    js.publish(subject.clone(), "poison without headers\n".into()).await.expect("publish").await.expect("stored");
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Ff-First-Line", "7");
    headers.insert("Ff-Token", "12345");
    js.publish_with_headers(subject, headers, "poison with a wrong token\n".into())
        .await
        .expect("publish")
        .await
        .expect("stored");
    let done = env.wait_final(&run.id, RUN).await;
    assert_eq!(done.status, "success", "{done:?}");
    let rest = stream.collect_until_end(RUN).await;
    let mut live: Vec<String> = first.iter().map(|(_, l)| l.line.clone()).collect();
    live.extend(rest.output_lines().into_iter().map(str::to_owned));
    assert_eq!(live, counter_lines(), "the live stream");
    assert_exact_counter_log(&env, &run.id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_deployments_with_different_prefixes_share_one_nats_server_apart() {
    // Small stream limits: NATS reserves each deployment's limits on the one server's disk.
    let small = || {
        TestEnvOptions::default()
            .control_plane_env("NATS_LOGS_MAX_BYTES", "256MiB")
            .control_plane_env("NATS_CODE_MAX_BYTES", "64MiB")
            .control_plane_env("NATS_JOBS_MAX_BYTES", "16MiB")
    };
    let blue = TestEnv::start(small().nats_subject_prefix("blue")).await;
    let green = TestEnv::start(small().nats_subject_prefix("green").shared_nats(blue.nats_access())).await;
    let mut runs = Vec::new();
    for i in 0..20 {
        let mark = format!("prefix-{i}");
        runs.push((&blue, blue.run_pipeline("quick", &[("FASTFLOW_MARK", mark.as_str())]).await));
        runs.push((&green, green.run_pipeline("quick", &[("FASTFLOW_MARK", mark.as_str())]).await));
    }
    for (env, run) in &runs {
        let done = env.wait_final(&run.id, RUN).await;
        assert_eq!(done.status, "success", "{done:?}");
        assert_eq!(done.runner_id.as_deref(), Some(env.runner_id(0)), "a run executed in its own deployment");
        assert_eq!(done.attempt, 1);
    }
    for (env, run) in &runs {
        assert_eq!(env.docker_created_count(&run.id).await, 1, "run {} executed exactly once", run.id);
    }
    // Neither deployment knows the other's runs.
    let (_, foreign) = &runs[1];
    assert_eq!(blue.cp(0).get_run(&foreign.id).await.status, StatusCode::NOT_FOUND);
}
