//! Runs one claimed attempt: code, image, container, live log, exit report,
//! and removal of the container once the control plane has the log.

use crate::active::{Active, StopReason};
use crate::code_cache::CodeCache;
use crate::config::Config;
use crate::docker::{self, BindMount, ContainerSpec, Docker, Limits, Output};
use crate::log_pump::{self, LogPump};
use futures::StreamExt;
use shared::protocol::{AttemptRef, ExitOutcome, ExitReply, ExitReport, JobSpec};
use shared::{LogStream, subjects};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

const UV_CACHE_MOUNT: &str = "/uv-cache";
const EXIT_REPORT_TIMEOUT: Duration = Duration::from_secs(300);
const EXIT_REPORT_PATIENCE: Duration = Duration::from_secs(3600);

#[derive(Clone)]
pub struct Executor {
    pub config: Arc<Config>,
    pub docker: Docker,
    pub nats: async_nats::Client,
    pub js: async_nats::jetstream::Context,
    pub code: CodeCache,
    pub active: Active,
}

/// How the container part of an attempt ended.
enum Ended {
    Exited {
        container_id: String,
        exit_code: i64,
        timed_out: bool,
    },
    SetupFailed(String),
    /// Told the attempt is no longer ours: nothing to report.
    Abandoned {
        container_id: Option<String>,
    },
}

#[derive(Debug, thiserror::Error)]
enum Error {
    #[error(transparent)]
    Docker(#[from] docker::Error),
    #[error(transparent)]
    Log(#[from] log_pump::Error),
}

impl Executor {
    /// Executes an attempt to the end; never panics, always deregisters it.
    pub async fn execute(self, job: JobSpec, stop: watch::Receiver<Option<StopReason>>) {
        let at = AttemptRef { run_id: job.run_id, attempt: job.attempt, fencing_token: job.fencing_token };
        let mut pump = LogPump::new(self.js.clone(), &at, self.nats.max_payload(), job.log_max_bytes);
        let ended = match self.run_container(&job, &mut pump, stop).await {
            Ok(ended) => ended,
            Err(e) => Ended::SetupFailed(e.to_string()),
        };
        let (outcome, container_id, timed_out) = match ended {
            Ended::Exited { container_id, exit_code, timed_out } => {
                (ExitOutcome::Exited { exit_code }, Some(container_id), timed_out)
            }
            Ended::SetupFailed(message) => {
                tracing::warn!(run_id = %at.run_id, %message, "setup failed");
                pump.system_line(&format!("fastflow: {message}"));
                (ExitOutcome::SetupError { message }, None, false)
            }
            Ended::Abandoned { container_id } => {
                tracing::warn!(run_id = %at.run_id, "attempt no longer held by this runner; dropping it");
                self.cleanup(container_id.as_deref()).await;
                self.active.remove(at.run_id);
                return;
            }
        };
        let log = match pump.finish().await {
            Ok(totals) => totals,
            Err(e) => {
                // Without a complete live log the report would archive a partial one:
                // leave the attempt to lease expiry instead.
                tracing::error!(run_id = %at.run_id, error = %e, "could not publish the log; abandoning the attempt");
                self.cleanup(container_id.as_deref()).await;
                self.active.remove(at.run_id);
                return;
            }
        };
        let report =
            ExitReport { attempt: at.clone(), runner_id: self.config.runner_id.clone(), outcome, log, timed_out };
        if self.report_exit(&report).await {
            self.cleanup(container_id.as_deref()).await;
        }
        self.active.remove(at.run_id);
    }

    async fn run_container(
        &self,
        job: &JobSpec,
        pump: &mut LogPump,
        mut stop: watch::Receiver<Option<StopReason>>,
    ) -> Result<Ended, Error> {
        let code_dir = match &job.code {
            Some(code) => match self.code.ensure(code).await {
                Ok(dir) => Some(dir),
                Err(e) => return Ok(Ended::SetupFailed(e.to_string())),
            },
            None => None,
        };
        if let Err(e) = self.pull_image(&job.image, pump).await? {
            return Ok(Ended::SetupFailed(e));
        }
        if let Some(reason) = *stop.borrow() {
            return Ok(match reason {
                StopReason::Cancel { .. } => Ended::SetupFailed("cancelled before the container started".into()),
                _ => Ended::Abandoned { container_id: None },
            });
        }
        let spec = self.container_spec(job, code_dir);
        let started = match self.docker.start(&spec).await {
            Ok(s) => s,
            Err(e) => return Ok(Ended::SetupFailed(format!("container did not start: {e}"))),
        };
        let container_id = started.container_id;
        tracing::info!(run_id = %job.run_id, container = %container_id, "container started");
        let mut output = started.output;
        let timeout_at = job.timeout_seconds.map(|s| Instant::now() + Duration::from_secs(s));
        let mut timed_out = false;
        let mut abandoned = false;
        loop {
            let flush_at = pump.deadline();
            tokio::select! {
                chunk = output.next() => match chunk {
                    Some(Ok(Output::Stdout(b))) => { pump.feed(LogStream::Stdout, &b); pump.publish().await?; }
                    Some(Ok(Output::Stderr(b))) => { pump.feed(LogStream::Stderr, &b); pump.publish().await?; }
                    Some(Err(e)) => { tracing::warn!(error = %e, "output stream broke"); break; }
                    None => break,
                },
                _ = sleep_until_opt(flush_at) => pump.publish().await?,
                _ = sleep_until_opt(timeout_at), if !timed_out => {
                    timed_out = true;
                    pump.system_line("fastflow: timeout reached; stopping the container");
                    self.stop_in_background(&container_id, self.config.stop_grace);
                }
                changed = stop.changed() => {
                    let reason = if changed.is_ok() { *stop.borrow() } else { None };
                    match reason {
                        Some(StopReason::Cancel { force }) => {
                            pump.system_line("fastflow: cancelled; stopping the container");
                            let grace = if force { Duration::ZERO } else { self.config.stop_grace };
                            self.stop_in_background(&container_id, grace);
                        }
                        Some(StopReason::Stale | StopReason::Shutdown) => {
                            abandoned = true;
                            self.stop_in_background(&container_id, Duration::ZERO);
                        }
                        None => {}
                    }
                }
            }
        }
        let exit_code = self.docker.wait(&container_id).await?;
        if abandoned {
            return Ok(Ended::Abandoned { container_id: Some(container_id) });
        }
        Ok(Ended::Exited { container_id, exit_code, timed_out })
    }

    /// Makes the image available, streaming pull progress into the log.
    /// The inner `Err` is a setup failure to report; the outer one a log failure.
    async fn pull_image(&self, image: &str, pump: &mut LogPump) -> Result<Result<(), String>, Error> {
        let (tx, mut rx) = mpsc::channel::<String>(64);
        let docker = self.docker.clone();
        let image_owned = image.to_owned();
        let pull = tokio::spawn(async move { docker.ensure_image(&image_owned, &tx).await });
        while let Some(line) = rx.recv().await {
            pump.system_line(&line);
            pump.publish().await?;
        }
        Ok(match pull.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(format!("image pull task failed: {e}")),
        })
    }

    fn container_spec(&self, job: &JobSpec, code_dir: Option<std::path::PathBuf>) -> ContainerSpec {
        let mut env: Vec<(String, String)> = job.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let mut mounts = Vec::new();
        if let Some(dir) = code_dir {
            mounts.push(BindMount { host_path: dir, container_path: "/app".into(), read_only: true });
        }
        if job.mount_uv_cache {
            mounts.push(BindMount {
                host_path: self.config.uv_cache_dir.clone(),
                container_path: UV_CACHE_MOUNT.into(),
                read_only: false,
            });
            env.push(("UV_CACHE_DIR".into(), UV_CACHE_MOUNT.into()));
        }
        let labels = HashMap::from([
            ("fastflow-run-id".to_owned(), job.run_id.to_string()),
            ("fastflow-attempt".to_owned(), job.attempt.to_string()),
            ("fastflow-runner-id".to_owned(), self.config.runner_id.clone()),
        ]);
        ContainerSpec {
            name: format!("fastflow-{}-{}", job.run_id, job.attempt),
            image: job.image.clone(),
            command: job.command.clone(),
            env,
            labels,
            mounts,
            working_dir: Some("/app".into()),
            limits: Limits {
                memory_bytes: job.resources.memory_mb.map(|mb| (mb as i64).saturating_mul(1024 * 1024)),
                nano_cpus: job.resources.cpu_millis.map(|m| (m as i64).saturating_mul(1_000_000)),
                pids: job.resources.pids,
                cap_add: self.config.cap_add.clone(),
            },
        }
    }

    fn stop_in_background(&self, container_id: &str, grace: Duration) {
        let docker = self.docker.clone();
        let id = container_id.to_owned();
        tokio::spawn(async move {
            if let Err(e) = docker.stop(&id, grace).await {
                tracing::warn!(container = %id, error = %e, "stopping the container failed");
            }
        });
    }

    async fn cleanup(&self, container_id: Option<&str>) {
        if let Some(id) = container_id
            && let Err(e) = self.docker.remove(id).await
        {
            tracing::warn!(container = %id, error = %e, "could not remove the container");
        }
    }

    /// Reports until the control plane answers for good. `true`: the
    /// container may go (accepted, or the attempt is not ours any more).
    async fn report_exit(&self, report: &ExitReport) -> bool {
        let Ok(payload) = serde_json::to_vec(report) else { return false };
        let started = Instant::now();
        let mut delay = Duration::from_millis(500);
        loop {
            let request = async_nats::Request::new().payload(payload.clone().into()).timeout(Some(EXIT_REPORT_TIMEOUT));
            let answer = self.nats.send_request(subjects::EXIT, request).await;
            let reason = match answer.map(|m| serde_json::from_slice::<ExitReply>(&m.payload)) {
                Ok(Ok(ExitReply::Accepted)) => {
                    tracing::info!(run_id = %report.attempt.run_id, "exit accepted");
                    return true;
                }
                Ok(Ok(ExitReply::Rejected { reason })) => {
                    tracing::warn!(run_id = %report.attempt.run_id, %reason, "exit report rejected");
                    return true;
                }
                Ok(Ok(ExitReply::RetryLater { reason })) => reason,
                Ok(Err(e)) => format!("unreadable reply: {e}"),
                Err(e) => e.to_string(),
            };
            if started.elapsed() > EXIT_REPORT_PATIENCE {
                tracing::error!(run_id = %report.attempt.run_id, %reason, "giving up reporting the exit");
                return false;
            }
            tracing::warn!(run_id = %report.attempt.run_id, %reason, "exit report not accepted yet; retrying");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(10));
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
