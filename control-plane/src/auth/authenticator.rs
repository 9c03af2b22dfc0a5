//! The per-request entry point: a raw session id or bearer token → a [`Principal`],
//! through the [`CredentialCache`] (no database round trip while an entry is fresh).
//! One `Authenticator` per process, cloned cheaply into the HTTP state.

use super::cache::CredentialCache;
use super::{Error, Principal, secrets, sessions, tokens};
use crate::config::SessionSettings;
use crate::store::Store;
use uuid::Uuid;

#[derive(Clone)]
pub struct Authenticator {
    store: Store,
    sessions: SessionSettings,
    cache: CredentialCache,
}

impl Authenticator {
    pub fn new(store: Store, sessions: SessionSettings) -> Self {
        Authenticator { store, sessions, cache: CredentialCache::default() }
    }

    pub fn session_settings(&self) -> &SessionSettings {
        &self.sessions
    }

    /// The principal of a session cookie's raw id (`None`: no valid session).
    pub async fn session(&self, raw_id: &str) -> Result<Option<Principal>, Error> {
        let hash = secrets::hash_secret(raw_id);
        if let Some(principal) = self.cache.get(&hash) {
            return Ok(Some(principal));
        }
        let principal = sessions::authenticate_hash(&self.store, &self.sessions, &hash).await?;
        if let Some(principal) = &principal {
            self.cache.insert(hash, principal.clone());
        }
        Ok(principal)
    }

    /// The principal of a raw bearer token (`None`: malformed, unknown, revoked, expired).
    pub async fn bearer(&self, raw_token: &str) -> Result<Option<Principal>, Error> {
        if !secrets::looks_like_api_token(raw_token) {
            return Ok(None);
        }
        let hash = secrets::hash_secret(raw_token);
        if let Some(principal) = self.cache.get(&hash) {
            return Ok(Some(principal));
        }
        let principal = tokens::authenticate_hash(&self.store, &hash).await?;
        if let Some(principal) = &principal {
            self.cache.insert(hash, principal.clone());
        }
        Ok(principal)
    }

    /// Forgets a session (by its hash, as in `Via::Session`) on this replica at once.
    pub fn invalidate_session(&self, session_hash: &str) {
        self.cache.invalidate(session_hash);
    }

    pub fn invalidate_token(&self, token_id: Uuid) {
        self.cache.invalidate_token(token_id);
    }

    /// After any change to the user (role, disabled, password, deletion).
    pub fn invalidate_user(&self, user_id: Uuid) {
        self.cache.invalidate_user(user_id);
    }

    pub fn cache(&self) -> &CredentialCache {
        &self.cache
    }
}
