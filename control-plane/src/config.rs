//! The control plane's configuration: read once from the environment at start.
//! No other module reads environment variables.

use crate::object_store::S3Settings;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{name}: {message} (got `{value}`)")]
    Invalid { name: &'static str, value: String, message: String },
    #[error("{name} is required: {message}")]
    Missing { name: &'static str, message: &'static str },
}

#[derive(Debug, Clone)]
pub struct Config {
    pub bind_addr: SocketAddr,
    pub database_url: String,
    pub nats_url: String,
    pub s3: S3Settings,
    pub pipelines_dir: PathBuf,
    pub worker_base_image: String,
    /// How long a claimed run stays owned without a heartbeat.
    pub lease: Duration,
    /// How often queued runs are checked for a live offer (and leases for expiry).
    pub sweep_interval: Duration,
    /// How old a queued run must be before the sweeper checks its offer.
    pub reoffer_after: Duration,
}

/// Reads a variable through a lookup function (the process environment in `main`,
/// a map in tests).
pub struct Source<'a>(pub &'a dyn Fn(&str) -> Option<String>);

impl Source<'_> {
    fn get(&self, name: &str) -> Option<String> {
        (self.0)(name).filter(|v| !v.trim().is_empty())
    }

    fn string(&self, name: &str, default: &str) -> String {
        self.get(name).unwrap_or_else(|| default.to_owned())
    }

    fn parsed<T: FromStr>(&self, name: &'static str, default: T, what: &str) -> Result<T, Error> {
        match self.get(name) {
            None => Ok(default),
            Some(value) => {
                value.trim().parse().map_err(|_| Error::Invalid { name, value, message: format!("expected {what}") })
            }
        }
    }

    fn seconds(&self, name: &'static str, default: u64) -> Result<Duration, Error> {
        let secs: u64 = self.parsed(name, default, "a whole number of seconds")?;
        if secs == 0 {
            return Err(Error::Invalid { name, value: "0".into(), message: "must be at least 1".into() });
        }
        Ok(Duration::from_secs(secs))
    }
}

impl Config {
    pub fn from_env() -> Result<Config, Error> {
        Config::from_source(&Source(&|name| std::env::var(name).ok()))
    }

    pub fn from_source(src: &Source<'_>) -> Result<Config, Error> {
        let database_url = src.get("DATABASE_URL").ok_or(Error::Missing {
            name: "DATABASE_URL",
            message: "set it to a postgres:// URL (the single-node SQLite mode does not exist yet)",
        })?;
        if !database_url.starts_with("postgres://") && !database_url.starts_with("postgresql://") {
            return Err(Error::Invalid {
                name: "DATABASE_URL",
                value: redact_url(&database_url),
                message: "expected a postgres:// URL".into(),
            });
        }
        let nats_url = src.string("NATS_URL", "nats://127.0.0.1:4222");
        let s3 = S3Settings {
            endpoint: src.get("S3_ENDPOINT"),
            bucket: src.string("S3_BUCKET", "fastflow-logs"),
            region: src.string("S3_REGION", "us-east-1"),
            access_key_id: src.string("AWS_ACCESS_KEY_ID", ""),
            secret_access_key: src.string("AWS_SECRET_ACCESS_KEY", ""),
        };
        if !valid_bucket_name(&s3.bucket) {
            return Err(Error::Invalid {
                name: "S3_BUCKET",
                value: s3.bucket,
                message: "expected 3-63 lowercase letters, digits, dots or hyphens".into(),
            });
        }
        Ok(Config {
            bind_addr: src.parsed("BIND_ADDR", SocketAddr::from(([127, 0, 0, 1], 8000)), "host:port")?,
            database_url,
            nats_url,
            s3,
            pipelines_dir: PathBuf::from(src.string("PIPELINES_DIR", "./pipelines")),
            worker_base_image: src.string("WORKER_BASE_IMAGE", "fastflow-worker:latest"),
            lease: src.seconds("RUN_LEASE_SECONDS", 30)?,
            sweep_interval: src.seconds("SWEEP_INTERVAL_SECONDS", 5)?,
            reoffer_after: src.seconds("REOFFER_AFTER_SECONDS", 10)?,
        })
    }
}

fn valid_bucket_name(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

/// Hides the password of a URL for error messages and logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{}:***{}", &url[..scheme_end + 3], user, &url[at..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(vars: &[(&str, &str)]) -> Result<Config, Error> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_source(&Source(&move |name| map.get(name).cloned()))
    }

    #[test]
    fn defaults_bind_to_loopback_port_8000() {
        let cfg = load(&[("DATABASE_URL", "postgres://u@h/db")]).expect("valid config");
        assert_eq!(cfg.bind_addr.to_string(), "127.0.0.1:8000");
        assert_eq!(cfg.s3.bucket, "fastflow-logs");
        assert_eq!(cfg.lease, Duration::from_secs(30));
    }

    #[test]
    fn bad_values_name_the_variable() {
        let err = load(&[("DATABASE_URL", "postgres://u@h/db"), ("BIND_ADDR", "nope")])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.starts_with("BIND_ADDR:"), "{err}");
        let err = load(&[]).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.starts_with("DATABASE_URL is required"), "{err}");
        let err = load(&[("DATABASE_URL", "mysql://x:secret@h/db")]).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("DATABASE_URL") && !err.contains("secret"), "{err}");
        let err = load(&[("DATABASE_URL", "postgres://h/db"), ("S3_BUCKET", "Bad_Bucket")])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.starts_with("S3_BUCKET:"), "{err}");
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact_url("postgres://me:pw@host:5/db"), "postgres://me:***@host:5/db");
        assert_eq!(redact_url("postgres://host/db"), "postgres://host/db");
    }
}
