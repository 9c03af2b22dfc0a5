//! Password policy and Argon2id hashing. Hashing costs tens of milliseconds of CPU on
//! purpose, so it runs on the blocking pool (`spawn_blocking`), never on the runtime's
//! workers. Unknown users are checked against a dummy hash so that a login takes about
//! as long whether the user exists or not.

use super::Error;
use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use std::sync::LazyLock;

/// The only composition rule: a length (in characters, not bytes).
pub const MIN_LENGTH: usize = 12;
/// Bounds the hashing work a request can ask for.
pub const MAX_LENGTH: usize = 1024;

/// Checks the policy: at least [`MIN_LENGTH`] and at most [`MAX_LENGTH`] characters.
pub fn check_policy(password: &str) -> Result<(), Error> {
    let chars = password.chars().count();
    if chars < MIN_LENGTH {
        return Err(Error::WeakPassword { min: MIN_LENGTH });
    }
    if chars > MAX_LENGTH {
        return Err(Error::PasswordTooLong { max: MAX_LENGTH });
    }
    Ok(())
}

fn hash_now(password: &str) -> Result<String, Error> {
    // Argon2id v19 with the crate's default (OWASP) parameters and a random salt.
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|e| Error::Hashing(e.to_string()))
}

fn verify_now(password: &str, hash: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok(),
        Err(_) => false,
    }
}

/// A hash of a random password with the same parameters as real ones, verified when
/// the user is unknown so that the answer takes as long.
static DUMMY_HASH: LazyLock<Option<String>> =
    LazyLock::new(|| hash_now(super::secrets::random_password().expose()).ok());

/// The PHC string (`$argon2id$v=19$…`) of a password that passed [`check_policy`].
pub async fn hash(password: &str) -> Result<String, Error> {
    check_policy(password)?;
    let password = password.to_owned();
    tokio::task::spawn_blocking(move || hash_now(&password))
        .await
        .map_err(|e| Error::Hashing(format!("hashing task: {e}")))?
}

/// Whether `password` matches `hash`; with `None` (unknown user) a dummy hash is
/// verified and the answer is false. Over-long input is refused without hashing.
pub async fn verify(password: &str, hash: Option<&str>) -> bool {
    if password.chars().count() > MAX_LENGTH {
        return false;
    }
    let password = password.to_owned();
    let hash = hash.map(str::to_owned);
    tokio::task::spawn_blocking(move || match hash {
        Some(hash) => verify_now(&password, &hash),
        None => {
            if let Some(dummy) = DUMMY_HASH.as_deref() {
                let _ = verify_now(&password, dummy);
            }
            false
        }
    })
    .await
    .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_counts_characters_not_bytes() {
        assert!(matches!(check_policy("short"), Err(Error::WeakPassword { min: 12 })));
        assert!(matches!(check_policy("elevenchars"), Err(Error::WeakPassword { .. })));
        assert!(check_policy("twelve chars").is_ok());
        // 11 characters of 2 bytes each: 22 bytes, still too short.
        assert!(check_policy(&"é".repeat(11)).is_err());
        assert!(check_policy(&"é".repeat(12)).is_ok());
        assert!(matches!(check_policy(&"x".repeat(MAX_LENGTH + 1)), Err(Error::PasswordTooLong { .. })));
    }

    #[tokio::test]
    async fn hash_then_verify() {
        let hash = hash("correct horse battery").await.expect("hash");
        assert!(hash.starts_with("$argon2id$v=19$"), "{hash}");
        assert!(verify("correct horse battery", Some(&hash)).await);
        assert!(!verify("correct horse batterY", Some(&hash)).await);
        assert!(!verify("correct horse battery", Some("not a phc string")).await);
        assert!(!verify("correct horse battery", None).await);
        assert!(matches!(super::hash("short").await, Err(Error::WeakPassword { .. })));
        // Salted: the same password hashes differently each time.
        assert_ne!(super::hash("correct horse battery").await.expect("hash"), hash);
    }
}
