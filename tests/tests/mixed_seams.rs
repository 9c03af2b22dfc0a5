//! Each seam switches to its other implementation on its own: a control plane on
//! SQLite and log files that still uses NATS and a separate runner-agent, and a
//! single node (in-process bus, SQLite) whose logs go to S3. (Postgres + S3 with the
//! in-process bus is exercised by `migrate_store.rs`.)

use std::time::Duration;

use tests::checks::assert_finished;
use tests::{TestEnv, TestEnvOptions};

const RUN: Duration = Duration::from_secs(120);

fn log_line(env: &TestEnv, i: usize, seam: &str) -> String {
    let log = std::fs::read_to_string(env.control_plane_log_path(i)).expect("control-plane log");
    log.lines()
        .find(|l| l.contains(&format!(" {seam}: ")))
        .unwrap_or_else(|| panic!("no `{seam}:` start-up line in the control-plane log:\n{log}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_and_log_files_with_nats_and_a_separate_runner() {
    let tmp = std::env::temp_dir().join(format!("fastflow-mixed-{}", uuid::Uuid::new_v4().simple()));
    let db = tmp.join("fastflow.db");
    let archive = tmp.join("archive");
    // Empty values count as unset: the control plane gets no S3 settings.
    let options = TestEnvOptions::default()
        .control_plane_env("DATABASE_URL", &format!("sqlite://{}", db.display()))
        .control_plane_env("S3_ENDPOINT", "")
        .control_plane_env("S3_BUCKET", "")
        .control_plane_env("LOGS_DIR", &archive.display().to_string());
    let env = TestEnv::start(options).await;
    assert!(log_line(&env, 0, "store").contains("store: sqlite"));
    assert!(log_line(&env, 0, "log store").contains("log store: files in"));
    assert!(log_line(&env, 0, "bus").contains("bus: nats jetstream"));

    let run = env.run_pipeline("hello", &[("NAME", "Mixed")]).await;
    let run = env.wait_final(&run.id, RUN).await;
    assert_finished(&run, "success", None);
    assert_eq!(run.runner_id.as_deref(), Some(env.runner_id(0)), "the separate runner-agent ran it");
    let logs = env.logs(&run.id).await;
    let archived = std::fs::read(archive.join(format!("runs/{}/1.log", run.id))).expect("archived log file");
    assert_eq!(logs, archived, "GET logs serves the archived file");
    assert!(String::from_utf8_lossy(&archived).contains("Hello, Mixed!"));
    drop(env);
    let _ = std::fs::remove_dir_all(&tmp);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_single_node_with_its_logs_in_s3() {
    let dev = tests::DevEnv::from_env();
    let bucket = format!("t-{}", uuid::Uuid::new_v4().simple());
    let options = TestEnvOptions::single_node()
        .control_plane_env("S3_ENDPOINT", &dev.s3_endpoint)
        .control_plane_env("S3_BUCKET", &bucket)
        .control_plane_env("S3_REGION", &dev.s3_region)
        .control_plane_env("AWS_ACCESS_KEY_ID", &dev.aws_access_key_id)
        .control_plane_env("AWS_SECRET_ACCESS_KEY", &dev.aws_secret_access_key);
    let env = TestEnv::start(options).await;
    assert!(log_line(&env, 0, "store").contains("store: sqlite"));
    assert!(log_line(&env, 0, "log store").contains(&format!("s3 bucket `{bucket}`")));
    assert!(log_line(&env, 0, "bus").contains("bus: in-process"));

    let run = env.run_pipeline("hello", &[("NAME", "Bucket")]).await;
    let run = env.wait_final(&run.id, RUN).await;
    assert_finished(&run, "success", None);
    let logs = env.logs(&run.id).await;
    assert!(String::from_utf8_lossy(&logs).contains("Hello, Bucket!"));
    assert!(
        !env.archive_dir().join(format!("runs/{}/1.log", run.id)).exists(),
        "with S3 set, no log file is written to LOGS_DIR"
    );
    // The archive is the S3 object (read with the test's own S3 client).
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::new()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new(dev.s3_region.clone()))
            .endpoint_url(&dev.s3_endpoint)
            .force_path_style(true)
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                &dev.aws_access_key_id,
                &dev.aws_secret_access_key,
                None,
                None,
                "fastflow-tests",
            ))
            .build(),
    );
    let object = s3
        .get_object()
        .bucket(&bucket)
        .key(format!("runs/{}/1.log", run.id))
        .send()
        .await
        .expect("the archived log is an S3 object");
    let body = object.body.collect().await.expect("object body").into_bytes();
    assert_eq!(body, logs, "GET logs serves the S3 object");
}
