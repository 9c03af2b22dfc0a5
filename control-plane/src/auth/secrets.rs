//! Random secrets and how they are stored. Session ids and API tokens carry 256 bits
//! from the OS-seeded CSPRNG (`rand::rng()`); the store only ever sees their SHA-256
//! (hex): a fast hash is right for high-entropy values (Argon2 per request would be far
//! too slow, and there is nothing to brute-force). Comparisons of secrets are constant-time.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::fmt;
use subtle::ConstantTimeEq;

/// The prefix of every API token: lets secret scanners and `Authorization` parsing
/// recognise one.
pub const TOKEN_PREFIX: &str = "ff_";

/// A secret value handed to a client once. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

fn random_base64(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(&buf)
}

/// A new session id: 256 random bits, base64url (43 characters).
pub fn new_session_id() -> Secret {
    Secret(random_base64(32))
}

/// A new API token: `ff_` + 256 random bits, base64url (46 characters in all).
pub fn new_api_token() -> Secret {
    new_prefixed_secret(TOKEN_PREFIX)
}

/// `prefix` + 256 random bits, base64url: a credential a scanner can recognise by its prefix.
pub fn new_prefixed_secret(prefix: &str) -> Secret {
    Secret(format!("{prefix}{}", random_base64(32)))
}

/// A new per-session CSRF token (256 random bits, base64url).
pub fn new_csrf_token() -> String {
    random_base64(32)
}

/// A random password for generated accounts: 24 base64url characters (144 bits).
pub fn random_password() -> Secret {
    Secret(random_base64(18))
}

/// How a session id or token is stored and looked up: hex SHA-256.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Equality that takes the same time wherever the first difference is (lengths are
/// not secret here: every token of a kind has the same length).
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

/// Whether `text` has the shape of an API token (cheap check before any lookup).
pub fn looks_like_api_token(text: &str) -> bool {
    text.strip_prefix(TOKEN_PREFIX).is_some_and(|rest| {
        rest.len() == 43 && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn tokens_have_the_prefix_and_256_bits() {
        let token = new_api_token();
        assert!(token.expose().starts_with("ff_"), "{}", token.expose());
        assert_eq!(token.expose().len(), 3 + 43);
        assert!(looks_like_api_token(token.expose()));
        let raw = URL_SAFE_NO_PAD.decode(&token.expose()[3..]).expect("base64url");
        assert_eq!(raw.len(), 32);
        assert!(!looks_like_api_token("ff_short") && !looks_like_api_token(new_session_id().expose()));
    }

    #[test]
    fn secrets_do_not_repeat_and_do_not_print() {
        let ids: HashSet<String> = (0..1000).map(|_| new_session_id().into_inner()).collect();
        assert_eq!(ids.len(), 1000);
        let tokens: HashSet<String> = (0..1000).map(|_| new_api_token().into_inner()).collect();
        assert_eq!(tokens.len(), 1000);
        // Crude entropy check: every base64url symbol shows up across 1000 tokens.
        let symbols: HashSet<char> = tokens.iter().flat_map(|t| t[3..].chars().collect::<Vec<_>>()).collect();
        assert_eq!(symbols.len(), 64);
        let secret = new_session_id();
        assert!(!format!("{secret:?}").contains(secret.expose()));
        assert_eq!(random_password().expose().len(), 24);
    }

    #[test]
    fn hashes_are_hex_sha256_and_comparison_is_exact() {
        assert_eq!(hash_secret("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(hash_secret("x").len(), 64);
        assert!(constant_time_eq("same", "same"));
        assert!(!constant_time_eq("same", "sane") && !constant_time_eq("same", "same "));
    }
}
