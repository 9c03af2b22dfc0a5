//! Row decoding, written once for both backends. Each row type says how it reads a
//! column of each kind ([`Columns`]): Postgres has native uuid, timestamptz and jsonb;
//! SQLite stores them as TEXT, INTEGER microseconds and TEXT. The `FromRow` impls
//! below are generic over that, so the columns of a run are listed once.

use super::audit::AuditEvent;
use super::auth::{ApiToken, LoginFailure, Session, User};
use super::policy;
use super::runner_identity::{Enrollment, RegistrationToken};
use super::runners::RunnerInfo;
use super::runs::{AttemptRecord, EndedAttempt, Run};
use super::transfer::{RunRecord, TokenRecord};
use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::{FromRow, Row};
use std::str::FromStr;
use uuid::Uuid;

type Result<T> = std::result::Result<T, sqlx::Error>;

fn bad_column(column: &str, e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> sqlx::Error {
    sqlx::Error::ColumnDecode { index: column.to_string(), source: e.into() }
}

/// How one backend's rows read each kind of column.
pub(super) trait Columns {
    fn text(&self, column: &str) -> Result<String>;
    fn opt_text(&self, column: &str) -> Result<Option<String>>;
    fn int(&self, column: &str) -> Result<i32>;
    fn bigint(&self, column: &str) -> Result<i64>;
    fn opt_bigint(&self, column: &str) -> Result<Option<i64>>;
    fn boolean(&self, column: &str) -> Result<bool>;
    fn uuid(&self, column: &str) -> Result<Uuid>;
    fn opt_uuid(&self, column: &str) -> Result<Option<Uuid>>;
    fn json(&self, column: &str) -> Result<serde_json::Value>;
    fn opt_json(&self, column: &str) -> Result<Option<serde_json::Value>>;
    fn opt_time(&self, column: &str) -> Result<Option<DateTime<Utc>>>;

    fn time(&self, column: &str) -> Result<DateTime<Utc>> {
        self.opt_time(column)?.ok_or_else(|| bad_column(column, "unexpected null"))
    }

    /// A text column holding one of a closed set of values.
    fn parsed<T: FromStr>(&self, column: &str) -> Result<T>
    where
        T::Err: std::error::Error + Send + Sync + 'static,
    {
        self.text(column)?.parse().map_err(|e| bad_column(column, e))
    }

    fn opt_parsed<T: FromStr>(&self, column: &str) -> Result<Option<T>>
    where
        T::Err: std::error::Error + Send + Sync + 'static,
    {
        self.opt_text(column)?.map(|s| s.parse()).transpose().map_err(|e| bad_column(column, e))
    }
}

/// The column kinds both drivers decode natively, the same way.
macro_rules! native_columns {
    () => {
        fn text(&self, column: &str) -> Result<String> {
            self.try_get(column)
        }
        fn opt_text(&self, column: &str) -> Result<Option<String>> {
            self.try_get(column)
        }
        fn int(&self, column: &str) -> Result<i32> {
            self.try_get(column)
        }
        fn bigint(&self, column: &str) -> Result<i64> {
            self.try_get(column)
        }
        fn opt_bigint(&self, column: &str) -> Result<Option<i64>> {
            self.try_get(column)
        }
        fn boolean(&self, column: &str) -> Result<bool> {
            self.try_get(column)
        }
    };
}

impl Columns for PgRow {
    native_columns!();

    fn uuid(&self, column: &str) -> Result<Uuid> {
        self.try_get(column)
    }
    fn opt_uuid(&self, column: &str) -> Result<Option<Uuid>> {
        self.try_get(column)
    }
    fn json(&self, column: &str) -> Result<serde_json::Value> {
        self.try_get(column)
    }
    fn opt_json(&self, column: &str) -> Result<Option<serde_json::Value>> {
        self.try_get(column)
    }
    fn opt_time(&self, column: &str) -> Result<Option<DateTime<Utc>>> {
        self.try_get(column)
    }
}

/// SQLite: uuids are hyphenated TEXT, JSON is TEXT, timestamps INTEGER unix microseconds.
impl Columns for SqliteRow {
    native_columns!();

    fn uuid(&self, column: &str) -> Result<Uuid> {
        self.text(column)?.parse().map_err(|e| bad_column(column, e))
    }
    fn opt_uuid(&self, column: &str) -> Result<Option<Uuid>> {
        self.opt_text(column)?.map(|s| s.parse()).transpose().map_err(|e| bad_column(column, e))
    }
    fn json(&self, column: &str) -> Result<serde_json::Value> {
        serde_json::from_str(&self.text(column)?).map_err(|e| bad_column(column, e))
    }
    fn opt_json(&self, column: &str) -> Result<Option<serde_json::Value>> {
        self.opt_text(column)?.map(|s| serde_json::from_str(&s)).transpose().map_err(|e| bad_column(column, e))
    }
    fn opt_time(&self, column: &str) -> Result<Option<DateTime<Utc>>> {
        let micros: Option<i64> = self.try_get(column)?;
        micros
            .map(|v| {
                DateTime::from_timestamp_micros(v).ok_or_else(|| bad_column(column, format!("{v} µs is out of range")))
            })
            .transpose()
    }
}

impl<'r, R: Row + Columns> FromRow<'r, R> for Run {
    fn from_row(row: &'r R) -> Result<Self> {
        Ok(Run {
            id: row.uuid("id")?,
            pipeline_name: row.text("pipeline_name")?,
            pool: row.text("pool")?,
            status: row.parsed("status")?,
            attempt: row.int("attempt")?,
            trigger: row.parsed("trigger")?,
            triggered_by: row.opt_text("triggered_by")?,
            params: row.json("params")?,
            spec: row.json("spec")?,
            runner_id: row.opt_text("runner_id")?,
            fencing_token: row.bigint("fencing_token")?,
            cancel_requested_at: row.opt_time("cancel_requested_at")?,
            cancel_force: row.boolean("cancel_force")?,
            waiting_reason: row.opt_parsed("waiting_reason")?,
            log_expired_at: row.opt_time("log_expired_at")?,
            exit_code: row.opt_bigint("exit_code")?,
            failure_reason: row.opt_parsed("failure_reason")?,
            error_message: row.opt_text("error_message")?,
            log_key: row.opt_text("log_key")?,
            log_size_bytes: row.bigint("log_size_bytes")?,
            created_at: row.time("created_at")?,
            started_at: row.opt_time("started_at")?,
            finished_at: row.opt_time("finished_at")?,
        })
    }
}

impl<'r, R: Row + Columns> FromRow<'r, R> for RunRecord {
    fn from_row(row: &'r R) -> Result<Self> {
        Ok(RunRecord {
            run: Run::from_row(row)?,
            timeout_seconds: row.opt_bigint("timeout_seconds")?,
            lease_expires_at: row.opt_time("lease_expires_at")?,
            not_before: row.opt_time("not_before")?,
        })
    }
}

impl<'r, R: Row + Columns> FromRow<'r, R> for AttemptRecord {
    fn from_row(row: &'r R) -> Result<Self> {
        Ok(AttemptRecord {
            attempt: row.int("attempt")?,
            status: policy::attempt_status(&row.text("status")?).map_err(|e| bad_column("status", e))?,
            failure_reason: row.opt_parsed("failure_reason")?,
            exit_code: row.opt_bigint("exit_code")?,
            error_message: row.opt_text("error_message")?,
            runner_id: row.opt_text("runner_id")?,
            started_at: row.opt_time("started_at")?,
            finished_at: row.opt_time("finished_at")?,
            log_key: row.opt_text("log_key")?,
            log_size_bytes: row.bigint("log_size_bytes")?,
        })
    }
}

impl<'r, R: Row + Columns> FromRow<'r, R> for EndedAttempt {
    fn from_row(row: &'r R) -> Result<Self> {
        Ok(EndedAttempt {
            run_id: row.uuid("run_id")?,
            attempt: row.int("attempt")?,
            finished_at: row.time("finished_at")?,
        })
    }
}

impl<'r, R: Row + Columns> FromRow<'r, R> for RunnerInfo {
    fn from_row(row: &'r R) -> Result<Self> {
        Ok(RunnerInfo {
            id: row.text("id")?,
            pool: row.text("pool")?,
            version: row.text("version")?,
            slots: row.int("slots")?,
            running: row.int("running")?,
            started_at: row.time("started_at")?,
            last_heartbeat_at: row.time("last_heartbeat_at")?,
        })
    }
}

/// A user from columns named `<prefix><column>` (`user_columns!()`: no prefix;
/// `user_columns!(joined)`: `u_`).
pub(super) fn user_at<R: Columns>(row: &R, prefix: &str) -> Result<User> {
    let c = |name: &str| format!("{prefix}{name}");
    Ok(User {
        id: row.uuid(&c("id"))?,
        username: row.text(&c("username"))?,
        password_hash: row.text(&c("password_hash"))?,
        role: row.parsed(&c("role"))?,
        disabled: row.boolean(&c("disabled"))?,
        created_at: row.time(&c("created_at"))?,
        updated_at: row.time(&c("updated_at"))?,
        credentials_changed_at: row.time(&c("credentials_changed_at"))?,
    })
}

impl<'r, R: Row + Columns> FromRow<'r, R> for User {
    fn from_row(row: &'r R) -> Result<Self> {
        user_at(row, "")
    }
}

impl<'r, R: Row + Columns> FromRow<'r, R> for Session {
    fn from_row(row: &'r R) -> Result<Self> {
        Ok(Session {
            id_hash: row.text("id_hash")?,
            user_id: row.uuid("user_id")?,
            csrf_token: row.text("csrf_token")?,
            created_at: row.time("created_at")?,
            last_seen_at: row.time("last_seen_at")?,
            expires_at: row.time("expires_at")?,
            client_addr: row.opt_text("client_addr")?,
            user_agent: row.opt_text("user_agent")?,
        })
    }
}

impl<'r, R: Row + Columns> FromRow<'r, R> for ApiToken {
    fn from_row(row: &'r R) -> Result<Self> {
        Ok(ApiToken {
            id: row.uuid("id")?,
            name: row.text("name")?,
            user_id: row.uuid("user_id")?,
            role: row.parsed("role")?,
            created_at: row.time("created_at")?,
            last_used_at: row.opt_time("last_used_at")?,
            expires_at: row.opt_time("expires_at")?,
            revoked_at: row.opt_time("revoked_at")?,
        })
    }
}

impl<'r, R: Row + Columns> FromRow<'r, R> for RegistrationToken {
    fn from_row(row: &'r R) -> Result<Self> {
        Ok(RegistrationToken {
            id: row.uuid("id")?,
            description: row.text("description")?,
            pool: row.opt_text("pool")?,
            single_use: row.boolean("single_use")?,
            expires_at: row.opt_time("expires_at")?,
            created_by: row.opt_uuid("created_by")?,
            created_at: row.time("created_at")?,
            uses: row.int("uses")?,
            last_used_at: row.opt_time("last_used_at")?,
            revoked_at: row.opt_time("revoked_at")?,
        })
    }
}

impl<'r, R: Row + Columns> FromRow<'r, R> for Enrollment {
    fn from_row(row: &'r R) -> Result<Self> {
        Ok(Enrollment {
            runner_id: row.text("runner_id")?,
            pool: row.text("pool")?,
            secret_hash: row.text("secret_hash")?,
            registration_token_id: row.opt_uuid("registration_token_id")?,
            enrolled_at: row.time("enrolled_at")?,
            revoked_at: row.opt_time("revoked_at")?,
        })
    }
}

impl<'r, R: Row + Columns> FromRow<'r, R> for TokenRecord {
    fn from_row(row: &'r R) -> Result<Self> {
        Ok(TokenRecord { token: ApiToken::from_row(row)?, token_hash: row.text("token_hash")? })
    }
}

/// A session and its user (`session_columns!("s.")`, `user_columns!(joined)`).
pub(super) fn session_with_user<R: Row + Columns>(row: &R) -> std::result::Result<(Session, User), super::Error> {
    Ok((Session::from_row(row)?, user_at(row, "u_")?))
}

/// A token and its owner (`token_columns!("t.")`, `user_columns!(joined)`).
pub(super) fn token_with_user<R: Row + Columns>(row: &R) -> std::result::Result<(ApiToken, User), super::Error> {
    Ok((ApiToken::from_row(row)?, user_at(row, "u_")?))
}

impl<'r, R: Row + Columns> FromRow<'r, R> for AuditEvent {
    fn from_row(row: &'r R) -> Result<Self> {
        Ok(AuditEvent {
            id: row.bigint("id")?,
            at: row.time("at")?,
            actor_kind: row.parsed("actor_kind")?,
            actor: row.text("actor")?,
            actor_id: row.opt_uuid("actor_id")?,
            client_addr: row.opt_text("client_addr")?,
            action: row.text("action")?,
            target: row.opt_text("target")?,
            outcome: row.parsed("outcome")?,
            details: row.opt_json("details")?,
        })
    }
}

impl<'r, R: Row + Columns> FromRow<'r, R> for LoginFailure {
    fn from_row(row: &'r R) -> Result<Self> {
        Ok(LoginFailure {
            key: row.text("key")?,
            failures: row.int("failures")?,
            last_failure_at: row.time("last_failure_at")?,
            locked_until: row.opt_time("locked_until")?,
        })
    }
}

/// Rows of `(id, attempt, <text column>)`.
pub(super) fn id_attempt_text<R: Columns>(
    rows: &[R],
    column: &str,
) -> std::result::Result<Vec<(Uuid, i32, String)>, super::Error> {
    let decoded: Result<Vec<_>> =
        rows.iter().map(|row| Ok((row.uuid("id")?, row.int("attempt")?, row.text(column)?))).collect();
    Ok(decoded?)
}

/// Every column of `runs` an import writes, in the order of its binds (`$1`…`$26`).
pub(super) const IMPORT_RUN: &str = "insert into runs (id, pipeline_name, pool, status, attempt, trigger, params, spec,
         runner_id, fencing_token, lease_expires_at, cancel_requested_at, cancel_force, waiting_reason, exit_code,
         failure_reason, error_message, log_key, log_size_bytes, log_expired_at, not_before, created_at,
         started_at, finished_at, timeout_seconds, triggered_by)
     values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20,
         $21, $22, $23, $24, $25, $26)
     on conflict (id) do nothing";

/// Binds a [`RunRecord`] to [`IMPORT_RUN`]; `$uuid`, `$time` and `$json` encode those
/// kinds in the backend's terms.
macro_rules! bind_run_record {
    ($query:expr, $r:expr, uuid: $uuid:expr, time: $time:expr, json: $json:expr $(,)?) => {{
        let r = $r;
        let run = &r.run;
        $query
            .bind($uuid(run.id))
            .bind(&run.pipeline_name)
            .bind(&run.pool)
            .bind(run.status.as_str())
            .bind(run.attempt)
            .bind(run.trigger.as_str())
            .bind($json(&run.params))
            .bind($json(&run.spec))
            .bind(&run.runner_id)
            .bind(run.fencing_token)
            .bind(r.lease_expires_at.map($time))
            .bind(run.cancel_requested_at.map($time))
            .bind(run.cancel_force)
            .bind(run.waiting_reason.map(|w| w.as_str()))
            .bind(run.exit_code)
            .bind(run.failure_reason.map(|f| f.as_str()))
            .bind(&run.error_message)
            .bind(&run.log_key)
            .bind(run.log_size_bytes)
            .bind(run.log_expired_at.map($time))
            .bind(r.not_before.map($time))
            .bind($time(run.created_at))
            .bind(run.started_at.map($time))
            .bind(run.finished_at.map($time))
            .bind(r.timeout_seconds)
            .bind(&run.triggered_by)
    }};
}
pub(super) use bind_run_record;

/// Every column of `run_attempts` an import writes, in the order of its binds.
pub(super) const IMPORT_ATTEMPT: &str = "insert into run_attempts (run_id, attempt, status, failure_reason, exit_code,
         error_message, runner_id, started_at, finished_at, log_key, log_size_bytes)
     values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
     on conflict (run_id, attempt) do nothing";

/// Binds an [`AttemptRecord`] of run `$run_id` to [`IMPORT_ATTEMPT`].
macro_rules! bind_attempt_record {
    ($query:expr, $run_id:expr, $a:expr, time: $time:expr $(,)?) => {{
        let a = $a;
        $query
            .bind($run_id)
            .bind(a.attempt)
            .bind(a.status.as_str())
            .bind(a.failure_reason.map(|f| f.as_str()))
            .bind(a.exit_code)
            .bind(&a.error_message)
            .bind(&a.runner_id)
            .bind(a.started_at.map($time))
            .bind(a.finished_at.map($time))
            .bind(&a.log_key)
            .bind(a.log_size_bytes)
    }};
}
pub(super) use bind_attempt_record;
