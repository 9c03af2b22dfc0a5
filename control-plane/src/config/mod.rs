//! The control plane's configuration: read once from the environment at start.
//! No other module reads environment variables.

mod allowed_hosts;
mod public_url;
mod streams;

use crate::object_store::S3Settings;
pub use allowed_hosts::{AllowedHosts, SettingError};
pub use public_url::PublicUrl;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{name}: {message} (got `{value}`)")]
    Invalid { name: &'static str, value: String, message: String },
    #[error(transparent)]
    Runner(#[from] runner_agent::config::Error),
}

/// How the control plane talks to NATS beyond `NATS_URL`.
#[derive(Clone)]
pub struct NatsSecurity {
    pub settings: shared::nats_settings::NatsSettings,
    /// `NATS_AUTH_CALLOUT_SEED` (or the file `NATS_AUTH_CALLOUT_SEED_FILE` names): the
    /// account nkey seed (`SA…`) whose public key the NATS server's `auth_callout
    /// { issuer }` names. The control plane answers the server's authentication
    /// requests with permissions signed by it (see `runner_identity::callout`).
    pub callout_seed: String,
    /// `NATS_AUTH_CALLOUT_ACCOUNT`: the server's account runners are placed in (the
    /// control plane's own; default `FASTFLOW`).
    pub callout_account: String,
}

impl std::fmt::Debug for NatsSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsSecurity").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl NatsSecurity {
    fn from_source(url: &str, src: &Source<'_>) -> Result<NatsSecurity, Error> {
        let settings = shared::nats_settings::NatsSettings::from_source(url, &|name| src.get(name))
            .map_err(|e| Error::Invalid { name: e.name, value: e.value, message: e.message })?;
        let seed = match (src.get("NATS_AUTH_CALLOUT_SEED"), src.get("NATS_AUTH_CALLOUT_SEED_FILE")) {
            (Some(seed), _) => seed.trim().to_owned(),
            (None, Some(path)) => std::fs::read_to_string(&path).map(|s| s.trim().to_owned()).map_err(|e| {
                Error::Invalid { name: "NATS_AUTH_CALLOUT_SEED_FILE", value: path.clone(), message: e.to_string() }
            })?,
            (None, None) => {
                return Err(Error::Invalid {
                    name: "NATS_AUTH_CALLOUT_SEED",
                    value: String::new(),
                    message: "with NATS_URL, the control plane authenticates runners through the NATS server's \
                              auth callout: set it to the account seed whose public key the server's \
                              `auth_callout { issuer }` names (`control-plane nats-setup` prints both and an \
                              example server configuration)"
                        .into(),
                });
            }
        };
        match nkeys::KeyPair::from_seed(&seed) {
            Ok(key) if key.public_key().starts_with('A') => Ok(NatsSecurity {
                settings,
                callout_seed: seed,
                callout_account: src.string("NATS_AUTH_CALLOUT_ACCOUNT", "FASTFLOW"),
            }),
            _ => Err(Error::Invalid {
                name: "NATS_AUTH_CALLOUT_SEED",
                value: "***".into(),
                message: "expected an account nkey seed (starting with SA)".into(),
            }),
        }
    }
}

/// What happens to a new run when a concurrency limit is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConcurrencyPolicy {
    /// It waits `queued` until a slot frees.
    Queue,
    /// The start is refused with 429.
    Reject,
}

/// How long a login session lasts (`crate::auth::sessions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionSettings {
    /// `SESSION_IDLE_TIMEOUT`: a session unused this long ends (default 12 h).
    pub idle_timeout: Duration,
    /// `SESSION_MAX_AGE`: a session ends this long after its login, used or not (default 7 days).
    pub max_age: Duration,
}

impl Default for SessionSettings {
    fn default() -> Self {
        SessionSettings { idle_timeout: Duration::from_secs(12 * 3600), max_age: Duration::from_secs(7 * 86_400) }
    }
}

/// A duration such as `90`, `90s`, `30m`, `12h`, `7d` or `1.5h` (a bare number is seconds,
/// as in the `*_SECONDS` settings). `None` for anything else, zero, or over 100 years.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let unit_secs = match unit.trim() {
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        _ => return None,
    };
    let secs = number * unit_secs;
    (secs.is_finite() && (0.001..=100.0 * 365.0 * 86_400.0).contains(&secs)).then(|| Duration::from_secs_f64(secs))
}

#[derive(Debug, Clone)]
pub struct Config {
    pub bind_addr: SocketAddr,
    /// `DATABASE_URL`: `postgres://…`, or `sqlite://…`; unset: SQLite in `DATA_DIR`.
    pub database_url: String,
    /// `DATA_DIR`: the single node's database and live log spool.
    pub data_dir: PathBuf,
    /// `LOGS_DIR`: archived logs when no S3 store is configured.
    pub logs_dir: PathBuf,
    /// `NATS_URL`: runners are separate processes; unset: in-process bus and embedded runner.
    pub nats_url: Option<String>,
    /// With `NATS_URL`: TLS, subject prefix and the auth-callout key.
    pub nats: Option<NatsSecurity>,
    /// Set when `S3_ENDPOINT` or `S3_BUCKET` is: archived logs go to S3 instead of `LOGS_DIR`.
    pub s3: Option<S3Settings>,
    /// The embedded runner's settings (`RUNNER_*`, `CONTAINER_*`), without `NATS_URL` only.
    pub embedded_runner: Option<runner_agent::config::Config>,
    pub pipelines_dir: PathBuf,
    pub worker_base_image: String,
    /// How long a claimed run stays owned without a heartbeat.
    pub lease: Duration,
    /// How often queued runs are checked for a live offer (and leases for expiry).
    pub sweep_interval: Duration,
    /// How old a queued run must be before the sweeper checks its offer.
    pub reoffer_after: Duration,
    /// Runs executing at once across all runners (`MAX_CONCURRENT_RUNS`; `None`: unlimited).
    pub max_concurrent_runs: Option<i64>,
    pub concurrency_policy: ConcurrencyPolicy,
    /// Limits for every job unless its pipeline sets its own.
    pub default_resources: shared::protocol::Resources,
    /// The runners' SIGTERM → SIGKILL grace (`RUNNER_STOP_GRACE_SECONDS`), used to
    /// judge when a timed-out job is overdue.
    pub stop_grace: Duration,
    /// `LOG_MAX_SIZE_MB`: output kept per attempt (`None`: all of it).
    pub log_max_bytes: Option<u64>,
    /// `LOG_STREAM_RATE_LIMIT`: log lines per second sent to one SSE client (`None`: no limit).
    pub log_stream_rate: Option<u32>,
    /// `SSE_MAX_STREAMS`: live log streams this replica serves at once (`None`: no limit).
    pub sse_max_streams: Option<usize>,
    /// `SSE_MAX_STREAMS_PER_USER`: live log streams one user may hold open on this
    /// replica (`None`: no limit).
    pub sse_max_streams_per_user: Option<usize>,
    /// `LOG_RETENTION_RUNS`: archived logs kept per pipeline (newest runs).
    pub log_retention_runs: Option<i64>,
    /// `LOG_RETENTION_DAYS`: archived logs older than this are deleted.
    pub log_retention: Option<Duration>,
    /// `RETRY_ATTEMPTS`: attempts after the first for pipelines that set no `retries`.
    pub retry_attempts: u32,
    /// `RETRY_BACKOFF_SECONDS`: delay before the first retry (doubling after each).
    pub retry_backoff: Duration,
    /// `NO_RUNNER_TIMEOUT_SECONDS`: a queued run whose pool has had no live
    /// runner for this long fails with `no_runner` (`None`: wait forever).
    pub no_runner_timeout: Option<Duration>,
    /// Timeout for jobs whose pipeline sets none (`CONTAINER_TIMEOUT`; none by default).
    pub default_timeout: Option<u64>,
    /// `Host` names served besides loopback ones (`PUBLIC_URL`'s host, `ALLOWED_HOSTS`).
    pub allowed_hosts: AllowedHosts,
    /// `TRUSTED_PROXIES`: reverse proxies whose `X-Forwarded-For` names the client (for
    /// the login back-off per address and the audit log); empty: the socket's peer.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// `PUBLIC_URL`: the origin browsers use (CSRF check) and whether cookies are `Secure`.
    pub public_url: Option<PublicUrl>,
    /// `SESSION_IDLE_TIMEOUT`, `SESSION_MAX_AGE`.
    pub sessions: SessionSettings,
    /// `NATS_*_MAX_BYTES`, `NATS_*_MAX_AGE_SECONDS`: the NATS streams' limits.
    pub stream_bounds: crate::bus::StreamBounds,
    /// `LATE_LOG_PURGE_AFTER_SECONDS`: an ended attempt's live log subject is purged
    /// again this long after the end, and 30 minutes later (late batches).
    pub late_log_purge_after: Duration,
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

    fn optional_seconds(&self, name: &'static str) -> Result<Option<u64>, Error> {
        match self.get(name) {
            None => Ok(None),
            Some(_) => {
                let secs: u64 = self.parsed(name, 0, "a whole number of seconds")?;
                Ok((secs > 0).then_some(secs))
            }
        }
    }

    /// A [`parse_duration`] value.
    fn duration(&self, name: &'static str, default: Duration) -> Result<Duration, Error> {
        match self.get(name) {
            None => Ok(default),
            Some(value) => parse_duration(&value).ok_or_else(|| Error::Invalid {
                name,
                value,
                message: "expected a duration such as 3600, 30m, 12h or 7d".into(),
            }),
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
        let data_dir = PathBuf::from(src.string("DATA_DIR", "./data"));
        let database_url = match src.get("DATABASE_URL") {
            Some(url) => url,
            None => format!("sqlite://{}", data_dir.join("fastflow.db").display()),
        };
        if !["postgres://", "postgresql://", "sqlite://"].iter().any(|p| database_url.starts_with(p)) {
            return Err(Error::Invalid {
                name: "DATABASE_URL",
                value: redact_url(&database_url),
                message: "expected a postgres:// or sqlite:// URL".into(),
            });
        }
        let nats_url = src.get("NATS_URL");
        let nats = match &nats_url {
            None => None,
            Some(url) => Some(NatsSecurity::from_source(url, src)?),
        };
        let s3 = if src.get("S3_ENDPOINT").is_some() || src.get("S3_BUCKET").is_some() {
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
            Some(s3)
        } else {
            None
        };
        let embedded_runner = match nats_url {
            Some(_) => None,
            None => {
                // The embedded runner keeps its id and caches under DATA_DIR unless told otherwise.
                let runner_dir = data_dir.join("runner").display().to_string();
                let lookup = |name: &str| match name {
                    "RUNNER_DATA_DIR" => src.get(name).or_else(|| Some(runner_dir.clone())),
                    _ => src.get(name),
                };
                Some(runner_agent::config::Config::from_source(&lookup)?)
            }
        };
        let lease = src.seconds("RUN_LEASE_SECONDS", 25)?;
        // The embedded runner's fence must end before the lease (a runner process checks
        // the same at its first heartbeat).
        if let Some(runner) = &embedded_runner
            && let Err(e) = runner.fence_settings().fence_after(lease)
        {
            return Err(Error::Invalid {
                name: "RUN_LEASE_SECONDS",
                value: lease.as_secs().to_string(),
                message: e.to_string(),
            });
        }
        let allowed_hosts = AllowedHosts::parse(src.get("PUBLIC_URL").as_deref(), src.get("ALLOWED_HOSTS").as_deref())
            .map_err(|e| Error::Invalid { name: e.name, value: e.value, message: e.message.into() })?;
        // Valid once `AllowedHosts::parse` accepted it.
        let public_url = src.get("PUBLIC_URL").as_deref().and_then(PublicUrl::parse);
        let sessions = {
            let default = SessionSettings::default();
            SessionSettings {
                idle_timeout: src.duration("SESSION_IDLE_TIMEOUT", default.idle_timeout)?,
                max_age: src.duration("SESSION_MAX_AGE", default.max_age)?,
            }
        };
        let trusted_proxies = match src.get("TRUSTED_PROXIES") {
            None => Vec::new(),
            Some(value) => parse_networks(&value).map_err(|message| Error::Invalid {
                name: "TRUSTED_PROXIES",
                value: value.clone(),
                message,
            })?,
        };
        let default_timeout = src.optional_seconds("CONTAINER_TIMEOUT")?;
        Ok(Config {
            stream_bounds: streams::bounds(src, default_timeout)?,
            late_log_purge_after: streams::late_log_purge_after(src)?,
            sessions,
            allowed_hosts,
            trusted_proxies,
            public_url,
            bind_addr: src.parsed("BIND_ADDR", SocketAddr::from(([127, 0, 0, 1], 8000)), "host:port")?,
            database_url,
            logs_dir: PathBuf::from(src.string("LOGS_DIR", "./logs")),
            data_dir,
            nats_url,
            nats,
            s3,
            embedded_runner,
            pipelines_dir: PathBuf::from(src.string("PIPELINES_DIR", "./pipelines")),
            worker_base_image: src.string("WORKER_BASE_IMAGE", "fastflow-worker:latest"),
            // Heartbeats every 5 s; runners stop their jobs 5 s before a lease they could not
            // renew runs out, and a killed runner is detected within 25 s + one sweep.
            lease,
            sweep_interval: src.seconds("SWEEP_INTERVAL_SECONDS", 5)?,
            reoffer_after: src.seconds("REOFFER_AFTER_SECONDS", 10)?,
            default_resources: default_resources(src)?,
            max_concurrent_runs: {
                let max: i64 = src.parsed("MAX_CONCURRENT_RUNS", 10, "a number of runs (0: unlimited)")?;
                if max < 0 {
                    return Err(Error::Invalid {
                        name: "MAX_CONCURRENT_RUNS",
                        value: max.to_string(),
                        message: "must be 0 or more".into(),
                    });
                }
                (max > 0).then_some(max)
            },
            concurrency_policy: match src.string("CONCURRENCY_POLICY", "queue").as_str() {
                "queue" => ConcurrencyPolicy::Queue,
                "reject" => ConcurrencyPolicy::Reject,
                other => {
                    return Err(Error::Invalid {
                        name: "CONCURRENCY_POLICY",
                        value: other.into(),
                        message: "expected `queue` or `reject`".into(),
                    });
                }
            },
            default_timeout,
            no_runner_timeout: match src.get("NO_RUNNER_TIMEOUT_SECONDS") {
                None => Some(Duration::from_secs(300)),
                Some(_) => src.optional_seconds("NO_RUNNER_TIMEOUT_SECONDS")?.map(Duration::from_secs),
            },
            retry_attempts: src.parsed("RETRY_ATTEMPTS", 0, "a number of retries")?,
            retry_backoff: {
                let secs: f64 = src.parsed("RETRY_BACKOFF_SECONDS", 2.0, "a number of seconds")?;
                if !(secs.is_finite() && (0.0..=3600.0).contains(&secs)) {
                    return Err(Error::Invalid {
                        name: "RETRY_BACKOFF_SECONDS",
                        value: secs.to_string(),
                        message: "must be from 0 to 3600".into(),
                    });
                }
                Duration::from_secs_f64(secs)
            },
            log_retention_runs: {
                let keep: i64 = src.parsed("LOG_RETENTION_RUNS", 0, "a number of runs (0: keep all)")?;
                if keep < 0 {
                    return Err(Error::Invalid {
                        name: "LOG_RETENTION_RUNS",
                        value: keep.to_string(),
                        message: "must be 0 or more".into(),
                    });
                }
                (keep > 0).then_some(keep)
            },
            log_retention: {
                let days: f64 = src.parsed("LOG_RETENTION_DAYS", 0.0, "a number of days (0: keep forever)")?;
                if !(days.is_finite() && days >= 0.0) {
                    return Err(Error::Invalid {
                        name: "LOG_RETENTION_DAYS",
                        value: days.to_string(),
                        message: "must be 0 or more".into(),
                    });
                }
                (days > 0.0).then(|| Duration::from_secs_f64(days * 86_400.0))
            },
            log_max_bytes: {
                let mb: u64 =
                    src.parsed("LOG_MAX_SIZE_MB", DEFAULT_LOG_MAX_SIZE_MB, "a number of MiB (0: unlimited)")?;
                (mb > 0).then(|| mb.saturating_mul(1024 * 1024))
            },
            log_stream_rate: {
                let rate: u32 = src.parsed("LOG_STREAM_RATE_LIMIT", 100, "lines per second (0: unlimited)")?;
                (rate > 0).then_some(rate)
            },
            sse_max_streams: {
                let max: usize = src.parsed("SSE_MAX_STREAMS", 1000, "a number of streams (0: unlimited)")?;
                (max > 0).then_some(max)
            },
            sse_max_streams_per_user: {
                let max: usize = src.parsed("SSE_MAX_STREAMS_PER_USER", 50, "a number of streams (0: unlimited)")?;
                (max > 0).then_some(max)
            },
            stop_grace: Duration::from_secs(src.parsed(
                "RUNNER_STOP_GRACE_SECONDS",
                10,
                "a whole number of seconds",
            )?),
        })
    }
}

/// `CONTAINER_MEMORY_MB` (2048), `CONTAINER_CPUS` (2), `CONTAINER_PIDS_LIMIT` (1024);
/// `0` leaves the limit to the runner (its `RUNNER_DEFAULT_*`: a job always has limits).
fn default_resources(src: &Source<'_>) -> Result<shared::protocol::Resources, Error> {
    let memory: u64 = src.parsed("CONTAINER_MEMORY_MB", 2048, "a number of MiB")?;
    let cpus: f64 = src.parsed("CONTAINER_CPUS", 2.0, "a number of CPUs such as 1.5")?;
    let pids: i64 = src.parsed("CONTAINER_PIDS_LIMIT", 1024, "a number of processes")?;
    let bad =
        |name: &'static str, value: String, message: &str| Error::Invalid { name, value, message: message.into() };
    if memory != 0 && memory < 6 {
        return Err(bad("CONTAINER_MEMORY_MB", memory.to_string(), "must be 0 (the runner's default) or at least 6"));
    }
    if !(cpus.is_finite() && cpus >= 0.0) {
        return Err(bad("CONTAINER_CPUS", cpus.to_string(), "must be 0 (the runner's default) or a positive number"));
    }
    if pids != 0 && pids < 16 {
        return Err(bad("CONTAINER_PIDS_LIMIT", pids.to_string(), "must be 0 (the runner's default) or at least 16"));
    }
    Ok(shared::protocol::Resources {
        memory_mb: (memory > 0).then_some(memory),
        cpu_millis: (cpus > 0.0).then(|| (cpus * 1000.0).round() as u64),
        pids: (pids > 0).then_some(pids),
    })
}

fn valid_bucket_name(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

/// A comma-separated list of addresses (`10.0.0.5`, `::1`) and networks (`10.0.0.0/8`).
fn parse_networks(value: &str) -> Result<Vec<ipnet::IpNet>, String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            item.parse::<ipnet::IpNet>()
                .or_else(|_| item.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| format!("`{item}` is neither an IP address nor a network like 10.0.0.0/8"))
        })
        .collect()
}

/// The default log cap per attempt, in MiB: a job that prints without end cannot fill
/// the log store, NATS or the runner host's disk (the engine's copy is bounded by it
/// too); `LOG_MAX_SIZE_MB=0` lifts it.
pub const DEFAULT_LOG_MAX_SIZE_MB: u64 = 100;

/// Credentials in a URL are never printed (shared with the runner).
pub use shared::service_url::redact_url;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(vars: &[(&str, &str)]) -> Result<Config, Error> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_source(&Source(&move |name| map.get(name).cloned()))
    }

    #[test]
    fn defaults_are_a_single_node_on_loopback_port_8000() {
        let cfg = load(&[]).expect("valid config");
        assert_eq!(cfg.bind_addr.to_string(), "127.0.0.1:8000");
        assert_eq!(cfg.database_url, "sqlite://./data/fastflow.db");
        assert_eq!(cfg.logs_dir, PathBuf::from("./logs"));
        assert!(cfg.s3.is_none() && cfg.nats_url.is_none());
        let runner = cfg.embedded_runner.expect("an embedded runner without NATS_URL");
        assert_eq!(runner.data_dir, PathBuf::from("./data/runner"));
        assert_eq!(cfg.lease, Duration::from_secs(25));
        assert_eq!(cfg.log_max_bytes, Some(100 * 1024 * 1024), "a log cap by default");
        assert_eq!((cfg.sse_max_streams, cfg.sse_max_streams_per_user), (Some(1000), Some(50)));
        assert!(cfg.trusted_proxies.is_empty(), "no proxy is trusted by default");
        let proxied = load(&[("TRUSTED_PROXIES", "10.0.0.5, 172.16.0.0/12,::1")]).expect("valid config");
        let shown: Vec<String> = proxied.trusted_proxies.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["10.0.0.5/32", "172.16.0.0/12", "::1/128"]);
        assert!(load(&[("TRUSTED_PROXIES", "10.0.0.0/33")]).is_err());
        assert!(load(&[("TRUSTED_PROXIES", "proxy.example")]).is_err());
        let uncapped = load(&[("LOG_MAX_SIZE_MB", "0")]).expect("valid config");
        assert_eq!(uncapped.log_max_bytes, None, "0 lifts the cap");
    }

    #[test]
    fn each_seam_switches_to_its_distributed_implementation_on_its_own() {
        let cfg = load(&[("S3_ENDPOINT", "http://127.0.0.1:9000")]).expect("valid config");
        assert_eq!(cfg.s3.as_ref().map(|s| s.bucket.as_str()), Some("fastflow-logs"));
        assert!(cfg.nats_url.is_none() && cfg.database_url.starts_with("sqlite://"));
        let seed = nkeys::KeyPair::new_account().seed().expect("seed");
        let nats = [
            ("NATS_URL", "nats://127.0.0.1:4222"),
            ("NATS_TLS_CA", "/ca.pem"),
            ("NATS_AUTH_CALLOUT_SEED", seed.as_str()),
        ];
        let cfg = load(&nats).expect("valid config");
        assert!(cfg.embedded_runner.is_none() && cfg.s3.is_none());
        assert!(cfg.nats.as_ref().is_some_and(|n| n.callout_account == "FASTFLOW"));
        assert!(!format!("{:?}", cfg.nats).contains(&seed), "the seed is not in Debug output");
        let cfg = load(&[("DATABASE_URL", "postgres://u@h/db"), ("DATA_DIR", "/srv/ff")]).expect("valid config");
        assert_eq!(cfg.database_url, "postgres://u@h/db");
        assert_eq!(cfg.embedded_runner.map(|r| r.data_dir), Some(PathBuf::from("/srv/ff/runner")));
    }

    #[test]
    fn accepts_a_sqlite_database() {
        let cfg = load(&[("DATABASE_URL", "sqlite://./data/fastflow.db")]).expect("valid config");
        assert_eq!(cfg.database_url, "sqlite://./data/fastflow.db");
    }

    #[test]
    fn bad_values_name_the_variable() {
        let err = load(&[("DATABASE_URL", "postgres://u@h/db"), ("BIND_ADDR", "nope")])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.starts_with("BIND_ADDR:"), "{err}");
        let err = load(&[("RUNNER_CONCURRENCY", "0")]).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.starts_with("RUNNER_CONCURRENCY:"), "{err}");
        let err = load(&[("DATABASE_URL", "mysql://x:secret@h/db")]).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("DATABASE_URL") && !err.contains("secret"), "{err}");
        let err = load(&[("DATABASE_URL", "postgres://h/db"), ("S3_BUCKET", "Bad_Bucket")])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.starts_with("S3_BUCKET:"), "{err}");
        let err = load(&[("PUBLIC_URL", "ff.example.com")]).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.starts_with("PUBLIC_URL:"), "{err}");
        let err = load(&[("ALLOWED_HOSTS", "a.example:80")]).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.starts_with("ALLOWED_HOSTS:"), "{err}");
        // The embedded runner's fence must end before the lease.
        let err = load(&[("RUN_LEASE_SECONDS", "25"), ("RUNNER_SELF_FENCE_SECONDS", "20")])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.starts_with("RUN_LEASE_SECONDS:") && err.contains("RUNNER_SELF_FENCE_SECONDS"), "{err}");
        let err = load(&[("RUN_LEASE_SECONDS", "8")]).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.starts_with("RUN_LEASE_SECONDS:"), "{err}");
        let seed = nkeys::KeyPair::new_account().seed().expect("seed");
        let distributed =
            [("RUN_LEASE_SECONDS", "8"), ("NATS_URL", "tls://h:4222"), ("NATS_AUTH_CALLOUT_SEED", seed.as_str())];
        assert!(load(&distributed).is_ok(), "runners check their own");
        // Distributed mode needs the callout key, and a key of the right kind.
        let err = load(&[("NATS_URL", "tls://h:4222")]).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.starts_with("NATS_AUTH_CALLOUT_SEED:"), "{err}");
        let user_seed = nkeys::KeyPair::new_user().seed().expect("seed");
        let err = load(&[("NATS_URL", "tls://h:4222"), ("NATS_AUTH_CALLOUT_SEED", user_seed.as_str())]).err();
        assert!(err.is_some_and(|e| e.to_string().contains("account nkey seed")));
        let err = load(&[("NATS_URL", "nats://h:4222"), ("NATS_AUTH_CALLOUT_SEED", seed.as_str())]).err();
        assert!(err.is_some_and(|e| e.to_string().contains("NATS_ALLOW_PLAINTEXT=1")));
    }

    #[test]
    fn public_url_and_allowed_hosts_name_served_hosts() {
        let cfg = load(&[("PUBLIC_URL", "https://ff.example.com"), ("ALLOWED_HOSTS", "ci.internal")]).expect("valid");
        assert_eq!(cfg.allowed_hosts.names, ["ff.example.com", "ci.internal"]);
        assert!(!cfg.allowed_hosts.any && load(&[]).expect("valid").allowed_hosts.names.is_empty());
    }

    #[test]
    fn session_durations_read_units_and_bare_seconds() {
        let cfg = load(&[]).expect("valid");
        assert_eq!(cfg.sessions, SessionSettings::default());
        assert_eq!(cfg.sessions.idle_timeout, Duration::from_secs(12 * 3600));
        let cfg = load(&[("SESSION_IDLE_TIMEOUT", "30m"), ("SESSION_MAX_AGE", "86400")]).expect("valid");
        assert_eq!(cfg.sessions.idle_timeout, Duration::from_secs(1800));
        assert_eq!(cfg.sessions.max_age, Duration::from_secs(86_400));
        assert_eq!(parse_duration("7d"), Some(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("1.5h"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration(" 90s "), Some(Duration::from_secs(90)));
        for bad in ["", "0", "h", "12x", "-1h", "1e9d"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
        let err = load(&[("SESSION_MAX_AGE", "soon")]).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.starts_with("SESSION_MAX_AGE:"), "{err}");
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact_url("postgres://me:pw@host:5/db"), "postgres://me:***@host:5/db");
        assert_eq!(redact_url("postgres://host/db"), "postgres://host/db");
    }
}
