//! Login sessions. A login makes a new random id every time (no fixation), stores only
//! its hash, and returns the raw id once (for the cookie) with a per-session CSRF token.
//! A session ends at its absolute end (`SESSION_MAX_AGE`), after `SESSION_IDLE_TIMEOUT`
//! without use, at logout, or when the user's credentials change or they are disabled.

use super::{Error, Principal, Via, passwords, secrets, throttle, users};
use crate::config::SessionSettings;
use crate::store::Store;
use crate::store::auth::{NewSession, Session, User};
use chrono::{DateTime, Utc};
use std::time::Duration;

/// `last_seen_at` is written at most this often per session: the idle timeout is
/// exact to within this, and a busy session costs no write per request.
pub const TOUCH_INTERVAL: Duration = Duration::from_secs(60);

pub struct LoginRequest<'a> {
    pub username: &'a str,
    pub password: &'a str,
    pub client_addr: Option<&'a str>,
    pub user_agent: Option<&'a str>,
}

/// A successful login. `session_id` goes into the cookie and nowhere else.
#[derive(Debug)]
pub struct Login {
    pub session_id: secrets::Secret,
    pub csrf_token: String,
    pub user: User,
    pub expires_at: DateTime<Utc>,
}

/// Checks the password and opens a session. Unknown user, wrong password and disabled
/// user all fail alike (`InvalidCredentials`, after an Argon2 verification each); too
/// many failures answer `RetryAfter` before any password is checked. The caller
/// writes the audit entry (`audit::Action::LoginOk` / `LoginFailed`).
pub async fn login(store: &Store, settings: &SessionSettings, req: &LoginRequest<'_>) -> Result<Login, Error> {
    throttle::check(store, req.username, req.client_addr).await?;
    let user = match users::normalize_username(req.username) {
        Ok(name) => store.get_user_by_name(&name).await?,
        Err(_) => None,
    };
    let password_ok = passwords::verify(req.password, user.as_ref().map(|u| u.password_hash.as_str())).await;
    let user = match user {
        Some(user) if password_ok && !user.disabled => user,
        _ => {
            throttle::record_failure(store, req.username, req.client_addr).await?;
            return Err(Error::InvalidCredentials);
        }
    };
    throttle::record_success(store, &user.username).await?;
    let session_id = secrets::new_session_id();
    let csrf_token = secrets::new_csrf_token();
    let max_age = chrono::Duration::from_std(settings.max_age).unwrap_or(chrono::Duration::days(7));
    let expires_at = Utc::now() + max_age;
    store
        .create_session(&NewSession {
            id_hash: &secrets::hash_secret(session_id.expose()),
            user_id: user.id,
            csrf_token: &csrf_token,
            expires_at,
            client_addr: req.client_addr,
            user_agent: req.user_agent,
        })
        .await?;
    Ok(Login { session_id, csrf_token, user, expires_at })
}

/// Whether the session has been unused longer than the idle timeout at `now`.
pub fn is_idle(session: &Session, settings: &SessionSettings, now: DateTime<Utc>) -> bool {
    (now - session.last_seen_at).to_std().is_ok_and(|unused| unused > settings.idle_timeout)
}

/// The principal of a raw session id, straight from the store (the cached path is
/// `Authenticator::session`). `None` for an unknown, expired or idle session or a
/// disabled user; refreshes `last_seen_at` at most every [`TOUCH_INTERVAL`].
pub async fn authenticate(store: &Store, settings: &SessionSettings, raw_id: &str) -> Result<Option<Principal>, Error> {
    authenticate_hash(store, settings, &secrets::hash_secret(raw_id)).await
}

pub(super) async fn authenticate_hash(
    store: &Store,
    settings: &SessionSettings,
    id_hash: &str,
) -> Result<Option<Principal>, Error> {
    let Some((session, user)) = store.find_session_by_hash(id_hash).await? else {
        return Ok(None);
    };
    let now = Utc::now();
    if is_idle(&session, settings, now) {
        store.delete_session(id_hash).await?;
        return Ok(None);
    }
    if user.disabled {
        return Ok(None);
    }
    if (now - session.last_seen_at).to_std().is_ok_and(|since| since >= TOUCH_INTERVAL) {
        store.touch_session(id_hash).await?;
    }
    Ok(Some(Principal {
        user_id: user.id,
        username: user.username,
        role: user.role,
        via: Via::Session { session_hash: session.id_hash, csrf_token: session.csrf_token },
    }))
}

/// Ends the session of a raw id; `false` if there was none. The caller also calls
/// `Authenticator::invalidate` with the hash for its own cache.
pub async fn logout(store: &Store, raw_id: &str) -> Result<bool, Error> {
    Ok(store.delete_session(&secrets::hash_secret(raw_id)).await?)
}
