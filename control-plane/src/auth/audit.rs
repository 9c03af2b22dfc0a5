//! The audit log's one entry point: [`record`]. Every state change and every login
//! attempt writes one entry. Its arguments are names and ids, never secrets: there is
//! no parameter for a password or token, and `details` is scrubbed of keys that name
//! one (see [`SECRET_KEYS`]).

use super::Error;
use crate::store::Store;
pub use crate::store::audit::AuditOutcome as Outcome;
use crate::store::audit::{ActorKind, AuditEvent, AuditFilter, NewAuditEvent};
use uuid::Uuid;

/// What happened; stored as its snake_case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    LoginOk,
    LoginFailed,
    Logout,
    PasswordChange,
    UserCreate,
    UserUpdate,
    UserDelete,
    TokenCreate,
    TokenRevoke,
    RunTrigger,
    RunCancel,
    SecretChange,
    ScheduleChange,
    RunnerChange,
    SyncStart,
}

impl Action {
    pub const ALL: &'static [Action] = &[
        Action::LoginOk,
        Action::LoginFailed,
        Action::Logout,
        Action::PasswordChange,
        Action::UserCreate,
        Action::UserUpdate,
        Action::UserDelete,
        Action::TokenCreate,
        Action::TokenRevoke,
        Action::RunTrigger,
        Action::RunCancel,
        Action::SecretChange,
        Action::ScheduleChange,
        Action::RunnerChange,
        Action::SyncStart,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::LoginOk => "login_ok",
            Action::LoginFailed => "login_failed",
            Action::Logout => "logout",
            Action::PasswordChange => "password_change",
            Action::UserCreate => "user_create",
            Action::UserUpdate => "user_update",
            Action::UserDelete => "user_delete",
            Action::TokenCreate => "token_create",
            Action::TokenRevoke => "token_revoke",
            Action::RunTrigger => "run_trigger",
            Action::RunCancel => "run_cancel",
            Action::SecretChange => "secret_change",
            Action::ScheduleChange => "schedule_change",
            Action::RunnerChange => "runner_change",
            Action::SyncStart => "sync_start",
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who acted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor<'a> {
    User {
        id: Uuid,
        name: &'a str,
    },
    /// A token, recorded by its name with its owner's id.
    Token {
        user_id: Uuid,
        name: &'a str,
    },
    /// The control plane itself or its CLI (`name`: e.g. `system`, `cli`).
    System {
        name: &'a str,
    },
    /// No credentials (a failed login records the username tried as its target).
    Anonymous,
}

/// One audit entry.
pub struct Entry<'a> {
    pub actor: Actor<'a>,
    pub client_addr: Option<&'a str>,
    pub action: Action,
    /// What was acted on: `user:alice`, `token:ci`, `run:<id>`, …
    pub target: Option<&'a str>,
    pub outcome: Outcome,
    /// Extra context (e.g. `{"role": "operator"}`); keys naming secrets are dropped.
    pub details: Option<serde_json::Value>,
}

/// Keys removed from `details` at any depth, whatever their value.
pub const SECRET_KEYS: &[&str] = &[
    "password",
    "current_password",
    "new_password",
    "token",
    "secret",
    "value",
    "csrf_token",
    "session_id",
    "cookie",
    "authorization",
];

fn scrub(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            map.retain(|key, _| !SECRET_KEYS.contains(&key.to_ascii_lowercase().as_str()));
            map.values_mut().for_each(scrub);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(scrub),
        _ => {}
    }
}

/// Appends one entry; returns its id. Callers usually log a failure and carry on
/// (the action itself already happened).
pub async fn record(store: &Store, entry: Entry<'_>) -> Result<i64, Error> {
    let (actor_kind, actor, actor_id) = match entry.actor {
        Actor::User { id, name } => (ActorKind::User, name, Some(id)),
        Actor::Token { user_id, name } => (ActorKind::Token, name, Some(user_id)),
        Actor::System { name } => (ActorKind::System, name, None),
        Actor::Anonymous => (ActorKind::Anonymous, "anonymous", None),
    };
    let mut details = entry.details;
    if let Some(details) = &mut details {
        scrub(details);
    }
    let id = store
        .insert_audit(&NewAuditEvent {
            actor_kind,
            actor,
            actor_id,
            client_addr: entry.client_addr,
            action: entry.action.as_str(),
            target: entry.target,
            outcome: entry.outcome,
            details: details.as_ref(),
        })
        .await?;
    Ok(id)
}

/// The newest events matching `filter` (see `store::audit::AuditFilter`).
pub async fn list(store: &Store, filter: &AuditFilter) -> Result<Vec<AuditEvent>, Error> {
    Ok(store.list_audit(filter).await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn actions_have_distinct_snake_case_names() {
        let names: std::collections::HashSet<&str> = Action::ALL.iter().map(|a| a.as_str()).collect();
        assert_eq!(names.len(), Action::ALL.len());
        assert!(names.iter().all(|n| n.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')));
    }

    #[test]
    fn details_lose_every_secret_key() {
        let mut details = json!({"role": "admin", "Password": "x", "nested": [{"token": "ff_x", "name": "ci"}]});
        scrub(&mut details);
        assert_eq!(details, json!({"role": "admin", "nested": [{"name": "ci"}]}));
    }
}
