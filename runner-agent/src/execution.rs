//! Runs one claimed attempt: code, image, container, live log, exit report,
//! and removal of the container once the control plane has the log (in the
//! background: see `removals`).

use crate::attempts::{self, StopReason, StopSignal};
use crate::code_cache::CodeCache;
use crate::config::Config;
use crate::docker::{self, BindMount, ContainerSpec, Docker, Limits, NetworkMode, Output};
use crate::link::ControlLink;
use crate::log_pump::{self, LogPump};
use crate::network::Isolation;
use crate::removals::Removals;
use crate::uv_cache;
use futures::StreamExt;
use shared::LogStream;
use shared::protocol::{AttemptRef, ExitOutcome, ExitReply, ExitReport, JobSpec, NetworkPolicy};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::task::AbortOnDropHandle;

const UV_CACHE_MOUNT: &str = "/uv-cache";
const EXIT_REPORT_PATIENCE: Duration = Duration::from_secs(3600);
/// How often a job setup step that is still waiting is logged (see [`watched`]).
const SETUP_WARN_EVERY: Duration = Duration::from_secs(20);
/// The one log line of an attempt under the benchmark-only no-op executor.
#[cfg(feature = "bench-noop")]
pub const NOOP_LINE: &str = "fastflow: no-op executor (benchmark mode)";

/// Labels of a job container: enough to rebuild its attempt after a runner restart.
pub mod label {
    pub const RUN_ID: &str = "fastflow-run-id";
    pub const ATTEMPT: &str = "fastflow-attempt";
    pub const RUNNER_ID: &str = "fastflow-runner-id";
    pub const FENCING_TOKEN: &str = "fastflow-fencing-token";
    pub const PIPELINE: &str = "fastflow-pipeline";
    /// When the job's timeout passes, in Unix milliseconds (absent: no timeout).
    pub const TIMEOUT_AT_MS: &str = "fastflow-timeout-at-ms";
    /// The job's log size limit in bytes (absent: none).
    pub const LOG_MAX_BYTES: &str = "fastflow-log-max-bytes";
    /// The job's network policy (`none`, `isolated`, `host-bridge`).
    pub const NETWORK: &str = "fastflow-network";
}

/// A job container an earlier process of this runner left behind, rebuilt from its labels.
#[derive(Debug, Clone)]
pub struct Orphan {
    pub container_id: String,
    pub attempt: AttemptRef,
    pub pipeline: String,
    pub state: docker::State,
    pub timeout_at_ms: Option<i64>,
    pub log_max_bytes: Option<u64>,
}

impl Orphan {
    /// `None` when a label the attempt needs is missing or malformed (e.g. a container
    /// of a runner version that did not write the fencing token).
    pub fn from_container(container: &docker::Inspected) -> Option<Orphan> {
        let get = |key: &str| container.labels.get(key).map(String::as_str);
        Some(Orphan {
            container_id: container.id.clone(),
            attempt: AttemptRef {
                run_id: get(label::RUN_ID)?.parse().ok()?,
                attempt: get(label::ATTEMPT)?.parse().ok()?,
                fencing_token: get(label::FENCING_TOKEN)?.parse().ok()?,
            },
            pipeline: get(label::PIPELINE).unwrap_or_default().to_owned(),
            state: container.state,
            timeout_at_ms: match get(label::TIMEOUT_AT_MS) {
                Some(v) => Some(v.parse().ok()?),
                None => None,
            },
            log_max_bytes: match get(label::LOG_MAX_BYTES) {
                Some(v) => Some(v.parse().ok()?),
                None => None,
            },
        })
    }
}

/// Executes attempts; cheap to clone (one shared inner per runner), one clone per attempt.
#[derive(Clone)]
pub struct Executor {
    inner: Arc<Inner>,
}

struct Inner {
    config: Arc<Config>,
    docker: Docker,
    link: Arc<dyn ControlLink>,
    code: CodeCache,
    attempts: attempts::Handle,
    removals: Removals,
    network: Isolation,
}

impl Executor {
    /// Code bundles are cached under the data dir; as many container removals run in
    /// the background as the runner has slots (see `removals`).
    pub fn new(config: Arc<Config>, docker: Docker, link: Arc<dyn ControlLink>, attempts: attempts::Handle) -> Self {
        let code = CodeCache::new(config.data_dir.join("code"), link.clone());
        let removals = Removals::new(docker.clone(), config.concurrency as usize);
        let network = Isolation::new(docker.clone(), config.isolated_block.clone());
        Self { inner: Arc::new(Inner { config, docker, link, code, attempts, removals, network }) }
    }

    /// The `isolated` job network (set up at start, or by the first job that needs it).
    pub fn network(&self) -> &Isolation {
        &self.inner.network
    }

    pub fn config(&self) -> &Arc<Config> {
        &self.inner.config
    }

    pub fn docker(&self) -> &Docker {
        &self.inner.docker
    }

    pub fn link(&self) -> &Arc<dyn ControlLink> {
        &self.inner.link
    }

    pub fn attempts(&self) -> &attempts::Handle {
        &self.inner.attempts
    }

    pub fn removals(&self) -> &Removals {
        &self.inner.removals
    }
}

/// How the container part of an attempt ended.
enum Ended {
    Exited {
        container_id: String,
        exit_code: i64,
        timed_out: bool,
        cancelled: bool,
    },
    SetupFailed(String),
    /// Cancelled before its container started.
    CancelledEarly,
    /// Benchmark-only no-op executor (`RUNNER_BENCH_NOOP_EXECUTOR`): nothing ran.
    #[cfg(feature = "bench-noop")]
    Noop,
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
    pub async fn execute(self, job: JobSpec, stop: StopSignal) {
        let at = AttemptRef { run_id: job.run_id, attempt: job.attempt, fencing_token: job.fencing_token };
        let mut pump = LogPump::new(self.inner.link.clone(), &at, job.log_max_bytes);
        #[cfg(feature = "bench-noop")]
        if self.inner.config.noop_executor {
            // Benchmark mode: no code, image or container; the log and the exit report take
            // the normal path (pump, then report), so dispatch is measured end to end.
            pump.system_line(NOOP_LINE);
            self.conclude(at, pump, Ended::Noop).await;
            return;
        }
        let ended = match self.run_container(&job, &mut pump, stop).await {
            Ok(ended) => ended,
            Err(e) => Ended::SetupFailed(e.to_string()),
        };
        self.conclude(at, pump, ended).await;
    }

    /// Takes over a container an earlier process of this runner started (found by its
    /// labels after a restart): resumes its log after the lines already published, waits
    /// for its exit (or reads the exit code it already has) and reports it as usual.
    pub async fn reattach(self, orphan: Orphan, stop: StopSignal) {
        let at = orphan.attempt.clone();
        let container_id = orphan.container_id.clone();
        let stopped = *stop.borrow();
        if let Some(StopReason::Stale | StopReason::Shutdown) = stopped {
            // The control plane gave the attempt up (lease expired) while we were down.
            tracing::warn!(container = %container_id, "re-attached attempt is no longer ours; removing its container");
            self.cleanup(Some(&container_id)).await;
            self.inner.attempts.deregister(at.run_id);
            return;
        }
        let point = match self.published_so_far(&at).await {
            Ok(point) => point,
            Err(e) => {
                // Resuming blind would duplicate or lose lines: leave the attempt to lease
                // expiry rather than run it unsupervised.
                tracing::error!(error = %e, "cannot read the published log; giving up the re-attached attempt");
                self.cleanup(Some(&container_id)).await;
                self.inner.attempts.deregister(at.run_id);
                return;
            }
        };
        tracing::info!(
            container = %container_id,
            state = ?orphan.state,
            published_lines = point.lines,
            "re-attached to a container left by an earlier runner process"
        );
        let mut pump = LogPump::resume(self.inner.link.clone(), &at, orphan.log_max_bytes, point);
        let ended = match self.follow_orphan(&orphan, &mut pump, stop).await {
            Ok(ended) => ended,
            Err(e) => Ended::SetupFailed(e.to_string()),
        };
        let unmatched = pump.unmatched_skip();
        if unmatched > 0 {
            // The engine's log no longer holds the start of the output (rotated?).
            tracing::warn!(unmatched, "the container's log is shorter than what was published before the restart");
            pump.system_line(&format!(
                "fastflow: the runner restarted and the container's log no longer held {unmatched} lines \
                 already published; output printed while the runner was down may be missing"
            ));
        }
        self.conclude(at, pump, ended).await;
    }

    async fn follow_orphan(&self, orphan: &Orphan, pump: &mut LogPump, stop: StopSignal) -> Result<Ended, Error> {
        let id = &orphan.container_id;
        let mut state = orphan.state;
        if state == docker::State::Created {
            // Created, then the runner died before starting it: start it now. Its
            // output goes to the engine's log, which `logs` reads from the start.
            if let Err(e) = self.inner.docker.start_existing(id).await {
                return Ok(Ended::SetupFailed(format!("container did not start: {e}")));
            }
            state = docker::State::Running;
        }
        let running = state == docker::State::Running;
        // A container that already exited is not timed out after the fact.
        let timeout_at = orphan.timeout_at_ms.filter(|_| running).map(|at_ms| {
            let left_ms = at_ms.saturating_sub(chrono::Utc::now().timestamp_millis()).max(0);
            Instant::now() + Duration::from_millis(left_ms as u64)
        });
        let output = self.inner.docker.logs(id, running);
        self.follow(id, output, pump, stop, timeout_at).await
    }

    /// What earlier processes published for the attempt, retried for a while (NATS may be
    /// coming back too).
    async fn published_so_far(&self, at: &AttemptRef) -> Result<log_pump::ResumePoint, log_pump::Error> {
        let mut delay = Duration::from_millis(500);
        let mut tries = 0;
        loop {
            match log_pump::resume_point(self.inner.link.as_ref(), at).await {
                Ok(point) => return Ok(point),
                Err(e) if tries >= 6 => return Err(e),
                Err(e) => tracing::warn!(error = %e, "reading the published log failed; retrying"),
            }
            tries += 1;
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(4));
        }
    }

    /// Reports how the attempt ended (after publishing the rest of its log) and removes
    /// its container once the control plane has the log; always deregisters the attempt.
    async fn conclude(&self, at: AttemptRef, mut pump: LogPump, ended: Ended) {
        let (outcome, container_id, timed_out, cancelled) = match ended {
            Ended::Exited { container_id, exit_code, timed_out, cancelled } => {
                (ExitOutcome::Exited { exit_code }, Some(container_id), timed_out, cancelled)
            }
            #[cfg(feature = "bench-noop")]
            Ended::Noop => (ExitOutcome::Exited { exit_code: 0 }, None, false, false),
            Ended::SetupFailed(message) => {
                tracing::warn!(run_id = %at.run_id, %message, "setup failed");
                pump.system_line(&format!("fastflow: {message}"));
                (ExitOutcome::SetupError { message }, None, false, false)
            }
            Ended::CancelledEarly => {
                let message = "cancelled before the container started".to_owned();
                pump.system_line(&format!("fastflow: {message}"));
                (ExitOutcome::SetupError { message }, None, false, true)
            }
            Ended::Abandoned { container_id } => {
                tracing::warn!(run_id = %at.run_id, "attempt no longer held by this runner; dropping it");
                self.cleanup(container_id.as_deref()).await;
                self.inner.attempts.deregister(at.run_id);
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
                self.inner.attempts.deregister(at.run_id);
                return;
            }
        };
        let report = ExitReport {
            attempt: at.clone(),
            runner_id: self.inner.config.runner_id.clone(),
            outcome,
            log,
            timed_out,
            cancelled,
        };
        if self.report_exit(&report).await
            && let Some(id) = container_id
        {
            // The control plane has the log: the container may go, and the slot with
            // it, before the engine has finished removing it.
            self.inner.removals.remove(id).await;
        }
        self.inner.attempts.deregister(at.run_id);
    }

    async fn run_container(&self, job: &JobSpec, pump: &mut LogPump, mut stop: StopSignal) -> Result<Ended, Error> {
        // A stop (cancel, lease lost, shutdown) ends the setup wherever it is: a fetch
        // or a pull must not hold the slot after the control plane gave up the attempt.
        let prepared = tokio::select! {
            prepared = self.prepare(job, pump) => prepared?,
            reason = stop_requested(&mut stop) => return Ok(ended_before_start(reason)),
        };
        let code_dir = match prepared {
            Ok(code_dir) => code_dir,
            Err(message) => return Ok(Ended::SetupFailed(message)),
        };
        if let Some(reason) = *stop.borrow() {
            return Ok(ended_before_start(reason));
        }
        let spec = match self.container_spec(job, code_dir).await {
            Ok(spec) => spec,
            Err(message) => return Ok(Ended::SetupFailed(message)),
        };
        let started = match watched("starting the container", self.inner.docker.start(&spec)).await {
            Ok(s) => s,
            Err(e) => return Ok(Ended::SetupFailed(format!("container did not start: {e}"))),
        };
        let container_id = started.container_id;
        tracing::info!(run_id = %job.run_id, container = %container_id, "container started");
        let timeout_at = job.timeout_seconds.map(|s| Instant::now() + Duration::from_secs(s));
        self.follow(&container_id, started.output, pump, stop, timeout_at).await
    }

    /// Pumps the container's output into the log until it ends, enforcing the timeout and
    /// stop requests, then waits for the exit code.
    async fn follow(
        &self,
        container_id: &str,
        mut output: docker::OutputStream,
        pump: &mut LogPump,
        mut stop: StopSignal,
        timeout_at: Option<Instant>,
    ) -> Result<Ended, Error> {
        let container_id = container_id.to_owned();
        let mut timed_out = false;
        let mut cancelled = false;
        let mut abandoned = false;
        let mut stop_open = true;
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
                    self.stop_in_background(&container_id, self.inner.config.stop_grace);
                }
                changed = stop.changed(), if stop_open => {
                    // Closed: the registry is gone (the runner returned), no stop can come.
                    stop_open = changed.is_ok();
                    let reason = if stop_open { *stop.borrow() } else { None };
                    match reason {
                        Some(StopReason::Cancel { force }) => {
                            cancelled = true;
                            pump.system_line("fastflow: cancelled; stopping the container");
                            let grace = if force { Duration::ZERO } else { self.inner.config.stop_grace };
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
        let exit_code = self.inner.docker.wait(&container_id).await?;
        if abandoned {
            return Ok(Ended::Abandoned { container_id: Some(container_id) });
        }
        Ok(Ended::Exited { container_id, exit_code, timed_out, cancelled })
    }

    /// Fetches the code and makes the image available. The inner `Err` is a setup
    /// failure to report; the outer one a log failure.
    async fn prepare(
        &self,
        job: &JobSpec,
        pump: &mut LogPump,
    ) -> Result<Result<Option<std::path::PathBuf>, String>, Error> {
        let code_dir = match &job.code {
            Some(code) => match watched("fetching the code bundle", self.inner.code.ensure(code)).await {
                Ok(dir) => Some(dir),
                Err(e) => return Ok(Err(e.to_string())),
            },
            None => None,
        };
        Ok(watched("making the image available", self.pull_image(&job.image, pump)).await?.map(|()| code_dir))
    }

    /// Makes the image available, streaming pull progress into the log.
    /// The inner `Err` is a setup failure to report; the outer one a log failure.
    async fn pull_image(&self, image: &str, pump: &mut LogPump) -> Result<Result<(), String>, Error> {
        let (tx, mut rx) = mpsc::channel::<String>(64);
        let docker = self.inner.docker.clone();
        let image_owned = image.to_owned();
        // Aborted when dropped: a stop during the pull ends the engine request with it.
        let pull = AbortOnDropHandle::new(tokio::spawn(async move { docker.ensure_image(&image_owned, &tx).await }));
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

    /// The container of one attempt. `Err` is a setup failure for the job's log: the
    /// isolated network could not be set up (never run such a job on a looser network),
    /// or the pipeline's uv cache folder could not be made.
    async fn container_spec(
        &self,
        job: &JobSpec,
        code_dir: Option<std::path::PathBuf>,
    ) -> Result<ContainerSpec, String> {
        let mut env: Vec<(String, String)> = job.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let mut mounts = Vec::new();
        if let Some(dir) = code_dir {
            mounts.push(BindMount { host_path: dir, container_path: "/app".into(), read_only: true });
        }
        if job.mount_uv_cache {
            // One cache per pipeline: a job can fill only its own pipeline's cache, so no
            // pipeline plants packages that another one's jobs would then run.
            let host_path = uv_cache::for_pipeline(&self.inner.config.uv_cache_dir, &job.pipeline_name);
            tokio::fs::create_dir_all(&host_path)
                .await
                .map_err(|e| format!("cannot create the uv cache {}: {e}", host_path.display()))?;
            mounts.push(BindMount { host_path, container_path: UV_CACHE_MOUNT.into(), read_only: false });
            env.push(("UV_CACHE_DIR".into(), UV_CACHE_MOUNT.into()));
        }
        let network = match job.network {
            NetworkPolicy::None => NetworkMode::None,
            NetworkPolicy::HostBridge => NetworkMode::DefaultBridge,
            NetworkPolicy::Isolated => match self.inner.network.ensure().await {
                Ok(name) => NetworkMode::Named(name.to_owned()),
                Err(e) => return Err(format!("network = \"isolated\" is unavailable on this runner: {e}")),
            },
        };
        let mut labels = HashMap::from([
            (label::RUN_ID.to_owned(), job.run_id.to_string()),
            (label::ATTEMPT.to_owned(), job.attempt.to_string()),
            (label::RUNNER_ID.to_owned(), self.inner.config.runner_id.clone()),
            (label::FENCING_TOKEN.to_owned(), job.fencing_token.to_string()),
            (label::PIPELINE.to_owned(), job.pipeline_name.clone()),
            (label::NETWORK.to_owned(), job.network.as_str().to_owned()),
        ]);
        if let Some(secs) = job.timeout_seconds {
            let at_ms = chrono::Utc::now().timestamp_millis().saturating_add((secs as i64).saturating_mul(1000));
            labels.insert(label::TIMEOUT_AT_MS.to_owned(), at_ms.to_string());
        }
        if let Some(limit) = job.log_max_bytes {
            labels.insert(label::LOG_MAX_BYTES.to_owned(), limit.to_string());
        }
        Ok(ContainerSpec {
            name: format!("fastflow-{}-{}", job.run_id, job.attempt),
            image: job.image.clone(),
            command: job.command.clone(),
            env,
            labels,
            mounts,
            working_dir: Some("/app".into()),
            log_driver: self.inner.config.container_log_driver,
            limits: Limits {
                memory_bytes: job.resources.memory_mb.map(|mb| (mb as i64).saturating_mul(1024 * 1024)),
                nano_cpus: job.resources.cpu_millis.map(|m| (m as i64).saturating_mul(1_000_000)),
                pids: job.resources.pids,
                cap_add: self.inner.config.cap_add.clone(),
            },
            network,
        })
    }

    fn stop_in_background(&self, container_id: &str, grace: Duration) {
        let docker = self.inner.docker.clone();
        let id = container_id.to_owned();
        tokio::spawn(async move {
            if let Err(e) = docker.stop(&id, grace).await {
                tracing::warn!(container = %id, error = %e, "stopping the container failed");
            }
        });
    }

    async fn cleanup(&self, container_id: Option<&str>) {
        if let Some(id) = container_id {
            self.inner.removals.remove_now(id).await;
        }
    }

    /// Reports until the control plane answers for good. `true`: the
    /// container may go (accepted, or the attempt is not ours any more).
    async fn report_exit(&self, report: &ExitReport) -> bool {
        let started = Instant::now();
        let mut delay = Duration::from_millis(500);
        loop {
            let reason = match self.inner.link.report_exit(report).await {
                Ok(ExitReply::Accepted) => {
                    tracing::info!(run_id = %report.attempt.run_id, "exit accepted");
                    return true;
                }
                Ok(ExitReply::Rejected { reason }) => {
                    tracing::warn!(run_id = %report.attempt.run_id, %reason, "exit report rejected");
                    return true;
                }
                Ok(ExitReply::RetryLater { reason }) => reason,
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

/// Runs one step of a job's setup, logging a warning each [`SETUP_WARN_EVERY`] it
/// is still waiting, so a setup that hangs shows where (an image pull may simply be long).
async fn watched<F: Future>(step: &'static str, work: F) -> F::Output {
    tokio::pin!(work);
    let mut waited = Duration::ZERO;
    loop {
        tokio::select! {
            out = &mut work => return out,
            _ = tokio::time::sleep(SETUP_WARN_EVERY) => {
                waited += SETUP_WARN_EVERY;
                tracing::warn!(step, waited_s = waited.as_secs(), "job setup still waiting");
            }
        }
    }
}

/// Resolves with the reason once the attempt is told to stop; never if it is not.
async fn stop_requested(stop: &mut StopSignal) -> StopReason {
    loop {
        if let Some(reason) = *stop.borrow_and_update() {
            return reason;
        }
        if stop.changed().await.is_err() {
            // The sender is gone: nobody can ask any more.
            return std::future::pending().await;
        }
    }
}

fn ended_before_start(reason: StopReason) -> Ended {
    match reason {
        StopReason::Cancel { .. } => Ended::CancelledEarly,
        StopReason::Stale | StopReason::Shutdown => Ended::Abandoned { container_id: None },
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
