//! How a process connects to NATS, beyond `NATS_URL`: TLS files, whether plaintext is
//! allowed, and the deployment's subject prefix. Read alike by the control plane and
//! the runner (the connecting itself is in each binary: this crate does no I/O).

use crate::subjects::{Subjects, valid_prefix};
use std::path::PathBuf;

/// A setting that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{name}: {message} (got `{value}`)")]
pub struct Error {
    pub name: &'static str,
    pub value: String,
    pub message: String,
}

/// `NATS_TLS_CA`, `NATS_TLS_CERT`, `NATS_TLS_KEY`, `NATS_ALLOW_PLAINTEXT`, `NATS_SUBJECT_PREFIX`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NatsSettings {
    /// CA bundle (PEM) that signs the server's certificate: TLS is required.
    pub tls_ca: Option<PathBuf>,
    /// Client certificate and key (PEM), for servers that verify clients.
    pub tls_client: Option<(PathBuf, PathBuf)>,
    /// `NATS_ALLOW_PLAINTEXT=1`: a connection without TLS is accepted (warned about).
    pub allow_plaintext: bool,
    pub subjects: Subjects,
}

impl NatsSettings {
    pub fn from_source(url: &str, get: &dyn Fn(&str) -> Option<String>) -> Result<NatsSettings, Error> {
        let get = |name: &str| get(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let tls_ca = get("NATS_TLS_CA").map(PathBuf::from);
        let tls_client = match (get("NATS_TLS_CERT"), get("NATS_TLS_KEY")) {
            (Some(cert), Some(key)) => Some((PathBuf::from(cert), PathBuf::from(key))),
            (None, None) => None,
            (Some(cert), None) => {
                return Err(Error {
                    name: "NATS_TLS_KEY",
                    value: String::new(),
                    message: format!("NATS_TLS_CERT ({cert}) needs its key"),
                });
            }
            (None, Some(_)) => {
                return Err(Error {
                    name: "NATS_TLS_CERT",
                    value: String::new(),
                    message: "NATS_TLS_KEY needs its certificate".into(),
                });
            }
        };
        let allow_plaintext = match get("NATS_ALLOW_PLAINTEXT").map(|v| v.to_ascii_lowercase()) {
            None => false,
            Some(v) if matches!(v.as_str(), "1" | "true" | "yes" | "on") => true,
            Some(v) if matches!(v.as_str(), "0" | "false" | "no" | "off") => false,
            Some(v) => return Err(Error { name: "NATS_ALLOW_PLAINTEXT", value: v, message: "expected 1 or 0".into() }),
        };
        let prefix = get("NATS_SUBJECT_PREFIX");
        if let Some(p) = &prefix
            && !valid_prefix(p)
        {
            return Err(Error {
                name: "NATS_SUBJECT_PREFIX",
                value: p.clone(),
                message: "use 1-32 letters, digits, `-` or `_`".into(),
            });
        }
        let settings = NatsSettings { tls_ca, tls_client, allow_plaintext, subjects: Subjects::new(prefix.as_deref()) };
        if !settings.uses_tls(url) && !settings.allow_plaintext {
            return Err(Error {
                name: "NATS_URL",
                value: crate::service_url::redact_url(url),
                message: "the connection would be plaintext: set NATS_TLS_CA to the CA that signed the NATS \
                          server's certificate (or use a tls:// URL), or set NATS_ALLOW_PLAINTEXT=1 on a \
                          trusted network"
                    .into(),
            });
        }
        Ok(settings)
    }

    /// Whether connections are encrypted: a CA is given or the URL asks for TLS.
    pub fn uses_tls(&self, url: &str) -> bool {
        self.tls_ca.is_some() || url.split(',').all(|u| u.trim_start().starts_with("tls://"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(url: &str, vars: &[(&str, &str)]) -> Result<NatsSettings, Error> {
        let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        NatsSettings::from_source(url, &|name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
    }

    #[test]
    fn plaintext_must_be_asked_for() {
        let err = load("nats://127.0.0.1:4222", &[]).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("NATS_ALLOW_PLAINTEXT=1"), "{err}");
        assert!(load("nats://127.0.0.1:4222", &[("NATS_ALLOW_PLAINTEXT", "1")]).is_ok());
        assert!(load("nats://127.0.0.1:4222", &[("NATS_TLS_CA", "/ca.pem")]).is_ok_and(|s| s.tls_ca.is_some()));
        assert!(load("tls://127.0.0.1:4222", &[]).is_ok());
        assert!(load("nats://h:1", &[("NATS_ALLOW_PLAINTEXT", "maybe")]).is_err());
    }

    #[test]
    fn a_certificate_needs_its_key_and_prefixes_are_tokens() {
        let tls = [("NATS_TLS_CA", "/ca.pem")];
        assert!(load("nats://h:1", &[tls[0], ("NATS_TLS_CERT", "/c.pem")]).is_err());
        assert!(load("nats://h:1", &[tls[0], ("NATS_TLS_CERT", "/c.pem"), ("NATS_TLS_KEY", "/k.pem")]).is_ok());
        assert!(load("nats://h:1", &[tls[0], ("NATS_SUBJECT_PREFIX", "a.b")]).is_err());
        let s = load("nats://h:1", &[tls[0], ("NATS_SUBJECT_PREFIX", "blue")]).expect("valid");
        assert_eq!(s.subjects.prefix(), Some("blue"));
    }
}
