//! API tokens for scripts, CI and benchmarks: `ff_` + 256 random bits, shown once,
//! stored as a SHA-256. A token acts as its owner with at most its own role (the lower
//! of the two counts, so demoting the owner demotes their tokens); a disabled owner's
//! tokens stop working.

use super::{Error, Principal, Role, Via, secrets};
use crate::store::Store;
use crate::store::auth::{ApiToken, NewToken, User};
use chrono::{DateTime, Utc};
use std::time::Duration;
use uuid::Uuid;

pub const MAX_NAME_LENGTH: usize = 64;

/// `last_used_at` is written at most this often per token.
pub const TOUCH_INTERVAL: Duration = Duration::from_secs(60);

pub struct NewTokenRequest<'a> {
    /// 1–64 characters, unique among the owner's unrevoked tokens.
    pub name: &'a str,
    /// `None`: the most allowed.
    pub role: Option<Role>,
    /// `None`: never expires.
    pub expires_at: Option<DateTime<Utc>>,
}

/// A new token: `token` is shown once and never again.
#[derive(Debug)]
pub struct CreatedToken {
    pub token: secrets::Secret,
    pub info: ApiToken,
}

/// Creates a token owned by `owner` with a role of at most `max_role` and the owner's
/// role (`max_role`: the creator's role over HTTP; the owner's own from the CLI).
pub async fn create(
    store: &Store,
    owner: &User,
    max_role: Role,
    req: &NewTokenRequest<'_>,
) -> Result<CreatedToken, Error> {
    let name = req.name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_LENGTH || name.chars().any(char::is_control) {
        return Err(Error::InvalidTokenName);
    }
    let max = max_role.min(owner.role);
    let role = req.role.unwrap_or(max);
    if role > max {
        return Err(Error::RoleTooHigh { max });
    }
    if req.expires_at.is_some_and(|at| at <= Utc::now()) {
        return Err(Error::ExpiryInPast);
    }
    let token = secrets::new_api_token();
    let info = store
        .create_token(&NewToken {
            id: Uuid::now_v7(),
            name,
            token_hash: &secrets::hash_secret(token.expose()),
            user_id: owner.id,
            role,
            expires_at: req.expires_at,
        })
        .await?;
    tracing::info!(token = %info.name, user = %owner.username, role = %role, "API token created");
    Ok(CreatedToken { token, info })
}

/// One user's tokens, or everyone's (`None`), newest first; never their values.
pub async fn list(store: &Store, user_id: Option<Uuid>) -> Result<Vec<ApiToken>, Error> {
    Ok(store.list_tokens(user_id).await?)
}

/// Revokes a token; `true` if it was active. The caller also calls
/// `Authenticator::invalidate_token` for its own cache; other replicas see it within
/// `cache::STALENESS`.
pub async fn revoke(store: &Store, id: Uuid) -> Result<bool, Error> {
    Ok(store.revoke_token(id).await?)
}

/// The principal of a raw bearer token, straight from the store (the cached path is
/// `Authenticator::bearer`). `None` for a malformed, unknown, revoked or expired token
/// or a disabled owner.
pub async fn authenticate(store: &Store, raw: &str) -> Result<Option<Principal>, Error> {
    if !secrets::looks_like_api_token(raw) {
        return Ok(None);
    }
    authenticate_hash(store, &secrets::hash_secret(raw)).await
}

pub(super) async fn authenticate_hash(store: &Store, token_hash: &str) -> Result<Option<Principal>, Error> {
    let Some((token, owner)) = store.find_token_by_hash(token_hash).await? else {
        return Ok(None);
    };
    if owner.disabled {
        return Ok(None);
    }
    let stale = token.last_used_at.is_none_or(|at| (Utc::now() - at).to_std().is_ok_and(|d| d >= TOUCH_INTERVAL));
    if stale {
        store.touch_token_last_used(token.id).await?;
    }
    Ok(Some(Principal {
        user_id: owner.id,
        username: owner.username,
        role: token.role.min(owner.role),
        via: Via::Token { token_id: token.id, name: token.name },
    }))
}
