//! Authentication and authorisation, the domain (layer 3, beside `runs`): users and
//! their passwords, login sessions, API tokens, the three roles, brute-force
//! throttling, the audit log, the first admin, and the credential cache that keeps the
//! database off the hot path. It decides; the store (`store::auth`, `store::audit`)
//! keeps. The HTTP layer builds on this API and on nothing below it:
//!
//! * `sessions::login` → a raw session id (the cookie) and a CSRF token;
//!   `Authenticator::session` / `Authenticator::bearer` → a [`Principal`] per request;
//! * `users`, `tokens` for the management routes; `audit::record` for every change;
//! * [`Principal::allows`] with [`Role`] for the route policy table.
//!
//! Secrets (passwords, session ids, tokens, CSRF tokens) are never logged, never stored
//! in clear, and never written to the audit log.

pub mod audit;
pub mod authenticator;
pub mod bootstrap;
pub mod cache;
pub mod passwords;
pub mod roles;
pub mod secrets;
pub mod sessions;
pub mod throttle;
pub mod tokens;
pub mod users;

#[cfg(test)]
mod tests;

pub use authenticator::Authenticator;
pub use roles::Role;

use crate::store;
use std::fmt;
use std::time::Duration;
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Unknown user, wrong password or disabled user: one answer for all three, so a
    /// caller cannot tell which.
    #[error("invalid username or password")]
    InvalidCredentials,
    #[error("invalid username: use 1 to 64 characters among a-z, 0-9, `.`, `_` and `-`")]
    InvalidUsername,
    #[error("the password must have at least {min} characters")]
    WeakPassword { min: usize },
    #[error("the password must have at most {max} characters")]
    PasswordTooLong { max: usize },
    #[error("the current password is wrong")]
    WrongPassword,
    #[error("this username is taken")]
    UsernameTaken,
    #[error("the last enabled admin cannot be demoted, disabled or deleted")]
    LastAdmin,
    #[error("no such {0}")]
    NotFound(&'static str),
    #[error("invalid token name: use 1 to 64 characters")]
    InvalidTokenName,
    #[error("a token with this name exists")]
    TokenNameTaken,
    #[error("a token cannot have more rights than {max}")]
    RoleTooHigh { max: Role },
    #[error("the expiry must be in the future")]
    ExpiryInPast,
    /// Too many failed logins: try again after this long (HTTP 429 + `Retry-After`).
    #[error("too many failed logins; retry in {} s", .0.as_secs().max(1))]
    RetryAfter(Duration),
    #[error("password hashing failed: {0}")]
    Hashing(String),
    #[error("cannot write {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error(transparent)]
    Store(store::Error),
}

/// Deletes ended sessions (past their end or idle) and login failure counters no longer
/// counted (the sweeper calls it now and then). Lookups never depend on it.
pub async fn housekeeping(store: &store::Store, sessions: &crate::config::SessionSettings) -> Result<(), Error> {
    let ended = store.purge_expired_sessions(sessions.idle_timeout).await?;
    let forgotten = store.purge_login_failures(throttle::FORGET_AFTER).await?;
    if ended + forgotten > 0 {
        tracing::debug!(sessions = ended, login_failures = forgotten, "auth housekeeping");
    }
    Ok(())
}

impl From<store::Error> for Error {
    /// The store's typed refusals become the domain's.
    fn from(e: store::Error) -> Self {
        match e {
            store::Error::LastAdmin => Error::LastAdmin,
            store::Error::Conflict { what: "username" } => Error::UsernameTaken,
            store::Error::Conflict { what: "token name" } => Error::TokenNameTaken,
            e => Error::Store(e),
        }
    }
}

/// Who is calling, as authenticated for one request.
#[derive(Clone, PartialEq)]
pub struct Principal {
    pub user_id: Uuid,
    pub username: String,
    /// The effective role: the user's, capped by the token's for a token.
    pub role: Role,
    pub via: Via,
}

/// How a [`Principal`] authenticated.
#[derive(Clone, PartialEq)]
pub enum Via {
    /// A session cookie: state-changing requests must carry `csrf_token`.
    Session { session_hash: String, csrf_token: String },
    /// `Authorization: Bearer` (exempt from CSRF checks).
    Token { token_id: Uuid, name: String },
}

impl Principal {
    /// True when the principal's role includes `required`.
    pub fn allows(&self, required: Role) -> bool {
        self.role >= required
    }

    /// What a run triggered by this principal records (`user:<name>`, `token:<name>`).
    pub fn triggered_by(&self) -> String {
        match &self.via {
            Via::Session { .. } => format!("user:{}", self.username),
            Via::Token { name, .. } => format!("token:{name}"),
        }
    }

    /// The audit log's actor for this principal.
    pub fn actor(&self) -> audit::Actor<'_> {
        match &self.via {
            Via::Session { .. } => audit::Actor::User { id: self.user_id, name: &self.username },
            Via::Token { name, .. } => audit::Actor::Token { user_id: self.user_id, name },
        }
    }

    /// For a session: whether `presented` is its CSRF token (constant time). Always
    /// false for a token, which needs no CSRF token.
    pub fn csrf_matches(&self, presented: &str) -> bool {
        match &self.via {
            Via::Session { csrf_token, .. } => secrets::constant_time_eq(csrf_token, presented),
            Via::Token { .. } => false,
        }
    }
}

/// Never prints the session hash or the CSRF token.
impl fmt::Debug for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let via = match &self.via {
            Via::Session { .. } => "session".to_owned(),
            Via::Token { name, .. } => format!("token {name}"),
        };
        f.debug_struct("Principal")
            .field("user_id", &self.user_id)
            .field("username", &self.username)
            .field("role", &self.role)
            .field("via", &via)
            .finish()
    }
}

impl fmt::Debug for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Via::Session { .. } => f.write_str("Session { .. }"),
            Via::Token { token_id, name } => {
                f.debug_struct("Token").field("token_id", token_id).field("name", name).finish()
            }
        }
    }
}
