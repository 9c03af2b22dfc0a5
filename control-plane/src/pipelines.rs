//! Pipeline discovery in `PIPELINES_DIR` and the code bundles shipped to runners.
//!
//! A pipeline is a folder `<name>/` holding either `main.py` (run with `uv run`
//! in the worker image, with `--with-requirements` when `requirements.txt`
//! exists) or a `pipeline.toml` that sets `image` and `command`. The folder is
//! mounted read-only at `/app` in the job container.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use shared::FailureReason;
use shared::protocol::{CodeBundleRef, NetworkPolicy, Resources};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const MANIFEST: &str = "pipeline.toml";
const MAX_BUNDLE_BYTES: u64 = 64 * 1024 * 1024;
/// Folder entries never shipped to runners.
const IGNORED: &[&str] = &["__pycache__", ".git", ".venv", "node_modules"];

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("pipeline `{0}` not found")]
    NotFound(String),
    #[error("pipeline `{name}` is misconfigured: {message}")]
    Invalid { name: String, message: String },
    #[error("cannot read pipeline `{name}`: {source}")]
    Io { name: String, source: std::io::Error },
}

#[derive(Debug, Clone, Serialize)]
pub struct Pipeline {
    pub name: String,
    pub description: Option<String>,
    pub image: String,
    pub command: Vec<String>,
    pub has_requirements: bool,
    pub timeout_seconds: Option<u64>,
    /// Runs of this pipeline executing at once (`max_concurrent` in pipeline.toml).
    pub max_concurrent: Option<u32>,
    /// The runner pool its runs go to (`runner_pool`; default `default`).
    pub runner_pool: String,
    /// Attempts after the first (`retries`; default `RETRY_ATTEMPTS`).
    pub retries: Option<u32>,
    /// Failures that are retried (`retry_on`; default exit_code and lost).
    pub retry_on: Option<Vec<FailureReason>>,
    /// Limits set by this pipeline; unset ones fall back to the global defaults.
    pub resources: ResourceOverrides,
    /// What its jobs' containers may reach (`network`; default `isolated`).
    pub network: NetworkPolicy,
    #[serde(skip)]
    pub env: BTreeMap<String, String>,
    #[serde(skip)]
    pub is_python: bool,
    #[serde(skip)]
    pub dir: PathBuf,
}

/// The optional `pipeline.toml`. Unknown keys are errors, so typos surface.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    description: Option<String>,
    image: Option<String>,
    command: Option<Vec<String>>,
    timeout_seconds: Option<u64>,
    max_concurrent: Option<u32>,
    runner_pool: Option<String>,
    retries: Option<u32>,
    retry_on: Option<Vec<FailureReason>>,
    network: Option<NetworkPolicy>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    resources: ResourceOverrides,
}

/// `[resources]` in `pipeline.toml`.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ResourceOverrides {
    pub memory_mb: Option<u64>,
    pub cpus: Option<f64>,
    pub pids: Option<i64>,
}

impl ResourceOverrides {
    /// Checks the values Docker would refuse or that make no sense.
    pub fn check(&self) -> Result<(), String> {
        if self.memory_mb.is_some_and(|m| !(6..=1024 * 1024).contains(&m)) {
            return Err("`resources.memory_mb` must be from 6 to 1048576".into());
        }
        if self.cpus.is_some_and(|c| !(0.01..=1024.0).contains(&c)) {
            return Err("`resources.cpus` must be from 0.01 to 1024".into());
        }
        if self.pids.is_some_and(|p| !(16..=1_000_000).contains(&p)) {
            return Err("`resources.pids` must be from 16 to 1000000".into());
        }
        Ok(())
    }

    /// These overrides on top of `defaults`.
    pub fn over(&self, defaults: Resources) -> Resources {
        Resources {
            memory_mb: self.memory_mb.or(defaults.memory_mb),
            cpu_millis: self.cpus.map(|c| (c * 1000.0).round() as u64).or(defaults.cpu_millis),
            pids: self.pids.or(defaults.pids),
        }
    }
}

/// Pipeline names: `^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`.
pub fn valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphanumeric())
        && name.len() <= 64
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[derive(Debug, Clone)]
pub struct Catalog {
    dir: PathBuf,
    worker_image: String,
}

impl Catalog {
    pub fn new(dir: PathBuf, worker_image: String) -> Catalog {
        Catalog { dir, worker_image }
    }

    /// Every valid pipeline, sorted by name. Misconfigured ones are logged and left out.
    pub fn list(&self) -> Result<Vec<Pipeline>, Error> {
        let io = |source| Error::Io { name: self.dir.display().to_string(), source };
        let mut names: Vec<String> = std::fs::read_dir(&self.dir)
            .map_err(io)?
            .filter_map(|entry| entry.ok())
            .filter(|entry| entry.file_type().map(|t| t.is_dir()).unwrap_or(false))
            .filter_map(|entry| entry.file_name().into_string().ok())
            .filter(|name| valid_name(name))
            .collect();
        names.sort();
        let mut pipelines = Vec::new();
        for name in names {
            match self.get(&name) {
                Ok(p) => pipelines.push(p),
                Err(Error::NotFound(_)) => {}
                Err(e) => tracing::warn!(pipeline = %name, error = %e, "skipping pipeline"),
            }
        }
        Ok(pipelines)
    }

    /// Loads one pipeline. The caller has validated `name`.
    pub fn get(&self, name: &str) -> Result<Pipeline, Error> {
        let dir = self.dir.join(name);
        let has_main = dir.join("main.py").is_file();
        let manifest_path = dir.join(MANIFEST);
        let manifest = if manifest_path.is_file() {
            let text = std::fs::read_to_string(&manifest_path)
                .map_err(|source| Error::Io { name: name.to_owned(), source })?;
            toml::from_str::<Manifest>(&text)
                .map_err(|e| Error::Invalid { name: name.to_owned(), message: format!("{MANIFEST}: {e}") })?
        } else if has_main {
            Manifest::default()
        } else {
            return Err(Error::NotFound(name.to_owned()));
        };
        self.build(name, dir, has_main, manifest)
    }

    fn build(&self, name: &str, dir: PathBuf, has_main: bool, m: Manifest) -> Result<Pipeline, Error> {
        let invalid = |message: String| Error::Invalid { name: name.to_owned(), message };
        let has_requirements = dir.join("requirements.txt").is_file();
        let (command, is_python) = match m.command {
            Some(cmd) if cmd.is_empty() || cmd[0].is_empty() => {
                return Err(invalid("`command` must name a program".into()));
            }
            Some(cmd) => (cmd, false),
            None if has_main => (python_command(has_requirements), true),
            None => return Err(invalid("needs a main.py or a `command` in pipeline.toml".into())),
        };
        if let Some(image) = &m.image
            && image.trim().is_empty()
        {
            return Err(invalid("`image` must not be empty".into()));
        }
        if m.timeout_seconds == Some(0) {
            return Err(invalid("`timeout_seconds` must be at least 1".into()));
        }
        m.resources.check().map_err(invalid)?;
        if let Some(pool) = &m.runner_pool
            && !shared::subjects::valid_pool(pool)
        {
            return Err(invalid("`runner_pool` must be 1-64 letters, digits, `_` or `-`".into()));
        }
        if m.retries.is_some_and(|r| r > 100) {
            return Err(invalid("`retries` must be at most 100".into()));
        }
        if m.retry_on.as_ref().is_some_and(|on| on.contains(&FailureReason::Cancelled)) {
            return Err(invalid("`retry_on` cannot contain `cancelled`: a cancelled run is never retried".into()));
        }
        if m.max_concurrent == Some(0) {
            return Err(invalid("`max_concurrent` must be at least 1".into()));
        }
        for key in m.env.keys() {
            if let Err(message) = check_env_name(key) {
                return Err(invalid(format!("env `{key}`: {message}")));
            }
        }
        Ok(Pipeline {
            name: name.to_owned(),
            description: m.description,
            image: m.image.unwrap_or_else(|| self.worker_image.clone()),
            command,
            has_requirements,
            timeout_seconds: m.timeout_seconds,
            resources: m.resources,
            max_concurrent: m.max_concurrent,
            runner_pool: m.runner_pool.unwrap_or_else(|| shared::subjects::DEFAULT_POOL.to_owned()),
            retries: m.retries,
            retry_on: m.retry_on,
            network: m.network.unwrap_or_default(),
            env: m.env,
            is_python,
            dir,
        })
    }
}

fn python_command(has_requirements: bool) -> Vec<String> {
    let mut cmd = vec!["uv", "run", "--no-project"];
    if has_requirements {
        cmd.extend(["--with-requirements", "/app/requirements.txt"]);
    }
    cmd.push("/app/main.py");
    cmd.into_iter().map(String::from).collect()
}

/// Environment variable names a job may set. Names that change how the
/// container's programs load or reach infrastructure are refused: the loader's and
/// the shells' start-up hooks (`LD_*`, `BASH_ENV`, `ENV`, exported bash functions), the
/// Python interpreter's (`PYTHONPATH`, `PYTHONSTARTUP`, … every `PYTHON*` but a few
/// that only shape output) and uv's (every `UV_*` but the package-index settings a job
/// may need), and the names Fast-Flow sets itself.
pub fn check_env_name(name: &str) -> Result<(), &'static str> {
    let mut bytes = name.bytes();
    let well_formed = matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && name.len() <= 128;
    if !well_formed {
        return Err("must match [A-Za-z_][A-Za-z0-9_]* (at most 128 characters)");
    }
    if is_reserved_env_name(&name.to_ascii_uppercase()) {
        return Err(RESERVED_ENV_NAMES);
    }
    Ok(())
}

/// How the refusal reads (README "Environment" lists the same).
const RESERVED_ENV_NAMES: &str = "is reserved (PATH, HOME, HOSTNAME, FASTFLOW_RUN_ID, FASTFLOW_ATTEMPT, ENV, BASH_ENV, SHELLOPTS, BASHOPTS, \
     BASH_FUNC_*, LD_*, DOCKER_*, NATS_*, PYTHON* but PYTHONUNBUFFERED, PYTHONIOENCODING, PYTHONUTF8, \
     PYTHONDONTWRITEBYTECODE, PYTHONHASHSEED, PYTHONFAULTHANDLER, PYTHONWARNINGS, and UV_* but \
     UV_INDEX*, UV_DEFAULT_INDEX, UV_EXTRA_INDEX_URL, UV_HTTP_TIMEOUT, UV_NATIVE_TLS)";

fn is_reserved_env_name(upper: &str) -> bool {
    const EXACT: [&str; 9] =
        ["PATH", "HOME", "HOSTNAME", "ENV", "BASH_ENV", "SHELLOPTS", "BASHOPTS", "FASTFLOW_RUN_ID", "FASTFLOW_ATTEMPT"];
    const PREFIXES: [&str; 4] = ["LD_", "DOCKER_", "NATS_", "BASH_FUNC_"];
    // Interpreter settings that change only how output looks, never what code runs.
    const PYTHON_ALLOWED: [&str; 7] = [
        "PYTHONUNBUFFERED",
        "PYTHONIOENCODING",
        "PYTHONUTF8",
        "PYTHONDONTWRITEBYTECODE",
        "PYTHONHASHSEED",
        "PYTHONFAULTHANDLER",
        "PYTHONWARNINGS",
    ];
    // Where packages come from (a private index), not how uv runs the job or where
    // its cache is.
    const UV_ALLOWED: [&str; 4] = ["UV_DEFAULT_INDEX", "UV_EXTRA_INDEX_URL", "UV_HTTP_TIMEOUT", "UV_NATIVE_TLS"];
    if EXACT.contains(&upper) || PREFIXES.iter().any(|p| upper.starts_with(p)) {
        return true;
    }
    if upper.starts_with("PYTHON") {
        return !PYTHON_ALLOWED.contains(&upper);
    }
    if upper.starts_with("UV_") {
        return !(upper.starts_with("UV_INDEX") || UV_ALLOWED.contains(&upper));
    }
    false
}

/// A pipeline folder packed as a deterministic tar, named by its sha256.
pub struct Bundle {
    pub reference: CodeBundleRef,
    pub data: Vec<u8>,
}

/// Packs the folder: regular files only, sorted, with fixed owners and times,
/// so the same content always yields the same digest.
pub fn bundle(pipeline: &Pipeline) -> Result<Bundle, Error> {
    let io = |source| Error::Io { name: pipeline.name.clone(), source };
    let mut files = Vec::new();
    collect_files(&pipeline.dir, Path::new(""), &mut files).map_err(io)?;
    files.sort();
    let mut builder = tar::Builder::new(Vec::new());
    let mut total = 0u64;
    for rel in files {
        let full = pipeline.dir.join(&rel);
        let meta = std::fs::metadata(&full).map_err(io)?;
        total += meta.len();
        if total > MAX_BUNDLE_BYTES {
            return Err(Error::Invalid {
                name: pipeline.name.clone(),
                message: format!("folder is larger than {} MiB", MAX_BUNDLE_BYTES >> 20),
            });
        }
        let mut header = tar::Header::new_gnu();
        header.set_size(meta.len());
        header.set_mode(if is_executable(&meta) { 0o755 } else { 0o644 });
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        let file = std::fs::File::open(&full).map_err(io)?;
        builder.append_data(&mut header, &rel, file).map_err(io)?;
    }
    let data = builder.into_inner().map_err(io)?;
    let digest = hex::encode(Sha256::digest(&data));
    Ok(Bundle { reference: CodeBundleRef { digest, size: data.len() as u64 }, data })
}

fn collect_files(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(root.join(rel))? {
        let entry = entry?;
        let name = entry.file_name();
        if IGNORED.iter().any(|i| name == *i) || name.to_string_lossy().ends_with(".pyc") {
            continue;
        }
        let kind = entry.file_type()?;
        let path = rel.join(&name);
        if kind.is_dir() {
            collect_files(root, &path, out)?;
        } else if kind.is_file() {
            out.push(path);
        }
    }
    Ok(())
}

#[cfg(unix)]
fn is_executable(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o111 != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog(dir: &Path) -> Catalog {
        Catalog::new(dir.to_path_buf(), "worker:1".into())
    }

    fn write(dir: &Path, rel: &str, text: &str) {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(path, text).expect("write");
    }

    fn tmp() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ff-pipelines-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        dir
    }

    #[test]
    fn names_follow_the_documented_pattern() {
        assert!(valid_name("hello") && valid_name("a_b-C9") && valid_name(&"a".repeat(64)));
        assert!(!valid_name("") && !valid_name("-x") && !valid_name("bad.name") && !valid_name(&"a".repeat(65)));
    }

    #[test]
    fn discovers_python_and_manifest_pipelines() {
        let dir = tmp();
        write(&dir, "py/main.py", "print(1)");
        write(&dir, "py/requirements.txt", "six");
        write(
            &dir,
            "sh/pipeline.toml",
            "image = \"busybox\"\ncommand = [\"sh\", \"-c\", \"true\"]\ntimeout_seconds = 5\n",
        );
        write(&dir, "broken/pipeline.toml", "imag = \"typo\"");
        write(&dir, "empty/readme.txt", "not a pipeline");
        let list = catalog(&dir).list().expect("list");
        let names: Vec<_> = list.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["py", "sh"]);
        assert_eq!(list[0].image, "worker:1");
        assert!(list[0].has_requirements && list[0].is_python);
        assert!(list[0].command.contains(&"--with-requirements".to_string()));
        assert_eq!(list[1].command, ["sh", "-c", "true"]);
        assert_eq!(list[1].timeout_seconds, Some(5));
        let err = catalog(&dir).get("broken").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("unknown field") && err.contains("imag"), "{err}");
        assert!(matches!(catalog(&dir).get("empty"), Err(Error::NotFound(_))));
        assert!(matches!(catalog(&dir).get("nope"), Err(Error::NotFound(_))));
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn bundles_are_deterministic_and_skip_caches() {
        let dir = tmp();
        write(&dir, "p/main.py", "print(1)");
        write(&dir, "p/lib/util.py", "x = 1");
        let p = catalog(&dir).get("p").expect("pipeline");
        let a = bundle(&p).expect("bundle");
        write(&dir, "p/__pycache__/main.cpython-311.pyc", "junk");
        let b = bundle(&p).expect("bundle");
        assert_eq!(a.reference, b.reference);
        write(&dir, "p/lib/util.py", "x = 2");
        let c = bundle(&p).expect("bundle");
        assert_ne!(a.reference.digest, c.reference.digest);
        let mut archive = tar::Archive::new(c.data.as_slice());
        let paths: Vec<String> = archive
            .entries()
            .expect("entries")
            .filter_map(|e| e.ok()?.path().ok().map(|p| p.display().to_string()))
            .collect();
        assert_eq!(paths, ["lib/util.py", "main.py"]);
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn resources_override_defaults_and_bad_values_are_named() {
        let dir = tmp();
        write(&dir, "r/pipeline.toml", "command = [\"true\"]\n[resources]\nmemory_mb = 64\ncpus = 0.5\n");
        write(&dir, "bad/pipeline.toml", "command = [\"true\"]\n[resources]\npids = 1\n");
        let p = catalog(&dir).get("r").expect("pipeline");
        let defaults = Resources { memory_mb: Some(2048), cpu_millis: Some(2000), pids: Some(1024) };
        assert_eq!(
            p.resources.over(defaults),
            Resources { memory_mb: Some(64), cpu_millis: Some(500), pids: Some(1024) }
        );
        let err = catalog(&dir).get("bad").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("resources.pids"), "{err}");
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn the_network_policy_defaults_to_isolated_and_bad_values_are_named() {
        let dir = tmp();
        write(&dir, "plain/pipeline.toml", "command = [\"true\"]\n");
        write(&dir, "open/pipeline.toml", "command = [\"true\"]\nnetwork = \"host-bridge\"\n");
        write(&dir, "offline/pipeline.toml", "command = [\"true\"]\nnetwork = \"none\"\n");
        write(&dir, "bad/pipeline.toml", "command = [\"true\"]\nnetwork = \"host\"\n");
        let network = |name: &str| catalog(&dir).get(name).map(|p| p.network).map_err(|e| e.to_string());
        assert_eq!(network("plain"), Ok(NetworkPolicy::Isolated));
        assert_eq!(network("open"), Ok(NetworkPolicy::HostBridge));
        assert_eq!(network("offline"), Ok(NetworkPolicy::None));
        let err = network("bad").err().unwrap_or_default();
        assert!(err.contains("network") && err.contains("host-bridge"), "{err}");
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn reserved_env_names_are_refused() {
        assert!(check_env_name("GREETING").is_ok() && check_env_name("_x1").is_ok());
        for bad in ["PATH", "LD_PRELOAD", "docker_host", "NATS_URL", "1X", "A-B", ""] {
            assert!(check_env_name(bad).is_err(), "{bad}");
        }
        // Start-up hooks of the shells, Python and uv.
        for hook in [
            "BASH_ENV",
            "ENV",
            "SHELLOPTS",
            "BASH_FUNC_echo%%",
            "BASH_FUNC_x",
            "PYTHONPATH",
            "PYTHONSTARTUP",
            "PythonHome",
            "PYTHONINSPECT",
            "PYTHONUSERBASE",
            "UV_CACHE_DIR",
            "UV_PROJECT",
            "UV_PYTHON",
            "uv_no_cache",
        ] {
            assert!(check_env_name(hook).is_err(), "{hook}");
        }
        for harmless in [
            "PYTHONUNBUFFERED",
            "PYTHONIOENCODING",
            "UV_INDEX_URL",
            "UV_INDEX_PRIVATE_PASSWORD",
            "UV_EXTRA_INDEX_URL",
            "ENVIRONMENT",
            "PY",
        ] {
            assert!(check_env_name(harmless).is_ok(), "{harmless}");
        }
    }
}
