//! The database. Only this module (and its children) writes SQL; run status
//! transitions live in the backends alone and are guarded in the statement
//! itself. Two backends, chosen at start from the URL: Postgres (`postgres/`,
//! many replicas) and SQLite (`sqlite/`, the single-node default). The public
//! types and the `Store` methods (in `runs.rs`, `runners.rs`, `bundles.rs`,
//! `transfer.rs`, `auth.rs` (users, sessions, tokens, login failures) and
//! `audit.rs`) are the same for both; each method only dispatches. What both
//! backends decide alike (the policy, the stored strings) is in `policy.rs`, how
//! they decode rows in `rows.rs`.

/// The columns every run query returns, in `Run::from_row`'s terms (both backends).
macro_rules! run_columns {
    () => {
        run_columns!("spec")
    };
    // `spec` replaced by an expression: listings skip the job template (the largest column,
    // never shown by the API) and select a JSON null in its place.
    ($spec:literal) => {
        concat!(
            "id, pipeline_name, pool, status, attempt, trigger, triggered_by, params, ",
            $spec,
            " as spec, runner_id, fencing_token,
         cancel_requested_at, cancel_force, waiting_reason, log_expired_at, exit_code, failure_reason, error_message, log_key, log_size_bytes,
         created_at, started_at, finished_at"
        )
    };
}

/// The columns of `run_attempts` an `AttemptRecord` reads (both backends).
macro_rules! attempt_columns {
    () => {
        "attempt, status, failure_reason, exit_code, error_message, runner_id, started_at, finished_at, log_key,
         log_size_bytes"
    };
}

/// The columns of `users` a `User` reads: plain, or (`joined`) from `users u` in a join,
/// read back as `u_<column>` (see `rows::user_at`).
macro_rules! user_columns {
    () => {
        "id, username, password_hash, role, disabled, created_at, updated_at, credentials_changed_at"
    };
    (joined) => {
        "u.id as u_id, u.username as u_username, u.password_hash as u_password_hash, u.role as u_role,
         u.disabled as u_disabled, u.created_at as u_created_at, u.updated_at as u_updated_at,
         u.credentials_changed_at as u_credentials_changed_at"
    };
}

/// The columns of `sessions` a `Session` reads; `$p` qualifies them in a join.
macro_rules! session_columns {
    () => {
        session_columns!("")
    };
    ($p:literal) => {
        concat!(
            $p,
            "id_hash, ",
            $p,
            "user_id, ",
            $p,
            "csrf_token, ",
            $p,
            "created_at, ",
            $p,
            "last_seen_at, ",
            $p,
            "expires_at, ",
            $p,
            "client_addr, ",
            $p,
            "user_agent"
        )
    };
}

/// The columns of `api_tokens` an `ApiToken` reads; `$p` qualifies them in a join.
macro_rules! token_columns {
    () => {
        token_columns!("")
    };
    ($p:literal) => {
        concat!(
            $p,
            "id, ",
            $p,
            "name, ",
            $p,
            "user_id, ",
            $p,
            "role, ",
            $p,
            "created_at, ",
            $p,
            "last_used_at, ",
            $p,
            "expires_at, ",
            $p,
            "revoked_at"
        )
    };
}

/// The columns of `audit_events` an `AuditEvent` reads.
macro_rules! audit_columns {
    () => {
        "id, at, actor_kind, actor, actor_id, client_addr, action, target, outcome, details"
    };
}

/// The columns of `login_failures` a `LoginFailure` reads.
macro_rules! login_failure_columns {
    () => {
        "key, failures, last_failure_at, locked_until"
    };
}

pub mod audit;
pub mod auth;
pub mod bundles;
pub mod policy;
mod postgres;
mod rows;
pub mod runner_identity;
pub mod runners;
pub mod runs;
mod sqlite;
pub mod transfer;

use postgres::PgStore;
use sqlite::SqliteStore;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database error: {0}")]
    Database(sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A failure of a SQLite transaction shared by several submissions (group commit):
    /// each of them gets it.
    #[error("database error (in a group commit): {0}")]
    GroupCommit(std::sync::Arc<sqlx::Error>),
    /// The SQLite backend's insert task is gone (the runtime is shutting down).
    #[error("the SQLite run writer has stopped")]
    WriterStopped,
    #[error("corrupt row: {0}")]
    Corrupt(String),
    #[error("unsupported database URL scheme `{0}`: expected postgres://, postgresql:// or sqlite://")]
    UnsupportedUrl(String),
    #[error("cannot create the directory of the SQLite database {path}: {source}")]
    CreateDir { path: String, source: std::io::Error },
    /// A unique value is taken (`what`: "username", "token name", …).
    #[error("{what} already exists")]
    Conflict { what: &'static str },
    /// The database did not answer in time (a caller's own patience ran out).
    #[error("the database did not answer within {0:?}")]
    Timeout(std::time::Duration),
    /// The change would leave no enabled admin.
    #[error("the last enabled admin cannot be demoted, disabled or deleted")]
    LastAdmin,
}

/// A unique violation (either dialect) as `Conflict { what }`; any other error as it is.
pub(crate) fn conflict(what: &'static str) -> impl FnOnce(sqlx::Error) -> Error {
    move |e| match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => Error::Conflict { what },
        _ => Error::from(e),
    }
}

impl From<sqlx::Error> for Error {
    /// A value the row cannot hold (unknown status, bad uuid, bad JSON) is a
    /// corrupt row, not a database failure.
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::Decode(_) | sqlx::Error::ColumnDecode { .. } => Error::Corrupt(e.to_string()),
            e => Error::Database(e),
        }
    }
}

#[derive(Clone)]
pub struct Store {
    backend: Backend,
    saved_bundles: bundles::SavedBundles,
}

#[derive(Clone)]
enum Backend {
    Postgres(PgStore),
    Sqlite(SqliteStore),
}

/// Calls the same method on whichever backend this store uses.
macro_rules! dispatch {
    ($store:ident . $method:ident ( $($arg:expr),* $(,)? )) => {
        match &$store.backend {
            $crate::store::Backend::Postgres(db) => db.$method($($arg),*).await,
            $crate::store::Backend::Sqlite(db) => db.$method($($arg),*).await,
        }
    };
}
pub(crate) use dispatch;

impl Store {
    /// Connects and brings the schema up to date. `postgres://` and
    /// `postgresql://` use Postgres (concurrent replicas are serialised by
    /// sqlx's migration lock); `sqlite://<path>` uses SQLite, creating the file
    /// and its directory if missing.
    pub async fn connect(url: &str) -> Result<Store, Error> {
        let backend = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres(PgStore::connect(url).await?)
        } else if let Some(path) = url.strip_prefix("sqlite://") {
            Backend::Sqlite(SqliteStore::connect(path).await?)
        } else {
            // Only the scheme: the rest may hold a password.
            return Err(Error::UnsupportedUrl(url.split(':').next().unwrap_or_default().to_string()));
        };
        Ok(Store { backend, saved_bundles: Default::default() })
    }

    /// `"postgres"` or `"sqlite"`.
    pub fn kind(&self) -> &'static str {
        match &self.backend {
            Backend::Postgres(_) => "postgres",
            Backend::Sqlite(_) => "sqlite",
        }
    }

    pub async fn ping(&self) -> Result<(), Error> {
        dispatch!(self.ping())
    }
}
