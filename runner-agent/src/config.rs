//! The runner's configuration: read once from the environment at start.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
#[error("{name}: {message} (got `{value}`)")]
pub struct Error {
    name: &'static str,
    value: String,
    message: String,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub nats_url: String,
    pub runner_id: String,
    pub pool: String,
    pub concurrency: u32,
    pub data_dir: PathBuf,
    pub uv_cache_dir: PathBuf,
    /// SIGTERM → SIGKILL grace period when stopping a container.
    pub stop_grace: Duration,
    pub heartbeat_interval: Duration,
    /// Without a renewed lease for this long, the runner stops its jobs (the
    /// control plane gives them up after its lease, 30 s by default).
    pub self_fence_after: Duration,
    /// Capabilities given back to job containers (all others are dropped).
    pub cap_add: Vec<String>,
}

impl Config {
    pub fn from_env() -> Result<Config, Error> {
        Config::from_source(&|name| std::env::var(name).ok())
    }

    pub fn from_source(get: &dyn Fn(&str) -> Option<String>) -> Result<Config, Error> {
        let get = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        let runner_id = get("RUNNER_ID").unwrap_or_else(default_runner_id);
        if runner_id.is_empty()
            || runner_id.len() > 64
            || !runner_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(Error {
                name: "RUNNER_ID",
                value: runner_id,
                message: "use 1-64 letters, digits, `-` or `_`".into(),
            });
        }
        let concurrency: u32 = parse(get("RUNNER_CONCURRENCY"), "RUNNER_CONCURRENCY", 4, "a number of slots")?;
        if !(1..=256).contains(&concurrency) {
            return Err(Error {
                name: "RUNNER_CONCURRENCY",
                value: concurrency.to_string(),
                message: "must be from 1 to 256".into(),
            });
        }
        let data_dir = PathBuf::from(get("RUNNER_DATA_DIR").unwrap_or_else(|| "./runner-data".into()));
        let uv_cache_dir = get("UV_CACHE_DIR").map(PathBuf::from).unwrap_or_else(|| data_dir.join("uv-cache"));
        let cap_add = parse_caps(get("CONTAINER_CAP_ADD").unwrap_or_default())?;
        Ok(Config {
            cap_add,
            nats_url: get("NATS_URL").unwrap_or_else(|| "nats://127.0.0.1:4222".into()),
            runner_id,
            pool: shared::subjects::DEFAULT_POOL.into(),
            concurrency,
            data_dir,
            uv_cache_dir,
            stop_grace: Duration::from_secs(parse(
                get("RUNNER_STOP_GRACE_SECONDS"),
                "RUNNER_STOP_GRACE_SECONDS",
                10,
                "seconds",
            )?),
            self_fence_after: Duration::from_secs(parse(
                get("RUNNER_SELF_FENCE_SECONDS"),
                "RUNNER_SELF_FENCE_SECONDS",
                20,
                "seconds",
            )?),
            heartbeat_interval: Duration::from_secs(
                parse::<u64>(get("HEARTBEAT_INTERVAL_SECONDS"), "HEARTBEAT_INTERVAL_SECONDS", 5, "seconds")?.max(1),
            ),
        })
    }
}

fn parse<T: FromStr>(value: Option<String>, name: &'static str, default: T, what: &str) -> Result<T, Error> {
    match value {
        None => Ok(default),
        Some(v) => v.trim().parse().map_err(|_| Error { name, value: v, message: format!("expected {what}") }),
    }
}

/// `CONTAINER_CAP_ADD`: comma-separated capability names such as `NET_BIND_SERVICE`.
fn parse_caps(raw: String) -> Result<Vec<String>, Error> {
    let mut caps = Vec::new();
    for cap in raw.split(',').map(str::trim).filter(|c| !c.is_empty()) {
        let name = cap.to_ascii_uppercase();
        let name = name.strip_prefix("CAP_").unwrap_or(&name).to_owned();
        if name == "ALL" || name == "SYS_ADMIN" || !name.bytes().all(|b| b.is_ascii_uppercase() || b == b'_') {
            return Err(Error {
                name: "CONTAINER_CAP_ADD",
                value: raw.clone(),
                message: format!("`{cap}` is not an allowed capability name (ALL and SYS_ADMIN are refused)"),
            });
        }
        caps.push(name);
    }
    Ok(caps)
}

/// `<hostname>-<4 random hex digits>`, reduced to characters valid in a NATS subject.
fn default_runner_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_else(|_| "runner".into());
    let host: String = host.trim().chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').take(48).collect();
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..4];
    format!("{}-{suffix}", if host.is_empty() { "runner" } else { &host })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_errors() {
        let cfg = Config::from_source(&|_| None).expect("defaults");
        assert_eq!(cfg.concurrency, 4);
        assert!(cfg.uv_cache_dir.ends_with("uv-cache"));
        let err = Config::from_source(&|n| (n == "RUNNER_CONCURRENCY").then(|| "many".into())).err();
        assert!(err.map(|e| e.to_string()).unwrap_or_default().starts_with("RUNNER_CONCURRENCY:"));
        let err = Config::from_source(&|n| (n == "RUNNER_ID").then(|| "a.b".into())).err();
        assert!(err.map(|e| e.to_string()).unwrap_or_default().starts_with("RUNNER_ID:"));
        let cfg = Config::from_source(&|n| (n == "CONTAINER_CAP_ADD").then(|| "net_bind_service, CAP_CHOWN".into()));
        assert_eq!(cfg.map(|c| c.cap_add).ok(), Some(vec!["NET_BIND_SERVICE".to_string(), "CHOWN".to_string()]));
        let err = Config::from_source(&|n| (n == "CONTAINER_CAP_ADD").then(|| "ALL".into())).err();
        assert!(err.map(|e| e.to_string()).unwrap_or_default().starts_with("CONTAINER_CAP_ADD:"));
    }
}
