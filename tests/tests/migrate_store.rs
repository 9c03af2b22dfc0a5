//! `control-plane migrate-store`: a single node's history (SQLite + log files) moved to
//! Postgres + S3, checked through the API of a node that then serves from Postgres and
//! S3 only; a second migration changes nothing.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use sqlx::{AssertSqlSafe, Connection, PgConnection};
use tests::{ControlPlaneClient, DevEnv, TestEnv, TestEnvOptions, poll_until};

const RUN: Duration = Duration::from_secs(120);

/// Everything the API says about the runs: every run's JSON and every attempt's log bytes.
#[derive(Debug, PartialEq)]
struct Snapshot {
    runs: BTreeMap<String, Value>,
    logs: BTreeMap<(String, i64), Vec<u8>>,
}

async fn snapshot(cp: &ControlPlaneClient) -> Snapshot {
    let mut runs = BTreeMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut query = vec![("limit", "2".to_string())];
        if let Some(c) = &cursor {
            query.push(("cursor", c.clone()));
        }
        let query: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let page = cp.list_runs(&query).await;
        let page = page.expect(StatusCode::OK).clone();
        for item in page["items"].as_array().expect("items") {
            let id = item["id"].as_str().expect("id").to_string();
            let full = cp.get_run(&id).await.expect(StatusCode::OK).clone();
            runs.insert(id, full);
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    let mut logs = BTreeMap::new();
    for (id, run) in &runs {
        let attempts = run["attempt"].as_i64().expect("attempt");
        for attempt in 1..=attempts {
            let response = cp.get_logs_query(id, &[("attempt", &attempt.to_string())]).await;
            assert_eq!(response.status, StatusCode::OK, "logs of {id} attempt {attempt}");
            logs.insert((id.clone(), attempt), response.body.to_vec());
        }
    }
    Snapshot { runs, logs }
}

/// Runs `control-plane migrate-store` to completion; returns its stdout.
fn migrate(dev: &DevEnv, env: &TestEnv, database_url: &str, bucket: &str) -> String {
    let output = migrate_command(dev, env, database_url, bucket);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "migrate-store failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

fn migrate_command(dev: &DevEnv, env: &TestEnv, database_url: &str, bucket: &str) -> std::process::Output {
    let sqlite = format!("sqlite://{}", env.data_dir().join("fastflow.db").display());
    Command::new(dev.binary("control-plane"))
        .args(["migrate-store", "--from", &sqlite, "--to", database_url])
        .env_remove("DATABASE_URL")
        .env_remove("NATS_URL")
        .env("LOGS_DIR", env.archive_dir())
        .env("DATA_DIR", env.dir.join("migrate-data"))
        .env("S3_ENDPOINT", &dev.s3_endpoint)
        .env("S3_BUCKET", bucket)
        .env("S3_REGION", &dev.s3_region)
        .env("AWS_ACCESS_KEY_ID", &dev.aws_access_key_id)
        .env("AWS_SECRET_ACCESS_KEY", &dev.aws_secret_access_key)
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("cannot run control-plane migrate-store")
}

/// A control plane on Postgres + S3 (in-process bus; its runner takes no pool of ours).
struct Node(std::process::Child);

impl Node {
    async fn start(
        dev: &DevEnv,
        env: &TestEnv,
        database_url: &str,
        bucket: &str,
        log: &Path,
    ) -> (Node, ControlPlaneClient) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
        let port = listener.local_addr().expect("port").port();
        drop(listener);
        let log = std::fs::File::create(log).expect("log file");
        let child = Command::new(dev.binary("control-plane"))
            .env_remove("NATS_URL")
            .env("BIND_ADDR", format!("127.0.0.1:{port}"))
            .env("DATABASE_URL", database_url)
            .env("DATA_DIR", env.dir.join("target-data"))
            .env("S3_ENDPOINT", &dev.s3_endpoint)
            .env("S3_BUCKET", bucket)
            .env("S3_REGION", &dev.s3_region)
            .env("AWS_ACCESS_KEY_ID", &dev.aws_access_key_id)
            .env("AWS_SECRET_ACCESS_KEY", &dev.aws_secret_access_key)
            .env("PIPELINES_DIR", &env.pipelines_dir)
            .env("RUNNER_POOL", "nobody")
            .env("NO_COLOR", "1")
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("cannot start control-plane");
        // The harness's API token: migrate-store moved the users and their tokens, so the
        // token made on the single node is valid here.
        let client = ControlPlaneClient::new(format!("http://127.0.0.1:{port}")).with_token(env.admin_token());
        let url = format!("http://127.0.0.1:{port}/health");
        let http = reqwest::Client::new();
        poll_until("the Postgres + S3 node to be healthy", Duration::from_secs(60), Duration::from_millis(100), || {
            let request = http.get(&url).send();
            async move {
                let response = request.await.map_err(|e| e.to_string())?;
                if response.status() == StatusCode::OK { Ok(()) } else { Err(format!("HTTP {}", response.status())) }
            }
        })
        .await;
        (Node(child), client)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn create_database(dev: &DevEnv) -> (String, String) {
    let name = format!("t_{}", uuid::Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(&dev.pg_admin_url).await.expect("FASTFLOW_PG_ADMIN_URL");
    sqlx::raw_sql(AssertSqlSafe(format!(r#"CREATE DATABASE "{name}""#)))
        .execute(&mut admin)
        .await
        .expect("create database");
    let mut url = reqwest::Url::parse(&dev.database_url).expect("DATABASE_URL");
    url.set_path(&format!("/{name}"));
    (name, url.to_string())
}

async fn drop_database(dev: &DevEnv, name: &str) {
    if let Ok(mut admin) = PgConnection::connect(&dev.pg_admin_url).await {
        let _ = sqlx::raw_sql(AssertSqlSafe(format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#)))
            .execute(&mut admin)
            .await;
    }
}

/// How many were copied of what `label` names in a progress line such as
/// `runs 6/6 (6 copied)` or `logs 14 copied (3.0 MiB)`.
fn copied(line: &str, label: &str) -> i64 {
    let at = line.find(label).unwrap_or_else(|| panic!("no `{label}` in {line:?}"));
    let rest = &line[at + label.len()..];
    let end = rest.find(" copied").unwrap_or_else(|| panic!("no count after `{label}` in {line:?}"));
    let number = rest[..end].rsplit([' ', '(']).next().unwrap_or_default();
    number.parse().unwrap_or_else(|e| panic!("{e}: {line:?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_populated_single_node_moves_to_postgres_and_s3_and_a_second_run_changes_nothing() {
    let dev = DevEnv::from_env();
    let mut env = TestEnv::start(TestEnvOptions::single_node().control_plane_env("RETRY_BACKOFF_SECONDS", "1")).await;

    let (db_name, database_url) = create_database(&dev).await;
    let bucket = format!("t-{}", uuid::Uuid::new_v4().simple());

    // A node stopped with a run still running is not moved (that run would be lost).
    let running = env.run_pipeline("counter", &[]).await.id;
    // Its container runs (a claim without a container is ended as lost at the restart).
    env.wait_for_log(&running, "line 1\n", RUN).await;
    env.kill_control_plane(0);
    let refused = migrate_command(&dev, &env, &database_url, &bucket);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && stderr.contains("1 run(s) are still running"), "{stderr}");
    // Restarted, the node re-attaches to the run and finishes it.
    env.restart_control_plane(0).await;
    assert_eq!(env.wait_final(&running, RUN).await.status, "success");

    // A history with what a store has to carry: successes, a failure with its exit code,
    // a retried run (three attempts, three logs), a 3 MiB log, params.
    let mut ids = vec![running];
    ids.push(env.run_pipeline("hello", &[("NAME", "Migrated")]).await.id);
    ids.push(env.run_pipeline("fails", &[]).await.id);
    ids.push(env.run_pipeline("flaky", &[]).await.id);
    ids.push(env.run_pipeline("chatty", &[]).await.id);
    ids.push(env.run_pipeline("quick", &[("FASTFLOW_MARK", "one")]).await.id);
    for id in &ids {
        env.wait_final(id, RUN).await;
    }
    let before = snapshot(env.cp(0)).await;
    assert_eq!(before.runs.len(), ids.len());
    assert_eq!(before.logs.len(), ids.len() + 2, "flaky has three attempt logs");
    assert_eq!(before.runs[&ids[3]]["attempts"].as_array().map(Vec::len), Some(3));
    let by_token = format!("token:{}", tests::ADMIN_TOKEN_NAME);
    assert!(before.runs.values().all(|run| run["triggered_by"] == by_token.as_str()), "{:#?}", before.runs);
    // The node is stopped before moving it.
    env.kill_control_plane(0);

    let first = migrate(&dev, &env, &database_url, &bucket);
    let done = first.lines().find(|l| l.starts_with("migrate-store: done:")).unwrap_or_else(|| panic!("{first}"));
    assert_eq!(copied(done, "runs "), ids.len() as i64, "{first}");
    // Each archived attempt has its log and its line index.
    assert_eq!(copied(done, "logs "), 2 * before.logs.len() as i64, "{first}");
    assert!(first.contains("migrate-store: runs"), "a progress line: {first}");

    let (node, cp) = Node::start(&dev, &env, &database_url, &bucket, &env.dir.join("logs/target-node.log")).await;
    // The admin moved too: the same password signs in, and the runs still say who started them.
    cp.login(tests::ADMIN_USER, env.admin_password()).await.expect(StatusCode::OK);
    let after = snapshot(&cp).await;
    assert_eq!(after.runs, before.runs, "every run, as the API shows it, is the same after the move");
    assert_eq!(after.logs, before.logs, "every byte of every attempt's log is in S3");
    drop(node);

    let second = migrate(&dev, &env, &database_url, &bucket);
    let done = second.lines().find(|l| l.starts_with("migrate-store: done:")).unwrap_or_else(|| panic!("{second}"));
    assert_eq!(copied(done, "runs "), 0, "{second}");
    assert_eq!(copied(done, "logs "), 0, "{second}");
    assert!(done.contains(&format!("{} already there", 2 * before.logs.len())), "{second}");
    let (node, cp) = Node::start(&dev, &env, &database_url, &bucket, &env.dir.join("logs/target-node-2.log")).await;
    assert_eq!(snapshot(&cp).await, before, "a second migration changes nothing");
    drop(node);
    drop_database(&dev, &db_name).await;
}
