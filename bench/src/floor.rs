//! The floor: the same container a runner would run, created, attached, started, waited
//! for and removed directly through the Docker API, with the runner's own Docker module
//! (so the floor makes exactly the engine calls the product makes, and nothing else).
//! Its containers use the runner's default log driver (`local`) unless a scenario asks
//! for the engine's own default, as the log throughput scenario does for its second floor.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use runner_agent::docker::{BindMount, ContainerSpec, Docker, LogDriver, Output};

use crate::digest::{Digest, DigestBuilder};

pub const BUSYBOX: &str = "fastflow-busybox:latest";

#[derive(Clone)]
pub struct Floor {
    docker: Docker,
    /// Mounted read-only at /app, as the runner mounts a pipeline's code.
    code_dir: PathBuf,
}

/// What one floor container did.
pub struct FloorRun {
    pub elapsed: Duration,
    pub output: Digest,
}

impl Floor {
    pub async fn connect(code_dir: &Path) -> anyhow::Result<Self> {
        let docker = Docker::connect().await.context("cannot connect to the Docker engine")?;
        docker.ping().await.context("the Docker engine does not answer")?;
        Ok(Self { docker, code_dir: code_dir.to_path_buf() })
    }

    /// Runs `command` in busybox: create + attach + start, drain the output while waiting,
    /// remove. The elapsed time covers all of it.
    pub async fn run(&self, command: &[&str], env: &[(&str, String)]) -> anyhow::Result<FloorRun> {
        self.run_logging_to(LogDriver::default(), command, env).await
    }

    /// [`Floor::run`] with the engine keeping its copy of the output in `log_driver`.
    pub async fn run_logging_to(
        &self,
        log_driver: LogDriver,
        command: &[&str],
        env: &[(&str, String)],
    ) -> anyhow::Result<FloorRun> {
        let name = format!("fastflow-bench-floor-{}", uuid::Uuid::new_v4().simple());
        let spec = ContainerSpec {
            name,
            image: BUSYBOX.into(),
            command: command.iter().map(|s| s.to_string()).collect(),
            env: env.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
            labels: HashMap::from([("fastflow-bench".to_owned(), "floor".to_owned())]),
            mounts: vec![BindMount {
                host_path: self.code_dir.clone(),
                container_path: "/app".into(),
                read_only: true,
            }],
            working_dir: Some("/app".into()),
            log_driver,
            log_max_bytes: None,
            // The product's default limits, so the floor pays the same cgroup set-up.
            limits: runner_agent::docker::Limits {
                memory_bytes: Some(2048 * 1024 * 1024),
                nano_cpus: Some(2_000_000_000),
                pids: Some(1024),
                cap_add: Vec::new(),
            },
            // The engine's default bridge: the floor needs no runner-made network.
            network: Default::default(),
        };
        let started = Instant::now();
        let container = self.docker.start(&spec).await.context("floor: starting the container")?;
        let id = container.container_id.clone();
        let drain = async {
            let mut output = container.output;
            let mut digest = DigestBuilder::default();
            while let Some(chunk) = output.next().await {
                match chunk.context("floor: reading the output")? {
                    Output::Stdout(bytes) | Output::Stderr(bytes) => digest.update(&bytes),
                }
            }
            anyhow::Ok(digest.finish())
        };
        let (output, exit) = tokio::join!(drain, self.docker.wait(&id));
        let removed = self.docker.remove(&id).await;
        let elapsed = started.elapsed();
        let exit = exit.context("floor: waiting for the container")?;
        removed.context("floor: removing the container")?;
        if exit != 0 {
            bail!("floor container exited {exit}");
        }
        Ok(FloorRun { elapsed, output: output? })
    }
}
