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
//!   so one fsync (`sqlite_batch.rs`).
//!
//! SQLite has no data-modifying CTEs, `for update` or arrays, so the few
//! multi-step transitions are transactions of guarded statements on the writer.

use super::Error;
use super::runners::RunnerInfo;
use super::runs::{ArchivedLog, AttemptRecord, Claim, ClaimResult, LeaseState, NewRun, Outcome, Run, RunFilter};
use super::sqlite_batch::RunInserter;
use super::transfer::{BundleRecord, RunRecord};
use chrono::{DateTime, Utc};
use shared::protocol::{AttemptRef, Heartbeat};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Connection, FromRow, Row};
use std::path::Path;
use std::time::Duration;
use uuid::Uuid;

/// Starts every write transaction holding the write lock (see the module doc).
pub(super) const BEGIN: &str = "begin immediate";

#[derive(Clone)]
pub(super) struct SqliteStore {
    pub(super) writer: SqlitePool,
    reader: SqlitePool,
    /// Run submissions, written in groups sharing one commit (`sqlite_batch.rs`).
    pub(super) inserts: RunInserter,
}

pub(super) fn now() -> i64 {
    Utc::now().timestamp_micros()
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// `now` minus `d`, in microseconds.
fn ago(d: Duration) -> i64 {
    now().saturating_sub(micros(d))
}

pub(super) fn text(id: Uuid) -> String {
    id.hyphenated().to_string()
}

fn bad_column(column: &str, e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> sqlx::Error {
    sqlx::Error::ColumnDecode { index: column.to_string(), source: e.into() }
}

fn get_uuid(row: &SqliteRow, column: &str) -> Result<Uuid, sqlx::Error> {
    let s: String = row.try_get(column)?;
    s.parse().map_err(|e| bad_column(column, e))
}

fn get_json(row: &SqliteRow, column: &str) -> Result<serde_json::Value, sqlx::Error> {
    let s: String = row.try_get(column)?;
    serde_json::from_str(&s).map_err(|e| bad_column(column, e))
}

fn to_time(column: &str, v: i64) -> Result<DateTime<Utc>, sqlx::Error> {
    DateTime::from_timestamp_micros(v).ok_or_else(|| bad_column(column, format!("{v} µs is out of range")))
}

fn get_time(row: &SqliteRow, column: &str) -> Result<DateTime<Utc>, sqlx::Error> {
    to_time(column, row.try_get(column)?)
}

fn get_opt_time(row: &SqliteRow, column: &str) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    let v: Option<i64> = row.try_get(column)?;
    v.map(|v| to_time(column, v)).transpose()
}

impl<'r> FromRow<'r, SqliteRow> for Run {
    fn from_row(row: &'r SqliteRow) -> Result<Self, sqlx::Error> {
        let status: String = row.try_get("status")?;
        let reason: Option<String> = row.try_get("failure_reason")?;
        Ok(Run {
            id: get_uuid(row, "id")?,
            pipeline_name: row.try_get("pipeline_name")?,
            pool: row.try_get("pool")?,
            status: status.parse().map_err(|e| bad_column("status", e))?,
            attempt: row.try_get("attempt")?,
            trigger: row.try_get("trigger")?,
            params: get_json(row, "params")?,
            spec: get_json(row, "spec")?,
            runner_id: row.try_get("runner_id")?,
            fencing_token: row.try_get("fencing_token")?,
            cancel_requested_at: get_opt_time(row, "cancel_requested_at")?,
            cancel_force: row.try_get("cancel_force")?,
            waiting_reason: row.try_get("waiting_reason")?,
            log_expired_at: get_opt_time(row, "log_expired_at")?,
            exit_code: row.try_get("exit_code")?,
            failure_reason: reason.map(|r| r.parse()).transpose().map_err(|e| bad_column("failure_reason", e))?,
            error_message: row.try_get("error_message")?,
            log_key: row.try_get("log_key")?,
            log_size_bytes: row.try_get("log_size_bytes")?,
            created_at: get_time(row, "created_at")?,
            started_at: get_opt_time(row, "started_at")?,
            finished_at: get_opt_time(row, "finished_at")?,
        })
    }
}

impl<'r> FromRow<'r, SqliteRow> for RunRecord {
    fn from_row(row: &'r SqliteRow) -> Result<Self, sqlx::Error> {
        Ok(RunRecord {
            run: Run::from_row(row)?,
            lease_expires_at: get_opt_time(row, "lease_expires_at")?,
            not_before: get_opt_time(row, "not_before")?,
        })
    }
}

impl<'r> FromRow<'r, SqliteRow> for AttemptRecord {
    fn from_row(row: &'r SqliteRow) -> Result<Self, sqlx::Error> {
        Ok(AttemptRecord {
            attempt: row.try_get("attempt")?,
            status: row.try_get("status")?,
            failure_reason: row.try_get("failure_reason")?,
            exit_code: row.try_get("exit_code")?,
            error_message: row.try_get("error_message")?,
            runner_id: row.try_get("runner_id")?,
            started_at: get_opt_time(row, "started_at")?,
            finished_at: get_opt_time(row, "finished_at")?,
            log_key: row.try_get("log_key")?,
            log_size_bytes: row.try_get("log_size_bytes")?,
        })
    }
}

impl<'r> FromRow<'r, SqliteRow> for RunnerInfo {
    fn from_row(row: &'r SqliteRow) -> Result<Self, sqlx::Error> {
        Ok(RunnerInfo {
            id: row.try_get("id")?,
            pool: row.try_get("pool")?,
            version: row.try_get("version")?,
            slots: row.try_get("slots")?,
            running: row.try_get("running")?,
            started_at: get_time(row, "started_at")?,
            last_heartbeat_at: get_time(row, "last_heartbeat_at")?,
        })
    }
}

/// Rows of `(id, attempt, <text column>)`.
fn id_attempt_text(rows: &[SqliteRow], column: &str) -> Result<Vec<(Uuid, i32, String)>, Error> {
    let decoded: Result<Vec<_>, sqlx::Error> =
        rows.iter().map(|row| Ok((get_uuid(row, "id")?, row.try_get("attempt")?, row.try_get(column)?))).collect();
    Ok(decoded?)
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

    /// Concurrent submissions share one transaction, so one fsync (see `sqlite_batch.rs`);
    /// the run is committed when this returns.
    pub(super) async fn insert_run(&self, new: NewRun<'_>) -> Result<Run, Error> {
        self.inserts.insert(new).await
    }

    pub(super) async fn get_run(&self, id: Uuid) -> Result<Option<Run>, Error> {
        let run = sqlx::query_as::<_, Run>(concat!("select ", run_columns!(), " from runs where id = $1"))
            .bind(text(id))
            .fetch_optional(&self.reader)
            .await?;
        Ok(run)
    }

    /// Newest first, keyset-paginated on (created_at, id) (the SQL: [`list_runs_sql`]).
    pub(super) async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<Run>, Error> {
        let runs = list_runs_sql("", filter).build_query_as::<Run>().fetch_all(&self.reader).await?;
        Ok(runs)
    }

    /// The single writer connection serialises claims (no advisory lock needed).
    pub(super) async fn get_runs(&self, ids: &[Uuid]) -> Result<Vec<Run>, Error> {
        let ids = serde_json::Value::from(ids.iter().map(|id| text(*id)).collect::<Vec<_>>()).to_string();
        let runs = sqlx::query_as::<_, Run>(concat!(
            "select ",
            run_columns!(),
            " from runs where id in (select value from json_each($1))"
        ))
        .bind(ids)
        .fetch_all(&self.reader)
        .await?;
        Ok(runs)
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

    /// All claims in one transaction on the writer: one commit (one WAL fsync)
    /// for the whole batch. The writer serialises claims, so the counts are exact.
    pub(super) async fn claim_batch(&self, claims: &[Claim<'_>]) -> Result<Vec<ClaimResult>, Error> {
        let now = now();
        self.write_transaction(async |tx| {
            let mut results = Vec::with_capacity(claims.len());
            for claim in claims {
                results.push(Self::claim_in(tx, claim, now).await?);
            }
            Ok(results)
        })
        .await
    }

    async fn claim_in(tx: &mut SqliteConnection, claim: &Claim<'_>, now: i64) -> Result<ClaimResult, Error> {
        let id = text(claim.run_id);
        if claim.is_limited() {
            let (running, running_here): (i64, i64) = sqlx::query_as(
                "select count(*), count(*) filter (where pipeline_name = $1) from runs where status = 'running'",
            )
            .bind(claim.pipeline_name)
            .fetch_one(&mut *tx)
            .await?;
            let blocked_by = if claim.max_running.is_some_and(|max| running >= max) {
                Some("max_concurrent_runs")
            } else if claim.max_running_of_pipeline.is_some_and(|max| running_here >= max) {
                Some("pipeline_max_concurrent")
            } else {
                None
            };
            if let Some(reason) = blocked_by {
                return Self::hold_back(tx, &id, claim.attempt, reason).await;
            }
        }
        let run = sqlx::query_as::<_, Run>(concat!(
            "update runs set status = 'running', runner_id = $3, fencing_token = fencing_token + 1,
                 lease_expires_at = $4, started_at = $5, waiting_reason = null
             where id = $1 and attempt = $2 and status = 'queued' and (not_before is null or not_before <= $5)
             returning ",
            run_columns!()
        ))
        .bind(&id)
        .bind(claim.attempt)
        .bind(claim.runner_id)
        .bind(now.saturating_add(micros(claim.lease)))
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(run) = run {
            return Ok(ClaimResult::Granted(Box::new(run)));
        }
        // Not claimable: still backing off before a retry, or no longer queued.
        let backing_off: Option<(i32,)> =
            sqlx::query_as("select attempt from runs where id = $1 and status = 'queued' and not_before > $2")
                .bind(&id)
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?;
        match backing_off {
            Some((attempt,)) if attempt == claim.attempt => {
                Self::hold_back(tx, &id, claim.attempt, "retry_backoff").await
            }
            _ => Ok(ClaimResult::Gone),
        }
    }

    /// The run stays queued, marked with why.
    async fn hold_back(
        tx: &mut sqlx::SqliteConnection,
        id: &str,
        attempt: i32,
        reason: &'static str,
    ) -> Result<ClaimResult, Error> {
        sqlx::query("update runs set waiting_reason = $3 where id = $1 and attempt = $2 and status = 'queued'")
            .bind(id)
            .bind(attempt)
            .bind(reason)
            .execute(&mut *tx)
            .await?;
        Ok(ClaimResult::Waiting(reason))
    }

    pub(super) async fn count_active(&self, pipeline_name: &str) -> Result<(i64, i64), Error> {
        let counts = sqlx::query_as(
            "select count(*), count(*) filter (where pipeline_name = $1) from runs
             where status in ('queued', 'running')",
        )
        .bind(pipeline_name)
        .fetch_one(&self.reader)
        .await?;
        Ok(counts)
    }

    pub(super) async fn waiting_runs(&self, limit: i64) -> Result<Vec<(Uuid, i32, String)>, Error> {
        let rows = sqlx::query(
            "select id, attempt, pool from runs where status = 'queued' and waiting_reason is not null
               and (not_before is null or not_before <= $2)
             order by created_at limit $1",
        )
        .bind(limit)
        .bind(now())
        .fetch_all(&self.reader)
        .await?;
        id_attempt_text(&rows, "pool")
    }

    /// One guarded update per held attempt, all in one transaction.
    pub(super) async fn renew_leases(
        &self,
        runner_id: &str,
        held: &[AttemptRef],
        lease: Duration,
    ) -> Result<Vec<LeaseState>, Error> {
        let expires = now().saturating_add(micros(lease));
        self.write_transaction(async |tx| {
            let mut renewed = Vec::with_capacity(held.len());
            for at in held {
                let row: Option<(bool, bool)> = sqlx::query_as(
                    "update runs set lease_expires_at = $5
                     where id = $1 and attempt = $2 and fencing_token = $3 and status = 'running' and runner_id = $4
                     returning cancel_requested_at is not null, cancel_force",
                )
                .bind(text(at.run_id))
                .bind(at.attempt)
                .bind(at.fencing_token)
                .bind(runner_id)
                .bind(expires)
                .fetch_optional(&mut *tx)
                .await?;
                if let Some((cancel_requested, cancel_force)) = row {
                    renewed.push(LeaseState { attempt: at.clone(), cancel_requested, cancel_force });
                }
            }
            Ok(renewed)
        })
        .await
    }

    /// Two statements with the same guard in one writer transaction: record the
    /// attempt (nothing inserted means the guard failed: stop, nothing changed),
    /// then move the run on.
    pub(super) async fn end_attempt(
        &self,
        at: &AttemptRef,
        outcome: &Outcome,
        log: Option<&ArchivedLog>,
        retry_after: Option<Duration>,
    ) -> Result<Option<Run>, Error> {
        let now = now();
        let id = text(at.run_id);
        self.write_transaction(async |tx| {
            let recorded = sqlx::query(
                "insert into run_attempts (run_id, attempt, status, failure_reason, exit_code, error_message,
                     runner_id, started_at, finished_at, log_key, log_size_bytes)
                 select id, attempt, $4, $5, $6, $7, runner_id, started_at, $10, $8, coalesce($9, 0) from runs
                 where id = $1 and attempt = $2 and fencing_token = $3 and status = 'running'",
            )
            .bind(&id)
            .bind(at.attempt)
            .bind(at.fencing_token)
            .bind(outcome.status.as_str())
            .bind(outcome.reason.map(|r| r.as_str()))
            .bind(outcome.exit_code)
            .bind(outcome.error_message.as_deref())
            .bind(log.map(|l| l.key.as_str()))
            .bind(log.map(|l| l.size))
            .bind(now)
            .execute(&mut *tx)
            .await?;
            if recorded.rows_affected() == 0 {
                return Ok(None);
            }
            let run = match retry_after {
                None => {
                    sqlx::query_as::<_, Run>(concat!(
                        "update runs set status = $4, failure_reason = $5, exit_code = $6, error_message = $7,
                         log_key = $8, log_size_bytes = coalesce($9, 0), finished_at = $10, lease_expires_at = null
                     where id = $1 and attempt = $2 and fencing_token = $3 and status = 'running'
                     returning ",
                        run_columns!()
                    ))
                    .bind(&id)
                    .bind(at.attempt)
                    .bind(at.fencing_token)
                    .bind(outcome.status.as_str())
                    .bind(outcome.reason.map(|r| r.as_str()))
                    .bind(outcome.exit_code)
                    .bind(outcome.error_message.as_deref())
                    .bind(log.map(|l| l.key.as_str()))
                    .bind(log.map(|l| l.size))
                    .bind(now)
                    .fetch_optional(&mut *tx)
                    .await?
                }
                Some(after) => {
                    sqlx::query_as::<_, Run>(concat!(
                        "update runs set status = 'queued', attempt = attempt + 1, runner_id = null,
                         lease_expires_at = null, cancel_requested_at = null, cancel_force = 0,
                         exit_code = null, failure_reason = null, error_message = null, log_key = null,
                         log_size_bytes = 0, started_at = null, finished_at = null,
                         not_before = $4, waiting_reason = 'retry_backoff'
                     where id = $1 and attempt = $2 and fencing_token = $3 and status = 'running'
                     returning ",
                        run_columns!()
                    ))
                    .bind(&id)
                    .bind(at.attempt)
                    .bind(at.fencing_token)
                    .bind(now.saturating_add(micros(after)))
                    .fetch_optional(&mut *tx)
                    .await?
                }
            };
            Ok(run)
        })
        .await
    }

    pub(super) async fn attempts(&self, run_id: Uuid) -> Result<Vec<AttemptRecord>, Error> {
        let rows = sqlx::query_as::<_, AttemptRecord>(
            "select attempt, status, failure_reason, exit_code, error_message, runner_id, started_at,
                    finished_at, log_key, log_size_bytes
             from run_attempts where run_id = $1 order by attempt",
        )
        .bind(text(run_id))
        .fetch_all(&self.reader)
        .await?;
        Ok(rows)
    }

    pub(super) async fn cancel_queued(&self, id: Uuid) -> Result<Option<Run>, Error> {
        let run = sqlx::query_as::<_, Run>(concat!(
            "update runs set status = 'cancelled', failure_reason = 'cancelled',
                 cancel_requested_at = $2, finished_at = $2
             where id = $1 and status = 'queued'
             returning ",
            run_columns!()
        ))
        .bind(text(id))
        .bind(now())
        .fetch_optional(&self.writer)
        .await?;
        Ok(run)
    }

    pub(super) async fn request_cancel(&self, id: Uuid, force: bool) -> Result<Option<Run>, Error> {
        let run = sqlx::query_as::<_, Run>(concat!(
            "update runs set cancel_requested_at = coalesce(cancel_requested_at, $3),
                 cancel_force = cancel_force or $2
             where id = $1 and status = 'running'
             returning ",
            run_columns!()
        ))
        .bind(text(id))
        .bind(force)
        .bind(now())
        .fetch_optional(&self.writer)
        .await?;
        Ok(run)
    }

    pub(super) async fn stale_queued(
        &self,
        older_than: Duration,
        limit: i64,
    ) -> Result<Vec<(Uuid, i32, String)>, Error> {
        let rows = sqlx::query(
            "select id, attempt, pool from runs
             where status = 'queued' and created_at < $1
               and (not_before is null or not_before <= $2)
             order by created_at limit $3",
        )
        .bind(ago(older_than))
        .bind(now())
        .bind(limit)
        .fetch_all(&self.reader)
        .await?;
        id_attempt_text(&rows, "pool")
    }

    pub(super) async fn overdue_runs(&self, slack: Duration, limit: i64) -> Result<Vec<Run>, Error> {
        let runs = sqlx::query_as::<_, Run>(concat!(
            "select ",
            run_columns!(),
            " from runs
             where status = 'running' and json_extract(spec, '$.timeout_seconds') is not null
               and started_at + cast(json_extract(spec, '$.timeout_seconds') * 1000000.0 as integer) + $1 < $2
             limit $3"
        ))
        .bind(micros(slack))
        .bind(now())
        .bind(limit)
        .fetch_all(&self.reader)
        .await?;
        Ok(runs)
    }

    /// One statement on the single writer: nobody else can expire the same log.
    pub(super) async fn expire_logs(
        &self,
        keep_runs: Option<i64>,
        max_age: Option<Duration>,
        limit: i64,
    ) -> Result<Vec<(Uuid, i32, String)>, Error> {
        let rows = sqlx::query(
            "with ranked as (
                 select id, row_number() over (partition by pipeline_name order by created_at desc, id desc) as rn
                 from runs where status in ('success', 'failed', 'cancelled'))
             update runs set log_expired_at = $4
             where log_key is not null and log_expired_at is null
               and id in (
                 select r.id from runs r join ranked k on k.id = r.id
                 where r.log_key is not null and r.log_expired_at is null
                   and (($1 is not null and k.rn > $1) or ($2 is not null and r.finished_at < $2))
                 limit $3)
             returning id, attempt, log_key",
        )
        .bind(keep_runs)
        .bind(max_age.map(ago))
        .bind(limit)
        .bind(now())
        .fetch_all(&self.writer)
        .await?;
        id_attempt_text(&rows, "log_key")
    }

    pub(super) async fn fail_unrunnable(
        &self,
        after: Duration,
        runner_silence: Duration,
        limit: i64,
    ) -> Result<Vec<Run>, Error> {
        let runs = sqlx::query_as::<_, Run>(concat!(
            "update runs set status = 'failed', failure_reason = 'no_runner', finished_at = $4,
                 error_message = 'no runner of pool `' || pool || '` was available',
                 waiting_reason = null
             where status = 'queued' and id in (
                 select id from runs r
                 where status = 'queued' and coalesce(not_before, created_at) < $1
                   and not exists (select 1 from runners w where w.pool = r.pool and w.last_heartbeat_at > $2)
                 limit $3)
             returning ",
            run_columns!()
        ))
        .bind(ago(after))
        .bind(ago(runner_silence))
        .bind(limit)
        .bind(now())
        .fetch_all(&self.writer)
        .await?;
        Ok(runs)
    }

    pub(super) async fn expired_leases(&self, limit: i64) -> Result<Vec<Run>, Error> {
        let runs = sqlx::query_as::<_, Run>(concat!(
            "select ",
            run_columns!(),
            " from runs where status = 'running' and lease_expires_at < $1
             order by lease_expires_at limit $2"
        ))
        .bind(now())
        .bind(limit)
        .fetch_all(&self.reader)
        .await?;
        Ok(runs)
    }

    pub(super) async fn running_on_runner(&self, runner_id: &str) -> Result<Vec<Run>, Error> {
        let runs = sqlx::query_as::<_, Run>(concat!(
            "select ",
            run_columns!(),
            " from runs where status = 'running' and runner_id = $1"
        ))
        .bind(runner_id)
        .fetch_all(&self.reader)
        .await?;
        Ok(runs)
    }

    pub(super) async fn record_heartbeat(&self, hb: &Heartbeat) -> Result<(), Error> {
        sqlx::query(
            "insert into runners (id, pool, version, slots, running, started_at, last_heartbeat_at)
             values ($1, $2, $3, $4, $5, $6, $6)
             on conflict (id) do update set pool = excluded.pool, version = excluded.version,
                 slots = excluded.slots, running = excluded.running, last_heartbeat_at = excluded.last_heartbeat_at",
        )
        .bind(&hb.runner_id)
        .bind(&hb.pool)
        .bind(&hb.version)
        .bind(i32::try_from(hb.slots).unwrap_or(i32::MAX))
        .bind(i32::try_from(hb.running.len()).unwrap_or(i32::MAX))
        .bind(now())
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    pub(super) async fn list_runners(&self, within_secs: i64) -> Result<Vec<RunnerInfo>, Error> {
        let rows = sqlx::query_as::<_, RunnerInfo>(
            "select id, pool, version, slots, running, started_at, last_heartbeat_at from runners
             where last_heartbeat_at > $1 order by id",
        )
        .bind(now().saturating_sub(within_secs.saturating_mul(1_000_000)))
        .fetch_all(&self.reader)
        .await?;
        Ok(rows)
    }

    pub(super) async fn save_bundle(&self, digest: &str, data: &[u8]) -> Result<(), Error> {
        sqlx::query(
            "insert into code_bundles (digest, data, created_at) values ($1, $2, $3) on conflict (digest) do nothing",
        )
        .bind(digest)
        .bind(data)
        .bind(now())
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    pub(super) async fn load_bundle(&self, digest: &str) -> Result<Option<Vec<u8>>, Error> {
        let row: Option<(Vec<u8>,)> = sqlx::query_as("select data from code_bundles where digest = $1")
            .bind(digest)
            .fetch_optional(&self.reader)
            .await?;
        Ok(row.map(|(data,)| data))
    }

    pub(super) async fn export_runs(&self, after: Option<Uuid>, limit: i64) -> Result<Vec<RunRecord>, Error> {
        let rows = sqlx::query_as::<_, RunRecord>(concat!(
            "select ",
            run_columns!(),
            ", lease_expires_at, not_before from runs where ($1 is null or id > $1) order by id limit $2"
        ))
        .bind(after.map(text))
        .bind(limit)
        .fetch_all(&self.reader)
        .await?;
        Ok(rows)
    }

    pub(super) async fn import_run(&self, r: &RunRecord) -> Result<bool, Error> {
        let run = &r.run;
        let us = |t: Option<DateTime<Utc>>| t.map(|t| t.timestamp_micros());
        let done = sqlx::query(
            "insert into runs (id, pipeline_name, pool, status, attempt, trigger, params, spec, runner_id,
                 fencing_token, lease_expires_at, cancel_requested_at, cancel_force, waiting_reason, exit_code,
                 failure_reason, error_message, log_key, log_size_bytes, log_expired_at, not_before, created_at,
                 started_at, finished_at)
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20,
                 $21, $22, $23, $24)
             on conflict (id) do nothing",
        )
        .bind(text(run.id))
        .bind(&run.pipeline_name)
        .bind(&run.pool)
        .bind(run.status.as_str())
        .bind(run.attempt)
        .bind(&run.trigger)
        .bind(run.params.to_string())
        .bind(run.spec.to_string())
        .bind(&run.runner_id)
        .bind(run.fencing_token)
        .bind(us(r.lease_expires_at))
        .bind(us(run.cancel_requested_at))
        .bind(run.cancel_force)
        .bind(&run.waiting_reason)
        .bind(run.exit_code)
        .bind(run.failure_reason.map(|f| f.as_str()))
        .bind(&run.error_message)
        .bind(&run.log_key)
        .bind(run.log_size_bytes)
        .bind(us(run.log_expired_at))
        .bind(us(r.not_before))
        .bind(run.created_at.timestamp_micros())
        .bind(us(run.started_at))
        .bind(us(run.finished_at))
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub(super) async fn import_attempt(&self, run_id: Uuid, a: &AttemptRecord) -> Result<bool, Error> {
        let done = sqlx::query(
            "insert into run_attempts (run_id, attempt, status, failure_reason, exit_code, error_message,
                 runner_id, started_at, finished_at, log_key, log_size_bytes)
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
             on conflict (run_id, attempt) do nothing",
        )
        .bind(text(run_id))
        .bind(a.attempt)
        .bind(&a.status)
        .bind(&a.failure_reason)
        .bind(a.exit_code)
        .bind(&a.error_message)
        .bind(&a.runner_id)
        .bind(a.started_at.map(|t| t.timestamp_micros()))
        .bind(a.finished_at.map(|t| t.timestamp_micros()))
        .bind(&a.log_key)
        .bind(a.log_size_bytes)
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub(super) async fn export_bundles(&self, after: Option<&str>, limit: i64) -> Result<Vec<BundleRecord>, Error> {
        let rows = sqlx::query(
            "select digest, data, created_at from code_bundles where ($1 is null or digest > $1)
             order by digest limit $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&self.reader)
        .await?;
        let decoded: Result<Vec<_>, sqlx::Error> = rows
            .iter()
            .map(|row| {
                Ok(BundleRecord {
                    digest: row.try_get("digest")?,
                    data: row.try_get("data")?,
                    created_at: get_time(row, "created_at")?,
                })
            })
            .collect();
        Ok(decoded?)
    }

    pub(super) async fn import_bundle(&self, b: &BundleRecord) -> Result<bool, Error> {
        let done = sqlx::query(
            "insert into code_bundles (digest, data, created_at) values ($1, $2, $3) on conflict (digest) do nothing",
        )
        .bind(&b.digest)
        .bind(&b.data)
        .bind(b.created_at.timestamp_micros())
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub(super) async fn count_runs(&self) -> Result<i64, Error> {
        let (n,): (i64,) = sqlx::query_as("select count(*) from runs").fetch_one(&self.reader).await?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
}
