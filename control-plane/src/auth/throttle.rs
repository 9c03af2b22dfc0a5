//! Brute-force back-off for logins, per username and per client address, counted in
//! the store (`login_failures`) so every replica sees the same counts.
//!
//! After [`LOCKOUT_AFTER`] consecutive failures under a key, each further failure locks
//! the key for [`FIRST_LOCKOUT`], doubling up to [`MAX_LOCKOUT`]; a counter with no
//! failure for [`FORGET_AFTER`] starts again from one. A success clears the username's
//! counter only (the address's stays: one good password does not clear an address that
//! is guessing many accounts).
//!
//! What an attacker can do to a real user: failures from address X lock the *username*
//! too, so the real user, from elsewhere, waits at most the current back-off (never
//! more than [`MAX_LOCKOUT`]), and their first success clears it. The attacker's own
//! address stays locked independently.

use super::Error;
use crate::store::Store;
use chrono::Utc;
use std::time::Duration;

/// Failures allowed before the first lock-out.
pub const LOCKOUT_AFTER: i32 = 5;
pub const FIRST_LOCKOUT: Duration = Duration::from_secs(1);
pub const MAX_LOCKOUT: Duration = Duration::from_secs(15 * 60);
/// A counter without a failure for this long starts again.
pub const FORGET_AFTER: Duration = Duration::from_secs(3600);

/// The lock-out after `failures` consecutive failures: none for the first
/// [`LOCKOUT_AFTER`] − 1, then 1 s, 2 s, 4 s, … up to [`MAX_LOCKOUT`].
pub fn lockout(failures: i32) -> Option<Duration> {
    if failures < LOCKOUT_AFTER {
        return None;
    }
    let doublings = u32::try_from(failures - LOCKOUT_AFTER).unwrap_or(0).min(20);
    Some(FIRST_LOCKOUT.saturating_mul(1 << doublings).min(MAX_LOCKOUT))
}

/// The counter key of a username (as typed, lowercased and bounded, so unknown names
/// are throttled exactly like real ones).
pub fn user_key(username: &str) -> String {
    let name: String = username.trim().to_lowercase().chars().take(128).collect();
    format!("user:{name}")
}

pub fn addr_key(client_addr: &str) -> String {
    format!("addr:{client_addr}")
}

fn keys(username: &str, client_addr: Option<&str>) -> Vec<String> {
    let mut keys = vec![user_key(username)];
    keys.extend(client_addr.map(addr_key));
    keys
}

/// `Err(RetryAfter)` while the username or the address is locked (the longer wait).
pub async fn check(store: &Store, username: &str, client_addr: Option<&str>) -> Result<(), Error> {
    let now = Utc::now();
    let mut wait = Duration::ZERO;
    for key in keys(username, client_addr) {
        if let Some(until) = store.login_failure(&key).await?.and_then(|f| f.locked_until)
            && let Ok(left) = (until - now).to_std()
        {
            wait = wait.max(left);
        }
    }
    if wait.is_zero() { Ok(()) } else { Err(Error::RetryAfter(wait)) }
}

/// Counts a failed login under both keys.
pub async fn record_failure(store: &Store, username: &str, client_addr: Option<&str>) -> Result<(), Error> {
    for key in keys(username, client_addr) {
        store.record_login_failure(&key, FORGET_AFTER, lockout).await?;
    }
    Ok(())
}

/// Clears the username's counter after a successful login.
pub async fn record_success(store: &Store, username: &str) -> Result<(), Error> {
    store.clear_login_failures(&user_key(username)).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_off_starts_after_the_allowance_doubles_and_caps() {
        for failures in 0..LOCKOUT_AFTER {
            assert_eq!(lockout(failures), None, "{failures}");
        }
        let secs = |n| lockout(n).map(|d| d.as_secs());
        assert_eq!(secs(5), Some(1));
        assert_eq!(secs(6), Some(2));
        assert_eq!(secs(7), Some(4));
        assert_eq!(secs(14), Some(512));
        assert_eq!(secs(15), Some(900), "capped at 15 min");
        assert_eq!(secs(1_000_000), Some(900));
        assert_eq!(lockout(i32::MIN), None);
    }

    #[test]
    fn keys_normalise_the_username() {
        assert_eq!(user_key(" Alice "), "user:alice");
        assert_eq!(addr_key("10.0.0.1"), "addr:10.0.0.1");
        assert_eq!(user_key(&"x".repeat(1000)).len(), 5 + 128);
        assert_eq!(keys("bob", None), ["user:bob"]);
    }
}
