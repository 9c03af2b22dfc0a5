//! One private Fast-Flow deployment for the benchmark, in one of two configurations:
//!
//! * **distributed**: its own nats-server, Postgres database, S3 bucket and pipelines
//!   folder, one `control-plane` and one `runner-agent` process;
//! * **single-node**: one `control-plane` process without DATABASE_URL/NATS_URL/S3_*
//!   (SQLite in its DATA_DIR, archived logs as files in its LOGS_DIR, in-process bus and the
//!   embedded runner, configured by the RUNNER_* variables).
//!
//! The distributed configuration is secured as production is: its nats-server requires
//! TLS and authenticates every client but the control plane through the control plane's
//! auth callout (see `nats`). After the control plane is up, the harness creates one
//! reusable runner registration token through the API (as an admin would); every
//! `runner-agent` it starts enrolls with it (NATS_URL without credentials, NATS_TLS_CA,
//! RUNNER_REGISTRATION_TOKEN) into a fresh RUNNER_DATA_DIR, and so does the harness
//! itself when it plays a runner ([`Deployment::enroll_harness_runner`]).
//!
//! Everything is on 127.0.0.1 and under `/tmp/fastflow-bench/<id>`, so it never disturbs
//! tests running on the same machine.
//!
//! Before its first control plane starts, a deployment creates an admin (`bench`) and an
//! API token for it with the product's CLI (`control-plane user create` / `token create`,
//! with the environment the control plane gets, so on the same store): every request of
//! the harness carries that token, as a script's would.

mod dev_env;
mod nats;
mod postgres;
mod process;
pub mod s3;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use shared::nats_settings::NatsSettings;
use shared::subjects::Subjects;

pub use dev_env::DevEnv;
use nats::BenchNats;
pub use postgres::BenchDatabase;
use process::{ChildProcess, free_port};

use crate::api::Api;
use crate::digest::{Digest, DigestBuilder};

/// Variables of the harness's environment that a runner must not need (env.sh holds the
/// shared dev services' settings, the control plane's NATS credentials and callout key
/// among them). NATS_URL and NATS_TLS_CA are set to the deployment's own.
const RUNNER_MUST_NOT_SEE: &[&str] = &[
    "NATS_AUTH_CALLOUT_SEED",
    "NATS_AUTH_CALLOUT_SEED_FILE",
    "NATS_AUTH_CALLOUT_ACCOUNT",
    "DATABASE_URL",
    "FASTFLOW_PG_ADMIN_URL",
    "S3_ENDPOINT",
    "S3_BUCKET",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
];
/// Variables that would turn a single node into (part of) a distributed deployment
/// (every `NATS_*`, `S3_*` and `AWS_*` variable is removed too).
const SINGLE_NODE_MUST_NOT_SEE: &[&str] = &["DATABASE_URL", "FASTFLOW_PG_ADMIN_URL"];
/// Settings of the runner (or the single node's embedded runner) that only the harness sets.
const RUNNER_SETTINGS: &[&str] = &[
    "RUNNER_ID",
    "RUNNER_POOL",
    "RUNNER_CONCURRENCY",
    "RUNNER_DATA_DIR",
    "RUNNER_REGISTRATION_TOKEN",
    "RUNNER_BENCH_NOOP_EXECUTOR",
];
/// NATS settings of the harness's environment that would change how a process of the
/// deployment talks to the deployment's own nats-server: only the harness sets them
/// (none but NATS_URL and NATS_TLS_CA, and the control plane's callout seed).
const NATS_SETTINGS: &[&str] = &[
    "NATS_URL",
    "NATS_TLS_CA",
    "NATS_TLS_CERT",
    "NATS_TLS_KEY",
    "NATS_ALLOW_PLAINTEXT",
    "NATS_SUBJECT_PREFIX",
    "NATS_AUTH_CALLOUT_SEED",
    "NATS_AUTH_CALLOUT_SEED_FILE",
    "NATS_AUTH_CALLOUT_ACCOUNT",
];
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(60);
/// The harness's user and the name of its API token.
const BENCH_USER: &str = "bench";
const BENCH_TOKEN_NAME: &str = "bench";
/// SIGTERM → SIGKILL grace when the harness stops the single node.
const STOP_GRACE: Duration = Duration::from_secs(15);

/// The two configurations of issue 5.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Distributed,
    SingleNode,
}

impl Mode {
    pub const ALL: [Mode; 2] = [Mode::Distributed, Mode::SingleNode];

    /// The `Config` column of the report and the `--configs` name.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Distributed => crate::report::DISTRIBUTED,
            Mode::SingleNode => crate::report::SINGLE_NODE,
        }
    }

    pub fn parse(name: &str) -> Option<Mode> {
        Mode::ALL.into_iter().find(|m| m.name() == name)
    }
}

/// What the runner is started with.
#[derive(Debug, Clone, Copy)]
pub struct RunnerSettings {
    pub concurrency: usize,
    /// `RUNNER_BENCH_NOOP_EXECUTOR=1`: claimed runs are not executed (dispatch scenario).
    /// Only binaries built with the `bench-noop` feature accept it (`scripts/bench.sh`
    /// builds them so); others refuse to start.
    pub noop: bool,
}

/// The distributed configuration's own services.
pub struct Services {
    pub bucket: String,
    pub db: BenchDatabase,
    nats: BenchNats,
}

/// The harness enrolled as a runner and connected as it (see
/// [`Deployment::enroll_harness_runner`]).
pub struct HarnessRunner {
    /// Authenticated as `runner_id`, replies under its own inbox.
    pub client: async_nats::Client,
    pub runner_id: String,
    pub pool: String,
    pub subjects: Subjects,
}

pub struct Deployment {
    pub mode: Mode,
    pub dev: DevEnv,
    pub dir: PathBuf,
    pub api: Api,
    /// `Some` in the distributed configuration.
    pub services: Option<Services>,
    id: String,
    control_plane: Option<ChildProcess>,
    /// The `runner-agent` process (distributed only).
    runner: Option<ChildProcess>,
    /// How many runners (or single-node processes) were started: each got its own RUNNER_ID.
    runner_count: usize,
    /// RUNNER_ID of the current runner (the embedded one in single-node mode).
    pub runner_id: String,
    /// The API token every request sends (made with the CLI before the first start).
    token: String,
    /// The reusable runner registration token (distributed only; made through the API).
    registration_token: String,
}

impl Deployment {
    pub async fn start(dev: DevEnv, mode: Mode, runner_concurrency: usize) -> anyhow::Result<Self> {
        let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
        let dir = std::env::temp_dir().join("fastflow-bench").join(&id);
        std::fs::create_dir_all(dir.join("logs")).with_context(|| format!("cannot create {}", dir.display()))?;
        copy_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines"), &dir.join("pipelines"))?;
        let api = Api::new("http://127.0.0.1:0".into(), None)?;
        let mut deployment = Self {
            mode,
            dev,
            dir,
            api,
            services: None,
            id,
            control_plane: None,
            runner: None,
            runner_count: 0,
            runner_id: String::new(),
            token: String::new(),
            registration_token: String::new(),
        };
        let settings = RunnerSettings { concurrency: runner_concurrency, noop: false };
        match mode {
            Mode::Distributed => {
                let nats = BenchNats::start(&deployment.dev, &deployment.dir).await?;
                let db =
                    BenchDatabase::create(&deployment.dev.pg_admin_url, &deployment.dev.database_url, &deployment.id)
                        .await?;
                let bucket = format!("bench-{}", deployment.id);
                deployment.services = Some(Services { bucket, db, nats });
                deployment.create_credentials().await?;
                deployment.start_control_plane(None)?;
                deployment.wait_control_plane().await?;
                // As an admin enrolls runners: one reusable token for every runner of the run.
                deployment.registration_token = deployment
                    .api
                    .create_registration_token(&serde_json::json!({ "single_use": false }))
                    .await
                    .context("creating the runners' registration token")?;
                deployment.restart_runner_with(settings).await?;
            }
            Mode::SingleNode => {
                deployment.create_credentials().await?;
                deployment.restart_runner_with(settings).await?;
            }
        }
        Ok(deployment)
    }

    /// Creates the harness's admin (a random password, from a file only its owner can
    /// read) and its API token with the CLI, on the store the control plane will use.
    async fn create_credentials(&mut self) -> anyhow::Result<()> {
        let password_file = self.dir.join("admin-password");
        write_private(&password_file, &format!("pw-{}", uuid::Uuid::new_v4().simple()))?;
        let password_file = password_file.display().to_string();
        self.cli(&["user", "create", BENCH_USER, "--role", "admin", "--password-file", &password_file]).await?;
        let stdout = self.cli(&["token", "create", "--user", BENCH_USER, "--name", BENCH_TOKEN_NAME]).await?;
        let token = stdout.trim();
        if !token.starts_with("ff_") || token.contains(char::is_whitespace) {
            bail!("`control-plane token create` printed no token ({} bytes on stdout)", stdout.len());
        }
        self.token = token.to_string();
        Ok(())
    }

    /// `control-plane <args>` with the control plane's store settings; its stdout.
    async fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut command = Command::new(self.dev.binary("control-plane")?);
        self.store_env(&mut command)?;
        command.args(args).env("NO_COLOR", "1").stdin(std::process::Stdio::null());
        let what = format!("control-plane {}", args.join(" "));
        let output =
            tokio::process::Command::from(command).output().await.with_context(|| format!("cannot run {what}"))?;
        if !output.status.success() {
            bail!("{what} failed ({}): {}", output.status, String::from_utf8_lossy(&output.stderr).trim());
        }
        String::from_utf8(output.stdout).with_context(|| format!("{what}: stdout is not UTF-8"))
    }

    pub fn control_plane_pid(&self) -> Option<u32> {
        self.control_plane.as_ref().and_then(ChildProcess::pid)
    }

    /// The `runner-agent` process; `None` in single-node mode (the runner is in the node).
    pub fn runner_pid(&self) -> Option<u32> {
        self.runner.as_ref().and_then(ChildProcess::pid)
    }

    /// What the report calls the process that serves the API.
    pub fn server_label(&self) -> &'static str {
        match self.mode {
            Mode::Distributed => "control plane",
            Mode::SingleNode => "node",
        }
    }

    /// The single node's SQLite file.
    pub fn sqlite_path(&self) -> PathBuf {
        self.dir.join("node-data/fastflow.db")
    }

    pub async fn restart_runner(&mut self, concurrency: usize) -> anyhow::Result<()> {
        self.restart_runner_with(RunnerSettings { concurrency, noop: false }).await
    }

    /// Distributed: stops the current runner (if any) and starts a fresh one, which
    /// enrolls with the registration token into its own new RUNNER_DATA_DIR (a runner
    /// refuses a RUNNER_ID other than the one its data dir is enrolled as). Single node:
    /// restarts the node (same DATA_DIR and LOGS_DIR), whose embedded runner takes the
    /// settings. Either way the runner gets a new RUNNER_ID and is registered on return.
    pub async fn restart_runner_with(&mut self, settings: RunnerSettings) -> anyhow::Result<()> {
        let n = self.runner_count;
        self.runner_count += 1;
        let runner_id = format!("bench-{}-{n}", self.id);
        match self.mode {
            Mode::Distributed => {
                self.stop_runner();
                let nats = &self.services.as_ref().context("a distributed deployment without its services")?.nats;
                let data_dir = self.fresh_data_dir(&format!("runner-{n}"))?;
                let mut command = Command::new(self.dev.binary("runner-agent")?);
                for name in RUNNER_MUST_NOT_SEE.iter().chain(RUNNER_SETTINGS).chain(NATS_SETTINGS) {
                    command.env_remove(name);
                }
                command
                    .env("NATS_URL", nats.client_url())
                    .env("NATS_TLS_CA", &nats.tls_ca)
                    .env("RUNNER_REGISTRATION_TOKEN", &self.registration_token)
                    .env("RUNNER_ID", &runner_id)
                    .env("RUNNER_CONCURRENCY", settings.concurrency.to_string())
                    .env("RUNNER_DATA_DIR", &data_dir)
                    .env("RUST_LOG", rust_log())
                    .env("NO_COLOR", "1");
                if settings.noop {
                    command.env("RUNNER_BENCH_NOOP_EXECUTOR", "1");
                }
                let log = self.dir.join(format!("logs/runner-{n}.log"));
                self.runner = Some(ChildProcess::spawn(&format!("runner {runner_id}"), command, &log)?);
            }
            Mode::SingleNode => {
                self.stop_node().await;
                self.start_control_plane(Some((&runner_id, settings)))?;
                self.wait_control_plane().await?;
            }
        }
        self.runner_id = runner_id;
        self.wait_runner_registered().await
    }

    /// A new, empty runner data dir `<deployment>/<name>` (an enrolled runner's
    /// credentials file is never reused by another RUNNER_ID).
    fn fresh_data_dir(&self, name: &str) -> anyhow::Result<PathBuf> {
        let data_dir = self.dir.join(name);
        if data_dir.exists() {
            std::fs::remove_dir_all(&data_dir).with_context(|| format!("cannot empty {}", data_dir.display()))?;
        }
        std::fs::create_dir_all(&data_dir).with_context(|| format!("cannot create {}", data_dir.display()))?;
        Ok(data_dir)
    }

    /// Distributed: the harness enrolls as a new runner of the default pool with the
    /// registration token, as `runner-agent` does at its first start (the
    /// `runner_agent::enrollment` code, into a fresh data dir), and connects to NATS as
    /// that runner. It may then do what the NATS server lets a runner do: read its pool's
    /// offers and send requests on its own subjects (`ff.r.<runner_id>.<op>`).
    pub async fn enroll_harness_runner(&mut self) -> anyhow::Result<HarnessRunner> {
        let nats = &self.services.as_ref().context("the harness plays a runner only in distributed mode")?.nats;
        let (url, tls_ca) = (nats.client_url(), nats.tls_ca.clone());
        let n = self.runner_count;
        self.runner_count += 1;
        let runner_id = format!("bench-{}-h{n}", self.id);
        let data_dir = self.fresh_data_dir(&format!("harness-runner-{n}"))?;
        let settings = NatsSettings {
            tls_ca: Some(tls_ca),
            tls_client: None,
            allow_plaintext: false,
            subjects: Subjects::new(None),
        };
        let wanted = runner_agent::enrollment::Wanted {
            data_dir: &data_dir,
            registration_token: Some(&self.registration_token),
            runner_id: &runner_id,
            runner_id_from_env: true,
            pool: None,
        };
        let creds = runner_agent::enrollment::load_or_enroll(&url, &settings, &wanted)
            .await
            .with_context(|| format!("enrolling the harness as runner {runner_id}"))?;
        let client = runner_agent::link::nats::connect_options(&settings, &creds.runner_id)
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .user_and_password(creds.runner_id.clone(), creds.secret.clone())
            .name(format!("fastflow-bench-{}", creds.runner_id))
            .connection_timeout(Duration::from_secs(10))
            .connect(&url)
            .await
            .with_context(|| format!("connecting to the bench NATS as runner {}", creds.runner_id))?;
        Ok(HarnessRunner { client, runner_id: creds.runner_id, pool: creds.pool, subjects: settings.subjects })
    }

    /// Kills the `runner-agent` (distributed only; the single node's runner cannot be
    /// stopped on its own).
    pub fn stop_runner(&mut self) {
        if let Some(mut runner) = self.runner.take() {
            runner.kill();
        }
    }

    /// Single node: SIGTERM, then SIGKILL after a grace period. Distributed: kills the
    /// control plane. Start it again with [`Deployment::restart_runner_with`] (single node).
    pub async fn stop_node(&mut self) {
        if let Some(mut node) = self.control_plane.take() {
            node.terminate(STOP_GRACE).await;
        }
    }

    /// Length and SHA-256 of an attempt's archived log: the S3 object (distributed) or the
    /// file under LOGS_DIR (single node).
    pub async fn archive_digest(&self, run_id: &str, attempt: u32) -> anyhow::Result<Digest> {
        let key = format!("runs/{run_id}/{attempt}.log");
        match &self.services {
            Some(services) => s3::digest(&s3::client(&self.dev), &services.bucket, &key).await,
            None => file_digest(&self.dir.join("node-logs").join(&key)).await,
        }
    }

    /// Fails when a product process died during a scenario.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        match self.control_plane.as_mut() {
            None => bail!("the {} is not running", self.server_label()),
            Some(cp) => {
                if let Some(status) = cp.exited() {
                    bail!("{} exited ({status}); see {}/logs", cp.name, self.dir.display());
                }
            }
        }
        if let Some(runner) = self.runner.as_mut()
            && let Some(status) = runner.exited()
        {
            bail!("{} exited ({status}); see {}/logs", runner.name, self.dir.display());
        }
        Ok(())
    }

    /// Starts the control plane on a fresh port: distributed (`runner == None`) with the
    /// bench services, or as a single node with an embedded runner.
    fn start_control_plane(&mut self, runner: Option<(&str, RunnerSettings)>) -> anyhow::Result<()> {
        let port = free_port()?;
        let mut command = Command::new(self.dev.binary("control-plane")?);
        for name in RUNNER_SETTINGS.iter().chain(NATS_SETTINGS) {
            command.env_remove(name);
        }
        command
            .env("BIND_ADDR", format!("127.0.0.1:{port}"))
            .env("PIPELINES_DIR", self.dir.join("pipelines"))
            // The benchmark measures capacity: no global cap on runs executing at once.
            .env("MAX_CONCURRENT_RUNS", "0")
            // Measure what the log path can carry, not the default per-client SSE throttle
            // (100 lines/s), which would make the 10,000 lines/s scenario meaningless.
            .env("LOG_STREAM_RATE_LIMIT", "0")
            // The log-throughput scenario prints a GiB; the fan-out opens 200 streams with
            // the harness's one token.
            .env("LOG_MAX_SIZE_MB", "0")
            .env("SSE_MAX_STREAMS_PER_USER", "0")
            .env("RUST_LOG", rust_log())
            .env("NO_COLOR", "1");
        self.store_env(&mut command)?;
        let name = match (&self.services, runner) {
            (Some(_), _) => "control-plane".to_string(),
            (None, Some((runner_id, settings))) => {
                command.env("RUNNER_ID", runner_id).env("RUNNER_CONCURRENCY", settings.concurrency.to_string());
                if settings.noop {
                    command.env("RUNNER_BENCH_NOOP_EXECUTOR", "1");
                }
                format!("single node ({runner_id})")
            }
            (None, None) => bail!("a single node needs its runner settings"),
        };
        let log = self.dir.join(format!("logs/control-plane-{}.log", self.runner_count));
        self.control_plane = Some(ChildProcess::spawn(&name, command, &log)?);
        self.api = Api::new(format!("http://127.0.0.1:{port}"), Some(&self.token))?;
        Ok(())
    }

    /// Where the control plane (and the CLI) keeps its state: the bench services
    /// (distributed; NATS with the control plane's user and password, the CA of the
    /// server's certificate and the auth-callout key), or `DATA_DIR`/`LOGS_DIR` in the
    /// bench dir with every service variable removed (single node).
    fn store_env(&self, command: &mut Command) -> anyhow::Result<()> {
        match &self.services {
            Some(services) => {
                for name in NATS_SETTINGS {
                    command.env_remove(name);
                }
                command
                    .env("DATABASE_URL", &services.db.url)
                    .env("NATS_URL", services.nats.control_plane_url())
                    .env("NATS_TLS_CA", &services.nats.tls_ca)
                    .env("NATS_AUTH_CALLOUT_SEED", services.nats.callout_seed())
                    .env("S3_ENDPOINT", &self.dev.s3_endpoint)
                    .env("S3_BUCKET", &services.bucket)
                    .env("S3_REGION", &self.dev.s3_region)
                    .env("AWS_ACCESS_KEY_ID", &self.dev.aws_access_key_id)
                    .env("AWS_SECRET_ACCESS_KEY", &self.dev.aws_secret_access_key);
            }
            None => {
                for name in SINGLE_NODE_MUST_NOT_SEE {
                    command.env_remove(name);
                }
                for (name, _) in std::env::vars_os() {
                    let name = name.to_string_lossy();
                    if name.starts_with("S3_") || name.starts_with("AWS_") || name.starts_with("NATS_") {
                        command.env_remove(name.as_ref());
                    }
                }
                let data_dir = self.dir.join("node-data");
                let logs_dir = self.dir.join("node-logs");
                for dir in [&data_dir, &logs_dir] {
                    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
                }
                command.env("DATA_DIR", &data_dir).env("LOGS_DIR", &logs_dir);
            }
        }
        Ok(())
    }

    async fn wait_control_plane(&mut self) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            self.check_alive()?;
            if self.api.health_ok().await {
                return Ok(());
            }
            if started.elapsed() > START_TIMEOUT {
                bail!("{} not healthy after {START_TIMEOUT:?}; see {}/logs", self.server_label(), self.dir.display());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_runner_registered(&mut self) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            self.check_alive()?;
            if self.api.runner_ids().await.unwrap_or_default().contains(&self.runner_id) {
                return Ok(());
            }
            if started.elapsed() > START_TIMEOUT {
                bail!("runner {} did not register within {START_TIMEOUT:?}", self.runner_id);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops every process, removes leftover containers, the database, the bucket and
    /// (unless `keep`) the temp dir.
    pub async fn shutdown(mut self, keep: bool) {
        let runner_prefix = format!("bench-{}-", self.id);
        self.stop_runner();
        if let Some(mut cp) = self.control_plane.take() {
            cp.kill();
        }
        if let Some(services) = self.services.as_mut() {
            services.nats.kill();
        }
        if let Ok(docker) = runner_agent::docker::Docker::connect().await {
            for n in 0..self.runner_count {
                let runner = format!("{runner_prefix}{n}");
                for id in docker.containers_with_label("fastflow-runner-id", &runner).await.unwrap_or_default() {
                    let _ = docker.remove(&id).await;
                }
            }
        }
        if let Some(services) = &self.services {
            if let Err(e) = services.db.drop_database().await {
                eprintln!("warning: could not drop database {}: {e:#}", services.db.name);
            }
            if let Err(e) = s3::delete_bucket(&s3::client(&self.dev), &services.bucket).await {
                eprintln!("warning: could not delete bucket {}: {e:#}", services.bucket);
            }
        }
        if keep {
            eprintln!("deployment files kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Length and SHA-256 of a file, streamed.
async fn file_digest(path: &Path) -> anyhow::Result<Digest> {
    use tokio::io::AsyncReadExt;
    let mut file = tokio::fs::File::open(path).await.with_context(|| format!("cannot open {}", path.display()))?;
    let mut digest = DigestBuilder::default();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).await.with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            return Ok(digest.finish());
        }
        digest.update(&buf[..n]);
    }
}

/// Writes `content` to a new file only its owner can read.
pub(crate) fn write_private(path: &Path, content: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(content.as_bytes()).with_context(|| format!("cannot write {}", path.display()))
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("cannot create {}", to.display()))?;
    for entry in std::fs::read_dir(from).with_context(|| format!("cannot read {}", from.display()))? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)
                .with_context(|| format!("cannot copy {} to {}", entry.path().display(), target.display()))?;
        }
    }
    Ok(())
}

/// The product's log filter: quiet unless `FASTFLOW_BENCH_RUST_LOG` says otherwise.
fn rust_log() -> String {
    std::env::var("FASTFLOW_BENCH_RUST_LOG").unwrap_or_else(|_| "warn".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_names_round_trip() {
        for mode in Mode::ALL {
            assert_eq!(Mode::parse(mode.name()), Some(mode));
        }
        assert_eq!(Mode::parse("cluster"), None);
    }
}
