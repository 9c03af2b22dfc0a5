//! The SQLite backend's own guarantees: listings read an index in order, the writer
//! survives a transaction SQLite rolled back, the pragmas and the bundled build.

use super::*;
use crate::store::runs::{Claim, ClaimResult, NewRun, Outcome, Run};
use shared::RunStatus;

const LEASE: Duration = Duration::from_secs(60);

fn temp_store_path() -> (std::path::PathBuf, String) {
    let dir = std::env::temp_dir().join(format!("fastflow-sqlite-{}", Uuid::new_v4().simple()));
    let path = dir.join("db/fastflow.db").to_string_lossy().into_owned();
    (dir, path)
}

/// Every filter combination `list_runs` builds reads its page from an index, in index
/// order: one plan line, so neither a full `SCAN runs` nor a sort (`USE TEMP B-TREE`).
/// The plan is of the very statement `list_runs` sends, binds included. Nothing runs
/// ANALYZE, so SQLite plans by the schema alone and an empty database shows the real plan.
#[tokio::test]
async fn every_run_listing_reads_an_index_in_order() {
    // (pipeline?, status?, plan without a cursor, plan with one)
    let cases = [
        (
            false,
            false,
            "SCAN runs USING INDEX runs_newest",
            "SEARCH runs USING INDEX runs_newest ((created_at,id)<(?,?))",
        ),
        (
            false,
            true,
            "SEARCH runs USING INDEX runs_status_newest (status=?)",
            "SEARCH runs USING INDEX runs_status_newest (status=? AND (created_at,id)<(?,?))",
        ),
        (
            true,
            false,
            "SEARCH runs USING INDEX runs_pipeline_newest (pipeline_name=?)",
            "SEARCH runs USING INDEX runs_pipeline_newest (pipeline_name=? AND (created_at,id)<(?,?))",
        ),
        // runs_pipeline_newest would serve as well; this is the one SQLite (bundled, pinned
        // by Cargo.lock) picks. Should an upgrade switch, accept that index here.
        (
            true,
            true,
            "SEARCH runs USING INDEX runs_status_newest (status=?)",
            "SEARCH runs USING INDEX runs_status_newest (status=? AND (created_at,id)<(?,?))",
        ),
    ];
    let (dir, path) = temp_store_path();
    let store = SqliteStore::connect(&path).await.expect("connect");
    let mut wrong = Vec::new();
    for (pipeline, status, first_page, next_page) in cases {
        for (before, expected) in [(None, first_page), (Some((Utc::now(), Uuid::now_v7())), next_page)] {
            let filter = RunFilter {
                pipeline: pipeline.then(|| "p".to_string()),
                status: status.then_some(RunStatus::Failed),
                before,
                limit: 50,
            };
            let plan: Vec<(i64, i64, i64, String)> = list_runs_sql("explain query plan ", &filter)
                .build_query_as()
                .fetch_all(&store.reader)
                .await
                .expect("explain query plan");
            let plan: Vec<String> = plan.into_iter().map(|(_, _, _, detail)| detail).collect();
            if plan != [expected] {
                wrong.push(format!("{filter:?}\n    plan:     {plan:?}\n    expected: {expected:?}"));
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(wrong.is_empty(), "listings not read from their index:\n  {}", wrong.join("\n  "));
}

fn new_run(pipeline_name: &str) -> NewRun<'_> {
    NewRun {
        id: Uuid::now_v7(),
        pipeline_name,
        pool: "default",
        params: serde_json::json!({}),
        spec: serde_json::json!({}),
        timeout_seconds: None,
        triggered_by: None,
    }
}

fn claim<'a>(run: &'a Run, runner_id: &'a str) -> Claim<'a> {
    Claim {
        run_id: run.id,
        attempt: run.attempt,
        runner_id,
        pipeline_name: &run.pipeline_name,
        lease: LEASE,
        max_running: None,
        max_running_of_pipeline: None,
    }
}

async fn claimed(store: &SqliteStore, run: &Run, runner_id: &str) -> Result<Run, Error> {
    match store.claim_batch(&[claim(run, runner_id)]).await?.pop() {
        Some(ClaimResult::Granted(run)) => Ok(*run),
        _ => panic!("claim of {} not granted", run.id),
    }
}

/// The error SQLite's own rollback ended the transaction with (the test's trigger).
fn rolled_back<T>(result: Result<T, Error>) -> bool {
    matches!(result, Err(Error::Database(sqlx::Error::Database(db))) if db.message() == "rolled back by SQLite")
}

/// SQLite can end a transaction itself (after some SQLITE_FULL, IOERR or NOMEM errors, or a
/// trigger's RAISE(ROLLBACK)); our ROLLBACK then fails ("no transaction is active") and
/// sqlx still counts a transaction open, so every later `begin` on the one writer failed
/// (`InvalidSavePointStatement`). Provoked for real with RAISE(ROLLBACK) on every update by
/// runner `doomed`: each transactional write fails with SQLite's error, and the next one,
/// on the same writer pool, still succeeds.
#[tokio::test]
async fn the_writer_survives_a_transaction_sqlite_rolled_back() {
    let (dir, path) = temp_store_path();
    let store = SqliteStore::connect(&path).await.expect("connect");
    let first = store.insert_run(new_run("p")).await.expect("insert");
    let second = store.insert_run(new_run("p")).await.expect("insert");
    let first = claimed(&store, &first, "doomed").await.expect("claim before the trigger");
    sqlx::query(
        "create trigger doomed before update on runs when new.runner_id = 'doomed'
         begin select raise(rollback, 'rolled back by SQLite'); end",
    )
    .execute(&store.writer)
    .await
    .expect("create trigger");

    let claim_failed = rolled_back(claimed(&store, &second, "doomed").await);
    let second = claimed(&store, &second, "healthy").await.expect("claim after a rolled back claim");

    let renew_failed = rolled_back(store.renew_leases("doomed", &[first.attempt_ref()], LEASE).await);
    let renewed = store.renew_leases("healthy", &[second.attempt_ref()], LEASE).await;

    let outcome = Outcome { status: RunStatus::Success, reason: None, exit_code: Some(0), error_message: None };
    let end_failed = rolled_back(store.end_attempt(&first.attempt_ref(), &outcome, None, None).await);
    let ended = store.end_attempt(&second.attempt_ref(), &outcome, None, None).await;
    let first_attempts = store.attempts(first.id).await.expect("attempts");
    let _ = std::fs::remove_dir_all(&dir);

    assert!(claim_failed, "the claim fails with SQLite's error");
    assert!(renew_failed, "the renewal fails with SQLite's error");
    assert_eq!(renewed.expect("renew after a rolled back renewal").len(), 1);
    assert!(end_failed, "ending the attempt fails with SQLite's error");
    let ended = ended.expect("end_attempt after a rolled back end_attempt").expect("ended");
    assert_eq!(ended.status, RunStatus::Success);
    assert!(first_attempts.is_empty(), "the rolled back transaction recorded no attempt");
}

/// The durability and locking settings are in effect on the connections
/// the store really uses, and the read pool cannot write.
#[tokio::test]
async fn pragmas_and_read_only_reader() {
    let dir = std::env::temp_dir().join(format!("fastflow-sqlite-{}", Uuid::new_v4().simple()));
    let path = dir.join("db/fastflow.db");
    let store = SqliteStore::connect(&path.to_string_lossy()).await.expect("connect");
    let (mode,): (String,) = sqlx::query_as("pragma journal_mode").fetch_one(&store.writer).await.expect("mode");
    let (sync,): (i64,) = sqlx::query_as("pragma synchronous").fetch_one(&store.writer).await.expect("sync");
    let (fk,): (i64,) = sqlx::query_as("pragma foreign_keys").fetch_one(&store.writer).await.expect("fk");
    let (busy,): (i64,) = sqlx::query_as("pragma busy_timeout").fetch_one(&store.writer).await.expect("busy");
    let write_on_reader = sqlx::query("insert into code_bundles (digest, data, created_at) values ('x', x'00', 0)")
        .execute(&store.reader)
        .await;
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(mode, "wal");
    assert_eq!(sync, 2, "synchronous = FULL");
    assert_eq!(fk, 1);
    assert_eq!(busy, 5000);
    assert!(write_on_reader.is_err(), "the read pool is read-only");
    assert_eq!(store.writer.options().get_max_connections(), 1);
}

/// The bundled SQLite is built without global memory statistics (`.cargo/config.toml`):
/// with them, every allocation of every connection takes one process-wide mutex and the
/// store's readers queued on it under load. A build without the workspace's cargo
/// config (e.g. `cargo install` from elsewhere) would lose it silently; this says so.
#[tokio::test]
async fn bundled_sqlite_is_built_without_memory_statistics() {
    let mut conn = SqliteConnection::connect("sqlite::memory:").await.expect("in-memory database");
    let (used,): (i64,) = sqlx::query_as("select sqlite_compileoption_used('DEFAULT_MEMSTATUS=0')")
        .fetch_one(&mut conn)
        .await
        .expect("compile option query");
    assert_eq!(used, 1, "LIBSQLITE3_FLAGS from .cargo/config.toml did not reach libsqlite3-sys");
}
