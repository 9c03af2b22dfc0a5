//! The audit log: append-only (the store has no update or delete for it, and the
//! database refuses both with a trigger). What to record, and that no secret is ever
//! in it, is `crate::auth::audit`'s business.

pub use super::policy::{ActorKind, AuditOutcome};
use super::{Error, Store, dispatch};
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEvent {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor_kind: ActorKind,
    /// A username, a token name, `system`, or `anonymous`.
    pub actor: String,
    pub actor_id: Option<Uuid>,
    pub client_addr: Option<String>,
    /// Free text in the store (old rows stay readable when actions are added); the
    /// domain writes `auth::audit::Action` strings.
    pub action: String,
    pub target: Option<String>,
    pub outcome: AuditOutcome,
    pub details: Option<serde_json::Value>,
}

pub struct NewAuditEvent<'a> {
    pub actor_kind: ActorKind,
    pub actor: &'a str,
    pub actor_id: Option<Uuid>,
    pub client_addr: Option<&'a str>,
    pub action: &'a str,
    pub target: Option<&'a str>,
    pub outcome: AuditOutcome,
    pub details: Option<&'a serde_json::Value>,
}

#[derive(Debug, Default, Clone)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub action: Option<String>,
    /// Events at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Keyset position: events strictly older than this (at, id).
    pub before: Option<(DateTime<Utc>, i64)>,
    pub limit: i64,
}

impl Store {
    /// Appends one event; returns its id.
    pub async fn insert_audit(&self, event: &NewAuditEvent<'_>) -> Result<i64, Error> {
        dispatch!(self.insert_audit(event))
    }

    /// Newest first, keyset-paginated on (at, id); only the filters given are in the SQL.
    pub async fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>, Error> {
        dispatch!(self.list_audit(filter))
    }
}
