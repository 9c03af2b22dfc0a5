//! The single node: one `control-plane` process started with no DATABASE_URL,
//! NATS_URL or S3 settings (SQLite and archived logs under its own directories,
//! in-process bus, embedded runner). What only it does is tested here: starting
//! without services, and surviving a kill -9 mid-run: the job containers keep
//! running, and the restarted node (same DATA_DIR and RUNNER_ID) re-attaches to
//! them so the runs end normally with their complete logs.
//!
//! Everything the two modes share (the API, how runs behave) is tested in both
//! modes by the other files, with `in_both_modes!`.

use std::time::Duration;

use tests::checks::{
    assert_finished, assert_logs_agree, only_container, wait_container_running, wait_containers_removed,
};
use tests::{TestEnv, TestEnvOptions};

const RUN: Duration = Duration::from_secs(90);
/// How long the node stays down after the kill.
const DOWN: Duration = Duration::from_secs(2);

/// `line 1\n` … `line {n}\n`: what the `node_restart_*` fixtures print.
fn numbered_lines(n: usize) -> String {
    (1..=n).map(|i| format!("line {i}\n")).collect()
}

/// The finished run's log is exactly `expected` over HTTP, in the archive (the file
/// `<LOGS_DIR>/runs/<id>/<attempt>.log`) and over SSE.
async fn assert_complete_log(env: &TestEnv, run: &tests::Run, expected: &str) {
    let http = env.logs(&run.id).await;
    assert_eq!(String::from_utf8_lossy(&http), expected, "GET logs of run {} after the restart", run.id);
    let file = env.archive_dir().join(format!("runs/{}/{}.log", run.id, run.attempt));
    assert!(file.is_file(), "the archived log {} does not exist", file.display());
    let archive = env.archived_log(&run.id, run.attempt).await;
    assert_eq!(String::from_utf8_lossy(&archive), expected, "archived log {}", file.display());
    let transcript = env.stream_logs(&run.id, None).await.collect_until_end(RUN).await;
    assert_logs_agree(run, &http, &archive, &transcript);
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_mid_run_then_restart_finishes_the_run_with_its_complete_log() {
    let mut env = TestEnv::start(TestEnvOptions::single_node()).await;
    let created = env.run_pipeline("node_restart_lines", &[]).await;
    env.wait_for_log(&created.id, "line 5\n", RUN).await;

    env.kill_control_plane(0);
    let container = only_container(&env, &created.id).await;
    // The job does not depend on the node: it keeps running while the node is down.
    wait_container_running(&env, &container, true, Duration::from_secs(1)).await;
    tokio::time::sleep(DOWN).await;
    let state = wait_container_running(&env, &container, true, Duration::from_secs(1)).await;
    eprintln!("container state when the node restarts: {state}");
    env.restart_control_plane(0).await;
    let during = env.get_run(&created.id).await;
    assert!(
        during.status == "running" || during.status == "success",
        "after the restart the run is still running (or already done), not given up: {during:#?}"
    );

    let run = env.wait_final(&created.id, RUN).await;
    assert_finished(&run, "success", None);
    assert_eq!(run.exit_code, Some(0), "{run:#?}");
    assert_eq!(run.attempt, 1, "the run must finish in its first attempt: {run:#?}");
    assert_eq!(run.runner_id.as_deref(), Some(env.runner_id(0)), "{run:#?}");
    assert_complete_log(&env, &run, &numbered_lines(60)).await;

    assert_eq!(env.docker_created_count(&run.id).await, 1, "the run must run in exactly one container");
    wait_containers_removed(&env, &run.id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_after_the_container_exited_reports_it_at_restart() {
    let mut env = TestEnv::start(TestEnvOptions::single_node()).await;
    let created = env.run_pipeline("node_restart_exits", &[]).await;
    env.wait_for_log(&created.id, "line 2\n", RUN).await;

    env.kill_control_plane(0);
    let container = only_container(&env, &created.id).await;
    // The job finishes while nobody watches it.
    let state = wait_container_running(&env, &container, false, Duration::from_secs(20)).await;
    assert_eq!(state["ExitCode"], 0, "the container exits on its own with code 0: {state}");
    env.restart_control_plane(0).await;

    let run = env.wait_final(&created.id, RUN).await;
    assert_finished(&run, "success", None);
    assert_eq!(run.exit_code, Some(0), "{run:#?}");
    assert_eq!(run.attempt, 1, "the run must finish in its first attempt: {run:#?}");
    assert_complete_log(&env, &run, &numbered_lines(12)).await;

    assert_eq!(env.docker_created_count(&run.id).await, 1, "the run must run in exactly one container");
    wait_containers_removed(&env, &run.id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn starts_with_no_services_and_says_which_seams_it_uses() {
    let env = TestEnv::start(TestEnvOptions::single_node()).await;
    // TestEnv::start saw /health answer all checks ok and the embedded runner listed.

    // The node really was given none of the services' addresses.
    let environ = std::fs::read(format!("/proc/{}/environ", env.control_plane_pid(0))).expect("read /proc/…/environ");
    let names: Vec<String> = environ
        .split(|b| *b == 0)
        .filter_map(|var| var.split(|b| *b == b'=').next())
        .map(|name| String::from_utf8_lossy(name).into_owned())
        .collect();
    for name in ["DATABASE_URL", "NATS_URL", "S3_ENDPOINT", "S3_BUCKET", "AWS_ACCESS_KEY_ID"] {
        assert!(!names.iter().any(|n| n == name), "the single node was started with {name}");
    }

    // One start-up line per seam names what is in use.
    let log_path = env.control_plane_log_path(0);
    let log = std::fs::read_to_string(&log_path).unwrap_or_else(|e| panic!("cannot read {}: {e}", log_path.display()));
    let line_with = |needle: &str| -> String {
        log.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no start-up line contains {needle:?}; the log:\n{log}"))
            .to_string()
    };
    let data_dir = std::fs::canonicalize(env.data_dir()).expect("DATA_DIR exists after the start");
    let archive_dir = std::fs::canonicalize(env.archive_dir()).expect("LOGS_DIR exists after the start");

    let store = line_with("store: sqlite");
    assert!(store.contains("fastflow.db"), "the store line should name the SQLite file: {store}");
    let log_store = line_with("log store: files in");
    assert!(
        log_store.contains(&archive_dir.display().to_string()),
        "the log store line should name LOGS_DIR {}: {log_store}",
        archive_dir.display()
    );
    let bus = line_with("bus: in-process");
    assert!(bus.contains("embedded runner"), "the bus line should say it serves the embedded runner: {bus}");
    for seam in [&store, &log_store, &bus] {
        let lower = seam.to_lowercase();
        assert!(
            !lower.contains("postgres") && !lower.contains("nats") && !lower.contains("s3"),
            "a seam line names a distributed service: {seam}"
        );
    }

    // The SQLite database and the embedded runner's data live in DATA_DIR.
    let listing = || -> Vec<String> {
        std::fs::read_dir(&data_dir)
            .map(|entries| {
                entries.filter_map(Result::ok).map(|e| e.file_name().to_string_lossy().into_owned()).collect()
            })
            .unwrap_or_default()
    };
    let db = data_dir.join("fastflow.db");
    assert!(db.is_file(), "the SQLite database {} does not exist; DATA_DIR holds {:?}", db.display(), listing());
    assert!(
        data_dir.join("runner").is_dir(),
        "the embedded runner's data dir (default DATA_DIR/runner) does not exist; DATA_DIR holds {:?}",
        listing()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_node_on_the_same_data_dir_refuses_to_start() {
    let env = TestEnv::start(TestEnvOptions::single_node()).await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
    let port = listener.local_addr().expect("port").port();
    drop(listener);
    let output = std::process::Command::new(env.dev.binary("control-plane"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("BIND_ADDR", format!("127.0.0.1:{port}"))
        .env("DATA_DIR", env.data_dir())
        .env("LOGS_DIR", env.archive_dir())
        .env("PIPELINES_DIR", &env.pipelines_dir)
        .output()
        .expect("cannot run a second control-plane");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "the second node must fail: {stderr}");
    assert!(
        stderr.contains("is in use by another control-plane")
            && stderr.contains(&format!("pid {}", env.control_plane_pid(0))),
        "the error names the node holding DATA_DIR: {stderr}"
    );
    // The first node is unaffected.
    assert_eq!(env.cp(0).health().await.status, reqwest::StatusCode::OK);
}

/// `docker rm -f` of a container (by id), as an operator or a host clean-up would.
async fn remove_container(id: &str) {
    let status = tokio::process::Command::new("docker")
        .args(["rm", "-f", id])
        .stdout(std::process::Stdio::null())
        .status()
        .await
        .expect("cannot run docker rm");
    assert!(status.success(), "docker rm -f {id} failed");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_whose_container_vanished_while_the_node_was_down_ends_lost_at_restart() {
    let mut env = TestEnv::start(TestEnvOptions::single_node()).await;
    let created = env.run_pipeline("node_restart_lines", &[]).await;
    env.wait_for_log(&created.id, "line 2\n", RUN).await;
    env.kill_control_plane(0);
    let container = only_container(&env, &created.id).await;
    remove_container(&container).await;

    // The restarted runner has nothing to re-attach to; its first heartbeat says so and the
    // run ends at once, not when its lease (25 s) would have run out.
    let restarted = std::time::Instant::now();
    env.restart_control_plane(0).await;
    let run = env.wait_final(&created.id, Duration::from_secs(15)).await;
    assert!(restarted.elapsed() < Duration::from_secs(15), "ended {:?} after the restart", restarted.elapsed());
    assert_finished(&run, "failed", Some("lost"));
    let message = run.error_message.clone().unwrap_or_default();
    assert!(message.contains("restarted and had no container"), "{run:#?}");
    // What the log had before the crash is kept.
    let log = String::from_utf8_lossy(&env.logs(&run.id).await).into_owned();
    assert!(log.starts_with("line 1\nline 2\n"), "the log so far is archived: {log:?}");
}
