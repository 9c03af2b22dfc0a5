//! The SQLite backend: one control plane on one file (the single-node default).
//!
//! * Every write and every transaction goes through ONE writer connection:
//!   writes are serialised in the process (this replaces Postgres' advisory
//!   lock and `skip locked`), and no transaction ever has to upgrade a read lock
//!   (no SQLITE_BUSY deadlocks). Transactions start `immediate` all the same,
//!   so another process on the file waits (busy_timeout) instead of failing late.
//! * Pure reads use a separate read-only pool; WAL lets them run beside the writer.
//! * `synchronous = FULL`: a committed transition survives kill -9 and power loss.
//! * Timestamps are INTEGER unix microseconds, bound from Rust, so comparisons and
//!   arithmetic are exact; uuids are hyphenated TEXT (their text order is the
//!   byte order Postgres sorts by); JSON is TEXT.
//! * Run submissions are group-committed: concurrent `insert_run`s share one transaction,
//!   so one fsync (`batch.rs`).
//!
//! SQLite has no data-modifying CTEs, `for update` or arrays, so the few
//! multi-step transitions are transactions of guarded statements on the writer.
//!
//! The policy (what blocks a claim, what a retry resets, the stored strings) is
//! `policy.rs`'s; row decoding is `rows.rs`'s. One file per resource: `runs.rs`
//! (submissions, reads, cancels), `claims.rs` (claims, leases, ends of attempts),
//! `sweeps.rs` (the sweepers' queries), `runners.rs`, `bundles.rs` and
//! `transfer.rs` (export and import), `auth.rs` (users, sessions, tokens, login
//! failures) and `audit.rs`; `batch.rs` is the group commit.

mod audit;
mod auth;
mod batch;
mod bundles;
mod claims;
mod runner_identity;
mod runners;
mod runs;
mod sweeps;
#[cfg(test)]
mod tests;
mod transfer;

use super::Error;
use super::runs::RunFilter;
use batch::RunInserter;
use chrono::Utc;
use sqlx::Connection;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use std::path::Path;
use std::time::Duration;
use uuid::Uuid;

/// Starts every write transaction holding the write lock (see the module doc).
const BEGIN: &str = "begin immediate";

#[derive(Clone)]
pub(super) struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    /// Run submissions, written in groups sharing one commit (`batch.rs`).
    inserts: RunInserter,
}

fn now() -> i64 {
    Utc::now().timestamp_micros()
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// `now` minus `d`, in microseconds.
fn ago(d: Duration) -> i64 {
    now().saturating_sub(micros(d))
}

/// A uuid as stored: hyphenated TEXT.
fn text(id: Uuid) -> String {
    id.hyphenated().to_string()
}

/// `list_runs`' statement after `prefix` (the query-plan test puts `explain query plan` there).
/// Only the filters given appear in the SQL: SQLite uses no index for an
/// `(?1 is null or status = ?1)` term, so a status filter would scan every run (all of them
/// when none matches).
fn list_runs_sql(prefix: &str, filter: &RunFilter) -> sqlx::QueryBuilder<sqlx::Sqlite> {
    let mut sql = sqlx::QueryBuilder::new(prefix);
    sql.push(concat!("select ", run_columns!("'null'"), " from runs where 1"));
    if let Some(pipeline) = &filter.pipeline {
        sql.push(" and pipeline_name = ").push_bind(pipeline.clone());
    }
    if let Some(status) = filter.status {
        sql.push(" and status = ").push_bind(status.as_str());
    }
    if let Some((before_ts, before_id)) = filter.before {
        sql.push(" and (created_at, id) < (")
            .push_bind(before_ts.timestamp_micros())
            .push(", ")
            .push_bind(text(before_id))
            .push(")");
    }
    sql.push(" order by created_at desc, id desc limit ").push_bind(filter.limit);
    sql
}

impl SqliteStore {
    /// `path` is the rest of a `sqlite://` URL: the database file.
    pub(super) async fn connect(path: &str) -> Result<SqliteStore, Error> {
        if let Some(dir) = Path::new(path).parent()
            && !dir.as_os_str().is_empty()
        {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|source| Error::CreateDir { path: path.to_string(), source })?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.clone().create_if_missing(true))
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&writer).await?;
        // Opened after the migrations, so the file and its WAL exist.
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options.read_only(true))
            .await?;
        let inserts = RunInserter::start(writer.clone());
        Ok(SqliteStore { writer, reader, inserts })
    }

    pub(super) async fn ping(&self) -> Result<(), Error> {
        sqlx::query("select 1").execute(&self.reader).await?;
        Ok(())
    }

    /// Runs `work` in one transaction on the writer and commits it; on an error, rolls back.
    async fn write_transaction<T>(
        &self,
        work: impl AsyncFnOnce(&mut SqliteConnection) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let mut conn = self.writer.acquire().await?;
        let mut tx = conn.begin_with(BEGIN).await?;
        let result = match work(&mut tx).await {
            Ok(value) => tx.commit().await.map(|()| value).map_err(Error::from),
            Err(e) => {
                // `e` is the error to report; a failed rollback shows just below.
                let _ = tx.rollback().await;
                Err(e)
            }
        };
        if result.is_err() && conn.is_in_transaction() {
            // The rollback (or the commit) failed: SQLite may have ended the transaction
            // itself (SQLITE_FULL, IOERR, a trigger's RAISE(ROLLBACK)), yet sqlx still counts
            // it open, and every later `begin` on this, the only writer, would fail. Closing
            // it ends whatever is left; the pool opens a fresh connection.
            conn.close_on_drop();
        }
        result
    }
}
