//! The runner's configuration: read once from the environment at start.

use std::path::PathBuf;
use std::str::FromStr;

use ipnet::Ipv4Net;
use std::time::Duration;

use crate::docker::LogDriver;

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
    /// `RUNNER_ID` was set. Otherwise `runner_id` is a fresh default that
    /// [`Config::load_or_persist_runner_id`] replaces with the one kept in the data dir.
    pub runner_id_from_env: bool,
    pub pool: String,
    /// `RUNNER_POOL` was set (a runner enrolled in another pool refuses to start).
    pub pool_from_env: bool,
    /// `RUNNER_REGISTRATION_TOKEN`: exchanged once for the runner's credentials (see `enrollment`).
    pub registration_token: Option<String>,
    pub concurrency: u32,
    pub data_dir: PathBuf,
    pub uv_cache_dir: PathBuf,
    /// `RUNNER_ISOLATED_BLOCK`: more IPv4 networks `isolated` jobs cannot reach, e.g. the
    /// private network of the control plane, NATS and Postgres when they run on other
    /// hosts (the runner's own host and the metadata addresses are always blocked).
    pub isolated_block: Vec<Ipv4Net>,
    /// SIGTERM → SIGKILL grace period when stopping a container.
    pub stop_grace: Duration,
    pub heartbeat_interval: Duration,
    /// `RUNNER_SELF_FENCE_SECONDS`: stop the jobs this long after the last renewal
    /// instead of at the lease minus the margin (see `fence`); `None`: derived from the lease.
    pub self_fence_after: Option<Duration>,
    /// `RUNNER_FENCE_MARGIN_SECONDS`: jobs are stopped this long before their lease could end.
    pub fence_margin: Duration,
    /// `RUNNER_UNCONFIRMED_LEASE_GRACE_SECONDS`: how long past the fence jobs are kept while
    /// the control plane answers but cannot reach its database (provisional replies).
    pub unconfirmed_lease_grace: Duration,
    /// Capabilities given back to job containers (all others are dropped).
    pub cap_add: Vec<String>,
    /// `RUNNER_BENCH_NOOP_EXECUTOR=1`: benchmark-only. Claimed jobs are not executed: no
    /// code, image or container; each attempt publishes one system line and reports exit
    /// code 0. For measuring dispatch capacity (BENCHMARKS.md); never for real use, so only
    /// a build with the `bench-noop` feature has it (others refuse the variable).
    #[cfg(feature = "bench-noop")]
    pub noop_executor: bool,
    /// `RUNNER_CONTAINER_LOG_DRIVER`: `local` (default) or `engine-default`.
    pub container_log_driver: LogDriver,
    /// `RUNNER_DEFAULT_*` and `RUNNER_MAX_*`: the limits of a job whose spec names none,
    /// and the most a spec may ask for.
    pub limits: crate::limits::Settings,
}

impl Config {
    pub fn from_env() -> Result<Config, Error> {
        Config::from_source(&|name| std::env::var(name).ok())
    }

    pub fn from_source(get: &dyn Fn(&str) -> Option<String>) -> Result<Config, Error> {
        let get = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        let from_env = get("RUNNER_ID");
        let runner_id_from_env = from_env.is_some();
        let runner_id = from_env.unwrap_or_else(default_runner_id);
        if !valid_runner_id(&runner_id) {
            return Err(Error {
                name: "RUNNER_ID",
                value: runner_id,
                message: "use 1-64 letters, digits, `-` or `_`".into(),
            });
        }
        let data_dir = PathBuf::from(get("RUNNER_DATA_DIR").unwrap_or_else(|| "./runner-data".into()));
        let uv_cache_dir = get("UV_CACHE_DIR").map(PathBuf::from).unwrap_or_else(|| data_dir.join("uv-cache"));
        let cap_add = parse_caps(get("CONTAINER_CAP_ADD").unwrap_or_default())?;
        let isolated_block = parse_networks(get("RUNNER_ISOLATED_BLOCK").unwrap_or_default())?;
        let noop_executor = noop_executor(get("RUNNER_BENCH_NOOP_EXECUTOR"))?;
        let concurrency: u32 = parse(get("RUNNER_CONCURRENCY"), "RUNNER_CONCURRENCY", 4, "a number of slots")?;
        // No-op slots cost nothing: the dispatch benchmark uses thousands to
        // measure claims apart from the exit path.
        let max_concurrency = if noop_executor { MAX_NOOP_CONCURRENCY } else { MAX_CONCURRENCY };
        if !(1..=max_concurrency).contains(&concurrency) {
            return Err(Error {
                name: "RUNNER_CONCURRENCY",
                value: concurrency.to_string(),
                message: format!("must be from 1 to {max_concurrency}"),
            });
        }
        let container_log_driver = parse_log_driver(get("RUNNER_CONTAINER_LOG_DRIVER"))?;
        let limits = parse_limits(&get)?;
        Ok(Config {
            limits,
            #[cfg(feature = "bench-noop")]
            noop_executor,
            container_log_driver,
            cap_add,
            nats_url: get("NATS_URL").unwrap_or_else(|| "nats://127.0.0.1:4222".into()),
            runner_id,
            runner_id_from_env,
            pool_from_env: get("RUNNER_POOL").is_some(),
            registration_token: get("RUNNER_REGISTRATION_TOKEN").map(|t| t.trim().to_owned()),
            pool: {
                let pool = get("RUNNER_POOL").unwrap_or_else(|| shared::subjects::DEFAULT_POOL.into());
                if !shared::subjects::valid_pool(&pool) {
                    return Err(Error {
                        name: "RUNNER_POOL",
                        value: pool,
                        message: "use 1-64 letters, digits, `_` or `-`".into(),
                    });
                }
                pool
            },
            concurrency,
            data_dir,
            uv_cache_dir,
            isolated_block,
            stop_grace: Duration::from_secs(parse(
                get("RUNNER_STOP_GRACE_SECONDS"),
                "RUNNER_STOP_GRACE_SECONDS",
                10,
                "seconds",
            )?),
            self_fence_after: match get("RUNNER_SELF_FENCE_SECONDS") {
                None => None,
                Some(v) => Some(Duration::from_secs(positive(Some(v), "RUNNER_SELF_FENCE_SECONDS", 1)?)),
            },
            fence_margin: Duration::from_secs(positive(
                get("RUNNER_FENCE_MARGIN_SECONDS"),
                "RUNNER_FENCE_MARGIN_SECONDS",
                5,
            )?),
            unconfirmed_lease_grace: Duration::from_secs(parse(
                get("RUNNER_UNCONFIRMED_LEASE_GRACE_SECONDS"),
                "RUNNER_UNCONFIRMED_LEASE_GRACE_SECONDS",
                300,
                "seconds (0: none)",
            )?),
            heartbeat_interval: Duration::from_secs(
                parse::<u64>(get("HEARTBEAT_INTERVAL_SECONDS"), "HEARTBEAT_INTERVAL_SECONDS", 5, "seconds")?.max(1),
            ),
        })
    }
}

impl Config {
    /// How the fence follows the lease (see `fence`).
    pub fn fence_settings(&self) -> crate::fence::Settings {
        crate::fence::Settings {
            fence_after: self.self_fence_after,
            margin: self.fence_margin,
            unconfirmed_grace: self.unconfirmed_lease_grace,
            heartbeat_interval: self.heartbeat_interval,
        }
    }

    /// Without `RUNNER_ID`, the runner keeps the id it generated the first time in
    /// `RUNNER_DATA_DIR/runner-id`, so that after a restart it finds its containers (labelled
    /// with its id) and the control plane still sees it as the holder of their runs.
    /// Call once the data dir exists.
    pub fn load_or_persist_runner_id(&mut self) -> Result<(), Error> {
        if self.runner_id_from_env {
            return Ok(());
        }
        let path = self.data_dir.join(RUNNER_ID_FILE);
        let failed = |message: String| Error { name: "RUNNER_DATA_DIR", value: path.display().to_string(), message };
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let id = text.trim();
                if !valid_runner_id(id) {
                    return Err(failed(format!("{RUNNER_ID_FILE} holds an invalid runner id; fix or delete it")));
                }
                self.runner_id = id.to_owned();
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Write-then-rename: a crash never leaves a half-written id behind.
                let tmp = self.data_dir.join(format!("{RUNNER_ID_FILE}.tmp"));
                std::fs::write(&tmp, format!("{}\n", self.runner_id))
                    .and_then(|()| std::fs::rename(&tmp, &path))
                    .map_err(|e| failed(format!("cannot write {RUNNER_ID_FILE}: {e}")))
            }
            Err(e) => Err(failed(format!("cannot read {RUNNER_ID_FILE}: {e}"))),
        }
    }
}

impl Config {
    /// Keeps `id` in `RUNNER_DATA_DIR/runner-id` (the enrolled id, when it differs from the kept one).
    pub fn persist_runner_id(&self, id: &str) -> Result<(), Error> {
        let path = self.data_dir.join(RUNNER_ID_FILE);
        let tmp = self.data_dir.join(format!("{RUNNER_ID_FILE}.tmp"));
        std::fs::write(&tmp, format!("{id}\n")).and_then(|()| std::fs::rename(&tmp, &path)).map_err(|e| Error {
            name: "RUNNER_DATA_DIR",
            value: path.display().to_string(),
            message: format!("cannot write {RUNNER_ID_FILE}: {e}"),
        })
    }
}

/// File in the data dir holding the generated runner id.
const RUNNER_ID_FILE: &str = "runner-id";
/// Slots of a runner that executes containers.
const MAX_CONCURRENCY: u32 = 256;
/// Slots of a runner in the benchmark-only no-op mode.
const MAX_NOOP_CONCURRENCY: u32 = 10_000;
const NOOP_VARIABLE: &str = "RUNNER_BENCH_NOOP_EXECUTOR";

/// `RUNNER_BENCH_NOOP_EXECUTOR`: on only in a build with the `bench-noop` feature.
fn noop_executor(value: Option<String>) -> Result<bool, Error> {
    let on = parse_flag(value.clone(), NOOP_VARIABLE)?;
    if on && cfg!(not(feature = "bench-noop")) {
        // A release binary must not be told to report success without running anything.
        return Err(Error {
            name: NOOP_VARIABLE,
            value: value.unwrap_or_default(),
            message: "benchmark-only and not in this build (built without the `bench-noop` feature); unset it".into(),
        });
    }
    if on {
        tracing::warn!(
            "RUNNER_BENCH_NOOP_EXECUTOR is on: benchmark mode, claimed jobs are NOT executed \
             (no container; each run reports exit code 0). Never use this for real work."
        );
    }
    Ok(on)
}

fn valid_runner_id(id: &str) -> bool {
    shared::subjects::valid_runner_id(id)
}

fn parse<T: FromStr>(value: Option<String>, name: &'static str, default: T, what: &str) -> Result<T, Error> {
    match value {
        None => Ok(default),
        Some(v) => v.trim().parse().map_err(|_| Error { name, value: v, message: format!("expected {what}") }),
    }
}

/// A whole number of seconds of at least 1.
fn positive(value: Option<String>, name: &'static str, default: u64) -> Result<u64, Error> {
    let v: u64 = parse(value, name, default, "a whole number of seconds")?;
    if v == 0 {
        return Err(Error { name, value: "0".into(), message: "must be at least 1".into() });
    }
    Ok(v)
}

/// An on/off setting: `1`/`true`/`yes`/`on` or `0`/`false`/`no`/`off`; unset is off.
fn parse_flag(value: Option<String>, name: &'static str) -> Result<bool, Error> {
    match value.as_deref().map(|v| v.trim().to_ascii_lowercase()) {
        None => Ok(false),
        Some(v) if matches!(v.as_str(), "1" | "true" | "yes" | "on") => Ok(true),
        Some(v) if matches!(v.as_str(), "0" | "false" | "no" | "off") => Ok(false),
        Some(_) => Err(Error { name, value: value.unwrap_or_default(), message: "expected 1 or 0".into() }),
    }
}

fn parse_log_driver(value: Option<String>) -> Result<LogDriver, Error> {
    match value.as_deref().map(|v| v.trim().to_ascii_lowercase()) {
        None => Ok(LogDriver::default()),
        Some(v) if v == "local" => Ok(LogDriver::Local),
        Some(v) if v == "engine-default" => Ok(LogDriver::EngineDefault),
        Some(_) => Err(Error {
            name: "RUNNER_CONTAINER_LOG_DRIVER",
            value: value.unwrap_or_default(),
            message: "expected `local` or `engine-default`".into(),
        }),
    }
}

/// `RUNNER_DEFAULT_MEMORY_MB`, `RUNNER_DEFAULT_CPU_MILLIS`, `RUNNER_DEFAULT_PIDS` (each at
/// least the engine's minimum: there is no "no limit"), and the optional caps
/// `RUNNER_MAX_MEMORY_MB`, `RUNNER_MAX_CPU_MILLIS`, `RUNNER_MAX_PIDS` (at least the default).
fn parse_limits(get: &dyn Fn(&str) -> Option<String>) -> Result<crate::limits::Settings, Error> {
    use crate::limits::{MIN_CPU_MILLIS, MIN_MEMORY_MB, MIN_PIDS, Settings};
    fn limit<T: FromStr + PartialOrd + std::fmt::Display + Copy>(
        get: &dyn Fn(&str) -> Option<String>,
        name: &'static str,
        default: T,
        min: T,
    ) -> Result<T, Error> {
        let value: T = parse(get(name), name, default, "a whole number")?;
        if value < min {
            return Err(Error { name, value: value.to_string(), message: format!("must be at least {min}") });
        }
        Ok(value)
    }
    fn cap<T: FromStr + PartialOrd + std::fmt::Display + Copy>(
        get: &dyn Fn(&str) -> Option<String>,
        name: &'static str,
        default_name: &str,
        default: T,
    ) -> Result<Option<T>, Error> {
        let Some(raw) = get(name) else { return Ok(None) };
        let value: T = parse(Some(raw), name, default, "a whole number")?;
        if value < default {
            return Err(Error {
                name,
                value: value.to_string(),
                message: format!("must be at least {default_name} ({default})"),
            });
        }
        Ok(Some(value))
    }
    let fallback = Settings::default();
    let default_memory_mb = limit(get, "RUNNER_DEFAULT_MEMORY_MB", fallback.default_memory_mb, MIN_MEMORY_MB)?;
    let default_cpu_millis = limit(get, "RUNNER_DEFAULT_CPU_MILLIS", fallback.default_cpu_millis, MIN_CPU_MILLIS)?;
    let default_pids = limit(get, "RUNNER_DEFAULT_PIDS", fallback.default_pids, MIN_PIDS)?;
    Ok(Settings {
        default_memory_mb,
        default_cpu_millis,
        default_pids,
        max_memory_mb: cap(get, "RUNNER_MAX_MEMORY_MB", "RUNNER_DEFAULT_MEMORY_MB", default_memory_mb)?,
        max_cpu_millis: cap(get, "RUNNER_MAX_CPU_MILLIS", "RUNNER_DEFAULT_CPU_MILLIS", default_cpu_millis)?,
        max_pids: cap(get, "RUNNER_MAX_PIDS", "RUNNER_DEFAULT_PIDS", default_pids)?,
    })
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

/// `RUNNER_ISOLATED_BLOCK`: comma-separated IPv4 networks (`10.0.0.0/8`) or addresses.
fn parse_networks(raw: String) -> Result<Vec<Ipv4Net>, Error> {
    let mut networks = Vec::new();
    for item in raw.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let parsed = match item.parse::<Ipv4Net>() {
            Ok(net) => Ok(net.trunc()),
            Err(_) => item.parse::<std::net::Ipv4Addr>().map(Ipv4Net::from),
        };
        let Ok(net) = parsed else {
            return Err(Error {
                name: "RUNNER_ISOLATED_BLOCK",
                value: raw.clone(),
                message: format!("`{item}` is not an IPv4 network like 10.0.0.0/8 or an IPv4 address"),
            });
        };
        networks.push(net);
    }
    Ok(networks)
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
        assert_eq!(cfg.container_log_driver, LogDriver::Local);
        let driver = |v: &'static str| {
            Config::from_source(&move |n| (n == "RUNNER_CONTAINER_LOG_DRIVER").then(|| v.into()))
                .map(|c| c.container_log_driver)
                .map_err(|e| e.to_string())
        };
        assert_eq!(driver("Engine-Default"), Ok(LogDriver::EngineDefault));
        assert_eq!(driver("local"), Ok(LogDriver::Local));
        assert!(driver("json-file").is_err_and(|e| e.starts_with("RUNNER_CONTAINER_LOG_DRIVER:")));
        let err = Config::from_source(&|n| (n == "RUNNER_CONCURRENCY").then(|| "2000".into())).err();
        assert!(err.map(|e| e.to_string()).unwrap_or_default().contains("must be from 1 to 256"));
        let err = Config::from_source(&|n| (n == "RUNNER_CONCURRENCY").then(|| "many".into())).err();
        assert!(err.map(|e| e.to_string()).unwrap_or_default().starts_with("RUNNER_CONCURRENCY:"));
        let err = Config::from_source(&|n| (n == "RUNNER_ID").then(|| "a.b".into())).err();
        assert!(err.map(|e| e.to_string()).unwrap_or_default().starts_with("RUNNER_ID:"));
        let cfg = Config::from_source(&|n| (n == "CONTAINER_CAP_ADD").then(|| "net_bind_service, CAP_CHOWN".into()));
        assert_eq!(cfg.map(|c| c.cap_add).ok(), Some(vec!["NET_BIND_SERVICE".to_string(), "CHOWN".to_string()]));
        let err = Config::from_source(&|n| (n == "CONTAINER_CAP_ADD").then(|| "ALL".into())).err();
        assert!(err.map(|e| e.to_string()).unwrap_or_default().starts_with("CONTAINER_CAP_ADD:"));
    }

    #[test]
    fn container_limits_have_defaults_and_optional_caps() {
        let limits = |vars: &'static [(&'static str, &'static str)]| {
            Config::from_source(&move |n| vars.iter().find(|(k, _)| *k == n).map(|(_, v)| v.to_string()))
                .map(|c| c.limits)
                .map_err(|e| e.to_string())
        };
        assert_eq!(limits(&[]), Ok(crate::limits::Settings::default()));
        let set = limits(&[
            ("RUNNER_DEFAULT_MEMORY_MB", "512"),
            ("RUNNER_DEFAULT_CPU_MILLIS", "500"),
            ("RUNNER_DEFAULT_PIDS", "128"),
            ("RUNNER_MAX_MEMORY_MB", "4096"),
            ("RUNNER_MAX_PIDS", "128"),
        ])
        .expect("valid");
        assert_eq!((set.default_memory_mb, set.default_cpu_millis, set.default_pids), (512, 500, 128));
        assert_eq!((set.max_memory_mb, set.max_cpu_millis, set.max_pids), (Some(4096), None, Some(128)));
        for (vars, name) in [
            (&[("RUNNER_DEFAULT_MEMORY_MB", "0")][..], "RUNNER_DEFAULT_MEMORY_MB:"),
            (&[("RUNNER_DEFAULT_PIDS", "-1")][..], "RUNNER_DEFAULT_PIDS:"),
            (&[("RUNNER_DEFAULT_CPU_MILLIS", "lots")][..], "RUNNER_DEFAULT_CPU_MILLIS:"),
            (&[("RUNNER_MAX_MEMORY_MB", "1024")][..], "RUNNER_MAX_MEMORY_MB:"),
        ] {
            let err = limits(vars).err().unwrap_or_default();
            assert!(err.starts_with(name), "{err}");
        }
    }

    #[test]
    fn isolated_block_takes_ipv4_networks_and_addresses() {
        let block = |v: &'static str| {
            Config::from_source(&move |n| (n == "RUNNER_ISOLATED_BLOCK").then(|| v.into()))
                .map(|c| c.isolated_block.iter().map(ToString::to_string).collect::<Vec<_>>())
                .map_err(|e| e.to_string())
        };
        assert_eq!(Config::from_source(&|_| None).map(|c| c.isolated_block.len()).ok(), Some(0));
        assert_eq!(block("10.1.2.3/8, 192.168.7.9"), Ok(vec!["10.0.0.0/8".to_string(), "192.168.7.9/32".to_string()]));
        for bad in ["10.0.0.0/33", "fd00::/8", "db.internal"] {
            assert!(block(bad).is_err_and(|e| e.starts_with("RUNNER_ISOLATED_BLOCK:")), "{bad}");
        }
    }

    #[cfg(feature = "bench-noop")]
    #[test]
    fn the_bench_build_has_the_noop_executor() {
        let cfg = Config::from_source(&|_| None).expect("defaults");
        assert!(!cfg.noop_executor, "the benchmark-only no-op executor is off by default");
        let on = Config::from_source(&|n| (n == "RUNNER_BENCH_NOOP_EXECUTOR").then(|| "1".into()));
        assert_eq!(on.map(|c| c.noop_executor).ok(), Some(true));
        let many = |noop: &'static str| {
            move |n: &str| match n {
                "RUNNER_CONCURRENCY" => Some("2000".to_string()),
                "RUNNER_BENCH_NOOP_EXECUTOR" => Some(noop.to_string()),
                _ => None,
            }
        };
        let err = Config::from_source(&many("0")).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("must be from 1 to 256"), "{err}");
        assert_eq!(Config::from_source(&many("1")).map(|c| c.concurrency).ok(), Some(2000));
        let err = Config::from_source(&|n| (n == "RUNNER_BENCH_NOOP_EXECUTOR").then(|| "maybe".into())).err();
        assert!(err.map(|e| e.to_string()).unwrap_or_default().starts_with("RUNNER_BENCH_NOOP_EXECUTOR:"));
    }

    #[cfg(not(feature = "bench-noop"))]
    #[test]
    fn a_default_build_refuses_the_noop_executor() {
        let noop = |v: &'static str| {
            Config::from_source(&move |n| (n == "RUNNER_BENCH_NOOP_EXECUTOR").then(|| v.into()))
                .map_err(|e| e.to_string())
        };
        let err = noop("1").err().unwrap_or_default();
        assert!(err.starts_with("RUNNER_BENCH_NOOP_EXECUTOR:") && err.contains("bench-noop"), "{err}");
        assert!(!err.contains('\n'), "one line: {err}");
        assert!(noop("0").is_ok(), "off is harmless");
        assert!(noop("maybe").is_err_and(|e| e.starts_with("RUNNER_BENCH_NOOP_EXECUTOR:")));
        // Nor does it lift the slot limit.
        let many = |n: &str| match n {
            "RUNNER_CONCURRENCY" => Some("2000".to_string()),
            "RUNNER_BENCH_NOOP_EXECUTOR" => Some("0".to_string()),
            _ => None,
        };
        assert!(Config::from_source(&many).is_err());
    }

    #[test]
    fn a_generated_runner_id_is_kept_in_the_data_dir() {
        let dir = std::env::temp_dir().join(format!("ff-runner-id-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let data_dir = dir.to_string_lossy().into_owned();
        let source = |n: &str| (n == "RUNNER_DATA_DIR").then(|| data_dir.clone());
        let mut first = Config::from_source(&source).expect("config");
        assert!(!first.runner_id_from_env);
        first.load_or_persist_runner_id().expect("persist");
        let mut second = Config::from_source(&source).expect("config");
        assert_ne!(first.runner_id, second.runner_id, "a fresh default each time");
        second.load_or_persist_runner_id().expect("load");
        assert_eq!(first.runner_id, second.runner_id, "the persisted id is reused");

        // RUNNER_ID wins over the file and is not written to it.
        let mut explicit = Config::from_source(&|n| match n {
            "RUNNER_ID" => Some("explicit-1".into()),
            _ => source(n),
        })
        .expect("config");
        explicit.load_or_persist_runner_id().expect("explicit");
        assert_eq!(explicit.runner_id, "explicit-1");

        std::fs::write(dir.join(RUNNER_ID_FILE), "not valid!\n").expect("write");
        let mut bad = Config::from_source(&source).expect("config");
        let err = bad.load_or_persist_runner_id().err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.starts_with("RUNNER_DATA_DIR:"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
