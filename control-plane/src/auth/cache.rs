//! An in-memory cache of authenticated credentials (secret hash → [`Principal`]), so a
//! request does not cost a database round trip. Each entry is trusted for at most
//! [`STALENESS`] after it was loaded: that is the revocation bound. A token revoked,
//! a session ended or a user disabled on another replica stops working there within
//! one second; on the replica that made the change, at once (`invalidate*`). Only
//! successful lookups are cached. At [`CAPACITY`] entries the oldest is evicted.

use super::Principal;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// How long a cached credential is trusted: the bound on how late a revocation made
/// on another replica takes effect.
pub const STALENESS: Duration = Duration::from_secs(1);

/// Entries kept at most (a few MB).
pub const CAPACITY: usize = 10_000;

#[derive(Clone)]
pub struct CredentialCache {
    entries: Arc<Mutex<HashMap<String, (Principal, Instant)>>>,
    staleness: Duration,
    capacity: usize,
}

impl Default for CredentialCache {
    fn default() -> Self {
        CredentialCache::new(STALENESS, CAPACITY)
    }
}

impl CredentialCache {
    pub fn new(staleness: Duration, capacity: usize) -> Self {
        CredentialCache { entries: Default::default(), staleness, capacity: capacity.max(1) }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, (Principal, Instant)>> {
        // A panic while holding the lock cannot leave the map half-updated in a way
        // that matters (each operation is one map call), so a poisoned lock is used as is.
        self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The principal cached under `hash`, if loaded less than the staleness bound ago.
    pub fn get(&self, hash: &str) -> Option<Principal> {
        let mut entries = self.lock();
        match entries.get(hash) {
            Some((principal, loaded)) if loaded.elapsed() < self.staleness => Some(principal.clone()),
            Some(_) => {
                entries.remove(hash);
                None
            }
            None => None,
        }
    }

    pub fn insert(&self, hash: String, principal: Principal) {
        let mut entries = self.lock();
        if entries.len() >= self.capacity && !entries.contains_key(&hash) {
            let staleness = self.staleness;
            entries.retain(|_, (_, loaded)| loaded.elapsed() < staleness);
            if entries.len() >= self.capacity
                && let Some(oldest) = entries.iter().min_by_key(|(_, (_, loaded))| *loaded).map(|(k, _)| k.clone())
            {
                entries.remove(&oldest);
            }
        }
        entries.insert(hash, (principal, Instant::now()));
    }

    /// Forgets one credential (a logout, a revoked token) on this replica at once.
    pub fn invalidate(&self, hash: &str) {
        self.lock().remove(hash);
    }

    /// Forgets every credential of a user (disabled, demoted, deleted, new password).
    pub fn invalidate_user(&self, user_id: Uuid) {
        self.lock().retain(|_, (principal, _)| principal.user_id != user_id);
    }

    /// Forgets a token by id (revocation by id, when its hash is unknown).
    pub fn invalidate_token(&self, token_id: Uuid) {
        self.lock().retain(
            |_, (principal, _)| !matches!(&principal.via, super::Via::Token { token_id: id, .. } if *id == token_id),
        );
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Role, Via};

    fn principal(user: u128, token: u128) -> Principal {
        Principal {
            user_id: Uuid::from_u128(user),
            username: format!("u{user}"),
            role: Role::Viewer,
            via: Via::Token { token_id: Uuid::from_u128(token), name: "t".into() },
        }
    }

    #[test]
    fn entries_expire_after_the_staleness_bound() {
        let cache = CredentialCache::new(Duration::from_millis(30), 10);
        cache.insert("h".into(), principal(1, 1));
        assert_eq!(cache.get("h").map(|p| p.user_id), Some(Uuid::from_u128(1)));
        std::thread::sleep(Duration::from_millis(40));
        assert!(cache.get("h").is_none());
        assert!(cache.is_empty(), "a stale entry is dropped when seen");
    }

    #[test]
    fn invalidation_by_hash_user_and_token() {
        let cache = CredentialCache::default();
        cache.insert("a".into(), principal(1, 10));
        cache.insert("b".into(), principal(1, 11));
        cache.insert("c".into(), principal(2, 12));
        cache.invalidate("a");
        assert!(cache.get("a").is_none() && cache.get("b").is_some());
        cache.invalidate_token(Uuid::from_u128(12));
        assert!(cache.get("c").is_none());
        cache.invalidate_user(Uuid::from_u128(1));
        assert!(cache.is_empty());
    }

    #[test]
    fn a_full_cache_evicts_the_oldest() {
        let cache = CredentialCache::new(Duration::from_secs(60), 2);
        cache.insert("first".into(), principal(1, 1));
        std::thread::sleep(Duration::from_millis(2));
        cache.insert("second".into(), principal(2, 2));
        cache.insert("third".into(), principal(3, 3));
        assert_eq!(cache.len(), 2);
        assert!(cache.get("first").is_none() && cache.get("second").is_some() && cache.get("third").is_some());
    }
}
