//! Users, their sessions and API tokens, and the brute-force counters every replica
//! shares. The store keeps what the domain (`crate::auth`) decides; it decides only
//! what must be atomic: the last enabled admin can never be demoted, disabled or
//! deleted (checked inside the statement), and a credential change ends the user's
//! sessions in the same transaction. Secrets never reach it: sessions and tokens are
//! looked up by the hex SHA-256 of their value, passwords are stored as PHC strings.
//! The SQL is in `postgres/auth.rs` and `sqlite/auth.rs`, the decoding in `rows.rs`.

pub use super::policy::Role;
use super::{Error, Store, dispatch};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::time::Duration;
use uuid::Uuid;

/// A user row. Not `Serialize`: it holds the password hash; the HTTP layer has its own shape.
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    pub id: Uuid,
    /// Lowercase (the domain normalises it); unique case-insensitively.
    pub username: String,
    /// Argon2id PHC string.
    pub password_hash: String,
    pub role: Role,
    pub disabled: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// When the password, the role or `disabled` last changed.
    pub credentials_changed_at: DateTime<Utc>,
}

pub struct NewUser<'a> {
    pub id: Uuid,
    pub username: &'a str,
    pub password_hash: &'a str,
    pub role: Role,
}

/// A change to a user; `None` fields stay as they are.
#[derive(Debug, Default, Clone, Copy)]
pub struct UserUpdate<'a> {
    pub role: Option<Role>,
    pub disabled: Option<bool>,
    pub password_hash: Option<&'a str>,
    /// The session (id hash) that survives the change, e.g. the one a user changes
    /// their own password from; every other session of the user ends.
    pub keep_session: Option<&'a str>,
}

impl UserUpdate<'_> {
    fn is_empty(&self) -> bool {
        self.role.is_none() && self.disabled.is_none() && self.password_hash.is_none()
    }
}

/// A login session. The raw id is only in the client's cookie.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    /// Hex SHA-256 of the raw session id.
    pub id_hash: String,
    pub user_id: Uuid,
    /// The per-session CSRF token (a random value, not derived from the id).
    pub csrf_token: String,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    /// The absolute end of the session.
    pub expires_at: DateTime<Utc>,
    pub client_addr: Option<String>,
    pub user_agent: Option<String>,
}

pub struct NewSession<'a> {
    pub id_hash: &'a str,
    pub user_id: Uuid,
    pub csrf_token: &'a str,
    pub expires_at: DateTime<Utc>,
    pub client_addr: Option<&'a str>,
    pub user_agent: Option<&'a str>,
}

/// An API token as listed: never its value nor its hash.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApiToken {
    pub id: Uuid,
    pub name: String,
    pub user_id: Uuid,
    /// The most the token may do (its owner's current role caps it further).
    pub role: Role,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

pub struct NewToken<'a> {
    pub id: Uuid,
    pub name: &'a str,
    /// Hex SHA-256 of the token.
    pub token_hash: &'a str,
    pub user_id: Uuid,
    pub role: Role,
    pub expires_at: Option<DateTime<Utc>>,
}

/// The failed logins counted under one key (`user:<name>`, `addr:<ip>`).
#[derive(Debug, Clone, PartialEq)]
pub struct LoginFailure {
    pub key: String,
    pub failures: i32,
    pub last_failure_at: DateTime<Utc>,
    /// No login under this key before then.
    pub locked_until: Option<DateTime<Utc>>,
}

/// The lock-out after a given number of consecutive failures (the domain's policy,
/// `auth::throttle`); `None`: no lock-out yet.
pub type Lockout = fn(i32) -> Option<Duration>;

impl Store {
    /// Fails with `Conflict { what: "username" }` when the name is taken in any case.
    pub async fn create_user(&self, new: &NewUser<'_>) -> Result<User, Error> {
        dispatch!(self.create_user(new))
    }

    pub async fn get_user(&self, id: Uuid) -> Result<Option<User>, Error> {
        dispatch!(self.get_user(id))
    }

    /// Case-insensitive.
    pub async fn get_user_by_name(&self, username: &str) -> Result<Option<User>, Error> {
        dispatch!(self.get_user_by_name(username))
    }

    /// Every user, by username.
    pub async fn list_users(&self) -> Result<Vec<User>, Error> {
        dispatch!(self.list_users())
    }

    pub async fn count_users(&self) -> Result<i64, Error> {
        dispatch!(self.count_users())
    }

    /// Changes role, `disabled` and/or password in one transaction that also bumps
    /// `credentials_changed_at` and deletes the user's sessions except `keep_session`.
    /// `Err(LastAdmin)` if it would leave no enabled admin (checked in the statement,
    /// serialised with every other user change); `Ok(None)`: no such user. An update
    /// that changes nothing only reads the user.
    pub async fn update_user(&self, id: Uuid, update: &UserUpdate<'_>) -> Result<Option<User>, Error> {
        if update.is_empty() {
            return self.get_user(id).await;
        }
        dispatch!(self.update_user(id, update))
    }

    /// Deletes the user, their sessions and tokens (cascade); `Ok(false)`: no such user;
    /// `Err(LastAdmin)` for the last enabled admin.
    pub async fn delete_user(&self, id: Uuid) -> Result<bool, Error> {
        dispatch!(self.delete_user(id))
    }

    pub async fn create_session(&self, new: &NewSession<'_>) -> Result<Session, Error> {
        dispatch!(self.create_session(new))
    }

    /// The session and its user in one query, if the session has not reached its
    /// absolute end. The idle timeout and `disabled` are the caller's to check.
    pub async fn find_session_by_hash(&self, id_hash: &str) -> Result<Option<(Session, User)>, Error> {
        dispatch!(self.find_session_by_hash(id_hash))
    }

    /// Sets `last_seen_at` to now (callers throttle this); `false`: no such session.
    pub async fn touch_session(&self, id_hash: &str) -> Result<bool, Error> {
        dispatch!(self.touch_session(id_hash))
    }

    /// `false`: no such session.
    pub async fn delete_session(&self, id_hash: &str) -> Result<bool, Error> {
        dispatch!(self.delete_session(id_hash))
    }

    /// Ends every session of the user except `except`; returns how many ended.
    pub async fn delete_user_sessions(&self, user_id: Uuid, except: Option<&str>) -> Result<u64, Error> {
        dispatch!(self.delete_user_sessions(user_id, except))
    }

    /// Deletes sessions past their absolute end or idle longer than `idle`.
    pub async fn purge_expired_sessions(&self, idle: Duration) -> Result<u64, Error> {
        dispatch!(self.purge_expired_sessions(idle))
    }

    /// Fails with `Conflict { what: "token name" }` when the user has an unrevoked
    /// token of that name.
    pub async fn create_token(&self, new: &NewToken<'_>) -> Result<ApiToken, Error> {
        dispatch!(self.create_token(new))
    }

    /// The token and its owner in one query, if it is neither revoked nor expired.
    /// The owner's `disabled` and role are the caller's to apply.
    pub async fn find_token_by_hash(&self, token_hash: &str) -> Result<Option<(ApiToken, User)>, Error> {
        dispatch!(self.find_token_by_hash(token_hash))
    }

    pub async fn get_token(&self, id: Uuid) -> Result<Option<ApiToken>, Error> {
        dispatch!(self.get_token(id))
    }

    /// One user's tokens, or everyone's (`None`), revoked ones included, newest first.
    pub async fn list_tokens(&self, user_id: Option<Uuid>) -> Result<Vec<ApiToken>, Error> {
        dispatch!(self.list_tokens(user_id))
    }

    /// Sets `revoked_at`; `true` if the token was not revoked before.
    pub async fn revoke_token(&self, id: Uuid) -> Result<bool, Error> {
        dispatch!(self.revoke_token(id))
    }

    /// Sets `last_used_at` to now (callers throttle this).
    pub async fn touch_token_last_used(&self, id: Uuid) -> Result<(), Error> {
        dispatch!(self.touch_token_last_used(id))
    }

    /// Counts one more failure under `key` (starting again from one when the last was
    /// longer than `reset_after` ago) and sets `locked_until` to now + `lockout(failures)`,
    /// atomically (concurrent failures on other replicas are all counted).
    pub async fn record_login_failure(
        &self,
        key: &str,
        reset_after: Duration,
        lockout: Lockout,
    ) -> Result<LoginFailure, Error> {
        dispatch!(self.record_login_failure(key, reset_after, lockout))
    }

    pub async fn login_failure(&self, key: &str) -> Result<Option<LoginFailure>, Error> {
        dispatch!(self.login_failure(key))
    }

    pub async fn clear_login_failures(&self, key: &str) -> Result<(), Error> {
        dispatch!(self.clear_login_failures(key))
    }

    /// Deletes counters whose last failure is older than `older_than`.
    pub async fn purge_login_failures(&self, older_than: Duration) -> Result<u64, Error> {
        dispatch!(self.purge_login_failures(older_than))
    }
}
