//! One private Fast-Flow deployment for the benchmark: its own nats-server, Postgres
//! database, S3 bucket and pipelines folder, one control plane and one runner, all on
//! 127.0.0.1, so it never disturbs tests running on the same machine.

mod dev_env;
mod postgres;
mod process;
pub mod s3;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

pub use dev_env::DevEnv;
pub use postgres::BenchDatabase;
use process::{ChildProcess, free_port};

use crate::api::Api;

/// Variables of the harness's environment that a runner must not need.
const RUNNER_MUST_NOT_SEE: &[&str] = &[
    "DATABASE_URL",
    "FASTFLOW_PG_ADMIN_URL",
    "S3_ENDPOINT",
    "S3_BUCKET",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
];
const START_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Deployment {
    pub dev: DevEnv,
    pub dir: PathBuf,
    pub bucket: String,
    pub db: BenchDatabase,
    pub api: Api,
    pub nats_url: String,
    id: String,
    nats: ChildProcess,
    control_plane: ChildProcess,
    runner: Option<ChildProcess>,
    runner_count: usize,
    /// RUNNER_ID of the current runner.
    pub runner_id: String,
}

impl Deployment {
    pub async fn start(dev: DevEnv, runner_concurrency: usize) -> anyhow::Result<Self> {
        let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
        let dir = std::env::temp_dir().join("fastflow-bench").join(&id);
        std::fs::create_dir_all(dir.join("logs")).with_context(|| format!("cannot create {}", dir.display()))?;
        let pipelines_dir = dir.join("pipelines");
        copy_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines"), &pipelines_dir)?;

        let (nats, nats_url) = start_nats(&dev, &dir).await?;
        let db = BenchDatabase::create(&dev.pg_admin_url, &dev.database_url, &id).await?;
        let bucket = format!("bench-{id}");
        let port = free_port()?;
        let mut command = Command::new(dev.binary("control-plane")?);
        command
            .env("BIND_ADDR", format!("127.0.0.1:{port}"))
            .env("DATABASE_URL", &db.url)
            .env("NATS_URL", &nats_url)
            .env("S3_ENDPOINT", &dev.s3_endpoint)
            .env("S3_BUCKET", &bucket)
            .env("S3_REGION", &dev.s3_region)
            .env("AWS_ACCESS_KEY_ID", &dev.aws_access_key_id)
            .env("AWS_SECRET_ACCESS_KEY", &dev.aws_secret_access_key)
            .env("PIPELINES_DIR", &pipelines_dir)
            // The benchmark measures capacity: no global cap on runs executing at once.
            .env("MAX_CONCURRENT_RUNS", "0")
            // Measure what the log path can carry, not the default per-client SSE throttle
            // (100 lines/s), which would make the 10,000 lines/s scenario meaningless.
            .env("LOG_STREAM_RATE_LIMIT", "0")
            .env("LOG_MAX_SIZE_MB", "0")
            .env("RUST_LOG", rust_log())
            .env("NO_COLOR", "1");
        let control_plane = ChildProcess::spawn("control-plane", command, &dir.join("logs/control-plane.log"))?;
        let api = Api::new(format!("http://127.0.0.1:{port}"))?;
        let mut deployment = Self {
            dev,
            dir,
            bucket,
            db,
            api,
            nats_url,
            id,
            nats,
            control_plane,
            runner: None,
            runner_count: 0,
            runner_id: String::new(),
        };
        deployment.wait_control_plane().await?;
        deployment.restart_runner(runner_concurrency).await?;
        Ok(deployment)
    }

    pub fn control_plane_pid(&self) -> Option<u32> {
        self.control_plane.pid()
    }

    pub fn runner_pid(&self) -> Option<u32> {
        self.runner.as_ref().and_then(ChildProcess::pid)
    }

    /// Stops the current runner (if any) and starts a fresh one with `concurrency` slots.
    pub async fn restart_runner(&mut self, concurrency: usize) -> anyhow::Result<()> {
        self.stop_runner();
        let n = self.runner_count;
        self.runner_count += 1;
        let runner_id = format!("bench-{}-{n}", self.id);
        let data_dir = self.dir.join(format!("runner-{n}"));
        std::fs::create_dir_all(&data_dir).with_context(|| format!("cannot create {}", data_dir.display()))?;
        let mut command = Command::new(self.dev.binary("runner-agent")?);
        for name in RUNNER_MUST_NOT_SEE {
            command.env_remove(name);
        }
        command
            .env("NATS_URL", &self.nats_url)
            .env("RUNNER_ID", &runner_id)
            .env("RUNNER_CONCURRENCY", concurrency.to_string())
            .env("RUNNER_DATA_DIR", &data_dir)
            .env("RUST_LOG", rust_log())
            .env("NO_COLOR", "1");
        let log = self.dir.join(format!("logs/runner-{n}.log"));
        self.runner = Some(ChildProcess::spawn(&format!("runner {runner_id}"), command, &log)?);
        self.runner_id = runner_id;
        self.wait_runner_registered().await
    }

    /// Kills the runner: used where the harness itself plays the runner.
    pub fn stop_runner(&mut self) {
        if let Some(mut runner) = self.runner.take() {
            runner.kill();
        }
    }

    /// Fails when a product process died during a scenario.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.control_plane.exited() {
            bail!("control plane exited ({status}); see {}/logs", self.dir.display());
        }
        if let Some(runner) = self.runner.as_mut()
            && let Some(status) = runner.exited()
        {
            bail!("{} exited ({status}); see {}/logs", runner.name, self.dir.display());
        }
        Ok(())
    }

    async fn wait_control_plane(&mut self) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.control_plane.exited() {
                bail!("control plane exited during start-up ({status}); see {}/logs", self.dir.display());
            }
            if self.api.health_ok().await {
                return Ok(());
            }
            if started.elapsed() > START_TIMEOUT {
                bail!("control plane not healthy after {START_TIMEOUT:?}; see {}/logs", self.dir.display());
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
        self.control_plane.kill();
        self.nats.kill();
        if let Ok(docker) = runner_agent::docker::Docker::connect().await {
            for n in 0..self.runner_count {
                let runner = format!("{runner_prefix}{n}");
                for id in docker.containers_with_label("fastflow-runner-id", &runner).await.unwrap_or_default() {
                    let _ = docker.remove(&id).await;
                }
            }
        }
        if let Err(e) = self.db.drop_database().await {
            eprintln!("warning: could not drop database {}: {e:#}", self.db.name);
        }
        if let Err(e) = s3::delete_bucket(&s3::client(&self.dev), &self.bucket).await {
            eprintln!("warning: could not delete bucket {}: {e:#}", self.bucket);
        }
        if keep {
            eprintln!("deployment files kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

async fn start_nats(dev: &DevEnv, dir: &Path) -> anyhow::Result<(ChildProcess, String)> {
    let nats_dir = dir.join("nats");
    std::fs::create_dir_all(&nats_dir).with_context(|| format!("cannot create {}", nats_dir.display()))?;
    // Log batches and code bundles can exceed NATS's 1 MB default payload.
    let config = nats_dir.join("nats.conf");
    std::fs::write(&config, "max_payload: 8MB\n").context("cannot write nats.conf")?;
    let port = free_port()?;
    let monitor = free_port()?;
    let mut command = Command::new(&dev.nats_server_bin);
    command.arg("-c").arg(&config).arg("-js").arg("-sd").arg(nats_dir.join("store")).args([
        "-a",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-m",
        &monitor.to_string(),
    ]);
    let mut process = ChildProcess::spawn("nats-server", command, &nats_dir.join("nats-server.log"))?;
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{monitor}/healthz?js-enabled-only=true");
    let started = Instant::now();
    loop {
        if let Some(status) = process.exited() {
            bail!("nats-server exited during start-up ({status})");
        }
        if http.get(&url).send().await.is_ok_and(|r| r.status().is_success()) {
            return Ok((process, format!("nats://127.0.0.1:{port}")));
        }
        if started.elapsed() > START_TIMEOUT {
            bail!("nats-server not ready after {START_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
