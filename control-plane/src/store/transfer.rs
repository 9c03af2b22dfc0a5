//! Backend-neutral export and import of whole rows, for moving a deployment
//! from one backend to the other (e.g. SQLite to Postgres). Every import is an
//! insert that does nothing on conflict, so a second pass changes nothing and
//! an interrupted copy can simply be run again. Import runs before their
//! attempts (attempts reference their run), users before their tokens. Sessions
//! and login failure counters are not moved (users log in again), nor is the
//! audit log (its ids are the target's own).

use super::auth::{ApiToken, User};
use super::runs::{AttemptRecord, Run};
use super::{Error, Store, dispatch};
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// Every column of `runs`: the public [`Run`] plus the columns only the store
/// itself reads.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    pub run: Run,
    pub timeout_seconds: Option<i64>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub not_before: Option<DateTime<Utc>>,
}

/// Every column of `code_bundles`.
#[derive(Debug, Clone, PartialEq)]
pub struct BundleRecord {
    pub digest: String,
    pub data: Vec<u8>,
    pub created_at: DateTime<Utc>,
}

/// Every column of `api_tokens`: the listed [`ApiToken`] plus its hash.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenRecord {
    pub token: ApiToken,
    pub token_hash: String,
}

impl Store {
    /// Every user, password hash included.
    pub async fn export_users(&self) -> Result<Vec<User>, Error> {
        dispatch!(self.list_users())
    }

    /// Inserts the user exactly as recorded; `false` if its id or username exists.
    pub async fn import_user(&self, user: &User) -> Result<bool, Error> {
        dispatch!(self.import_user(user))
    }

    /// Every API token (revoked ones too), hash included.
    pub async fn export_tokens(&self) -> Result<Vec<TokenRecord>, Error> {
        dispatch!(self.export_tokens())
    }

    /// Inserts the token exactly as recorded; `false` if it exists (id, hash, or an
    /// unrevoked token of that name for the user).
    pub async fn import_token(&self, record: &TokenRecord) -> Result<bool, Error> {
        dispatch!(self.import_token(record))
    }

    /// Up to `limit` runs with an id greater than `after`, ordered by id (keyset
    /// pagination: pass the last id of one page to get the next).
    pub async fn export_runs(&self, after: Option<Uuid>, limit: i64) -> Result<Vec<RunRecord>, Error> {
        dispatch!(self.export_runs(after, limit))
    }

    /// Inserts the run exactly as recorded; `false` if a run with its id exists.
    pub async fn import_run(&self, record: &RunRecord) -> Result<bool, Error> {
        dispatch!(self.import_run(record))
    }

    /// Every recorded attempt of a run, oldest first.
    pub async fn export_attempts(&self, run_id: Uuid) -> Result<Vec<AttemptRecord>, Error> {
        dispatch!(self.attempts(run_id))
    }

    /// Inserts one attempt of a run; `false` if that attempt exists.
    pub async fn import_attempt(&self, run_id: Uuid, record: &AttemptRecord) -> Result<bool, Error> {
        dispatch!(self.import_attempt(run_id, record))
    }

    /// Up to `limit` bundles with a digest greater than `after`, ordered by digest.
    pub async fn export_bundles(&self, after: Option<&str>, limit: i64) -> Result<Vec<BundleRecord>, Error> {
        dispatch!(self.export_bundles(after, limit))
    }

    /// Inserts one bundle; `false` if its digest exists.
    pub async fn import_bundle(&self, record: &BundleRecord) -> Result<bool, Error> {
        dispatch!(self.import_bundle(record))
    }

    /// All runs, whatever their status (to check a copy).
    pub async fn count_runs(&self) -> Result<i64, Error> {
        dispatch!(self.count_runs())
    }
}
