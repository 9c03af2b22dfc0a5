//! Service URLs (`DATABASE_URL`, `NATS_URL`, `S3_ENDPOINT`): as they may be printed,
//! without the credentials they carry, and those credentials read out of them.
//!
//! `DATABASE_URL`, `NATS_URL` and `S3_ENDPOINT` may hold a password or token in the
//! user-info part (`nats://TOKEN@host`, `postgres://me:pw@host`) or in the query
//! string (`postgres://host/db?password=pw`). Both control plane and runner print these
//! URLs in start-up lines and errors, so both go through [`redact_url`].

/// Query parameters whose values are credentials (compared lowercased, by substring).
const SECRET_QUERY_KEYS: [&str; 7] = ["pass", "pwd", "token", "secret", "key", "auth", "cred"];

/// `url` with the password (or a lone token) of its user info and the values of
/// credential-like query parameters replaced by `***`. The user name stays: it helps
/// to tell deployments apart and is not a secret.
pub fn redact_url(url: &str) -> String {
    let (before_query, query) = match url.split_once('?') {
        Some((head, query)) => (head, Some(query)),
        None => (url, None),
    };
    let mut out = redact_user_info(before_query);
    if let Some(query) = query {
        out.push('?');
        let pairs: Vec<String> = query.split('&').map(redact_query_pair).collect();
        out.push_str(&pairs.join("&"));
    }
    out
}

fn redact_user_info(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else { return url.to_owned() };
    let rest = &url[scheme_end + 3..];
    // The authority ends at the first `/`; an `@` after it belongs to the path.
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else { return url.to_owned() };
    let user_info = &rest[..at];
    let shown = match user_info.split_once(':') {
        Some((user, _password)) => format!("{user}:***"),
        // `nats://TOKEN@host`: the whole user info is the secret.
        None if is_nats(url) => "***".to_owned(),
        // `postgres://user@host`: a user name alone.
        None => user_info.to_owned(),
    };
    format!("{}{shown}{}", &url[..scheme_end + 3], &rest[at..])
}

/// Credentials in a URL's user info, percent-decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// `scheme://user:password@host`
    UserPassword { user: String, password: String },
    /// `scheme://token@host` (how NATS URLs carry a token)
    Token(String),
}

/// The credentials in the user info of `url` (of its first server, for a NATS list
/// `nats://a:1,nats://b:2`), if any.
pub fn credentials(url: &str) -> Option<Credentials> {
    let first = url.split(',').next().unwrap_or(url);
    let rest = &first[first.find("://")? + 3..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let user_info = &rest[..rest[..authority_end].rfind('@')?];
    Some(match user_info.split_once(':') {
        Some((user, password)) => {
            Credentials::UserPassword { user: percent_decode(user), password: percent_decode(password) }
        }
        None => Credentials::Token(percent_decode(user_info)),
    })
}

/// `%XX` escapes decoded (invalid ones kept as written).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) =
                (bytes.get(i + 1).and_then(|b| hex(*b)), bytes.get(i + 2).and_then(|b| hex(*b)))
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The schemes of NATS server URLs, where a lone user info is a token.
fn is_nats(url: &str) -> bool {
    ["nats://", "tls://", "ws://", "wss://"].iter().any(|scheme| url.starts_with(scheme))
}

fn redact_query_pair(pair: &str) -> String {
    match pair.split_once('=') {
        Some((key, _value)) if SECRET_QUERY_KEYS.iter().any(|k| key.to_ascii_lowercase().contains(k)) => {
            format!("{key}=***")
        }
        _ => pair.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::{Credentials, credentials, redact_url};

    #[test]
    fn credentials_are_read_from_the_user_info() {
        assert_eq!(
            credentials("nats://me:p%40ss@127.0.0.1:4222"),
            Some(Credentials::UserPassword { user: "me".into(), password: "p@ss".into() })
        );
        assert_eq!(credentials("nats://s3cr3t@127.0.0.1:4222"), Some(Credentials::Token("s3cr3t".into())));
        assert_eq!(credentials("nats://t@a:1,nats://b:2"), Some(Credentials::Token("t".into())));
        assert_eq!(credentials("nats://127.0.0.1:4222"), None);
        assert_eq!(credentials("http://host/a@b"), None);
        assert_eq!(credentials("not a url"), None);
    }

    #[test]
    fn passwords_and_tokens_in_user_info_are_hidden() {
        assert_eq!(redact_url("postgres://me:pw@host:5/db"), "postgres://me:***@host:5/db");
        assert_eq!(redact_url("nats://s3cr3t-token@127.0.0.1:4222"), "nats://***@127.0.0.1:4222");
        assert_eq!(redact_url("postgres://postgres@127.0.0.1/db"), "postgres://postgres@127.0.0.1/db");
        assert_eq!(redact_url("nats://u:p%40ss@a:1,nats://b:2"), "nats://u:***@a:1,nats://b:2");
    }

    #[test]
    fn credential_query_parameters_are_hidden() {
        assert_eq!(
            redact_url("postgres://host/db?sslmode=require&password=pw&user=me"),
            "postgres://host/db?sslmode=require&password=***&user=me"
        );
        assert_eq!(redact_url("http://s3?X-Amz-Credential=AKIA&Token=t"), "http://s3?X-Amz-Credential=***&Token=***");
    }

    #[test]
    fn urls_without_credentials_are_unchanged() {
        for url in ["postgres://host/db", "sqlite://./data/fastflow.db", "nats://127.0.0.1:4222", "not a url", ""] {
            assert_eq!(redact_url(url), url);
        }
        // An `@` in the path is not user info.
        assert_eq!(redact_url("http://host/a@b"), "http://host/a@b");
    }
}
