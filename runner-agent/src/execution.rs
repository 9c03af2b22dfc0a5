//! Runs one claimed attempt: code, image, container, live log, exit report,
//! and removal of the container once the control plane has the log (in the
//! background: see `removals`).

use crate::attempts::{self, StopReason, StopSignal};
use crate::code_cache::CodeCache;
use crate::config::Config;
use crate::docker::{self, BindMount, ContainerSpec, Docker, Limits, NetworkMode, Output};
use crate::exit_reports::{self, ExitReports};
use crate::fence::Fence;
use crate::link::ControlLink;
use crate::log_pump::{self, LogPump};
use crate::network::Isolation;
use crate::removals::Removals;
use crate::uv_cache;
use futures::StreamExt;
use shared::LogStream;
use shared::protocol::{AttemptRef, ExitOutcome, ExitReply, ExitReport, JobSpec, NetworkPolicy};
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::task::AbortOnDropHandle;

const UV_CACHE_MOUNT: &str = "/uv-cache";
/// How often an exit report is re-sent at most while the control plane cannot take it.
const MAX_REPORT_DELAY: Duration = Duration::from_secs(10);
/// Tries to learn a container's exit code before the attempt is reported as lost track of.
const WAIT_TRIES: u32 = 5;
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
    fence: Fence,
    reports: ExitReports,
    network: Isolation,
}

impl Executor {
    /// Code bundles are cached under the data dir; as many container removals run in
    /// the background as the runner has slots (see `removals`); exit reports are kept
    /// under the data dir until accepted (see `exit_reports`).
    pub fn new(
        config: Arc<Config>,
        docker: Docker,
        link: Arc<dyn ControlLink>,
        attempts: attempts::Handle,
        fence: Fence,
    ) -> Self {
        let code = CodeCache::new(config.data_dir.join("code"), link.clone());
        let removals = Removals::new(docker.clone(), config.concurrency as usize);
        let reports = ExitReports::in_dir(&config.data_dir);
        let network = Isolation::new(docker.clone(), config.isolated_block.clone());
        Self { inner: Arc::new(Inner { config, docker, link, code, attempts, removals, fence, reports, network }) }
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

    pub fn fence(&self) -> &Fence {
        &self.inner.fence
    }

    pub fn reports(&self) -> &ExitReports {
        &self.inner.reports
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
    /// Nothing ran (no container): code, image or container creation failed.
    SetupFailed(String),
    /// The engine lost track of a container it had (its exit code cannot be read): the
    /// attempt is reported as a setup error and the container removed by id.
    Lost {
        container_id: String,
        message: String,
    },
    /// Cancelled before its container started.
    CancelledEarly,
    /// Benchmark-only no-op executor (`RUNNER_BENCH_NOOP_EXECUTOR`): nothing ran.
    #[cfg(feature = "bench-noop")]
    Noop,
    /// Told the attempt is no longer ours (or fenced): nothing to report.
    Abandoned {
        container_id: Option<String>,
    },
}

type ExitWait = Pin<Box<dyn Future<Output = Result<i64, String>> + Send>>;

impl Executor {
    /// Executes an attempt to the end; never panics, always deregisters it.
    pub async fn execute(self, job: JobSpec, mut stop: StopSignal) {
        let at = AttemptRef { run_id: job.run_id, attempt: job.attempt, fencing_token: job.fencing_token };
        let mut pump = LogPump::new(self.inner.link.clone(), &at, job.log_max_bytes);
        #[cfg(feature = "bench-noop")]
        if self.inner.config.noop_executor {
            // Benchmark mode: no code, image or container; the log and the exit report take
            // the normal path (pump, then report), so dispatch is measured end to end.
            pump.system_line(NOOP_LINE);
            self.conclude(at, pump, Ended::Noop, stop).await;
            return;
        }
        let ended = self.run_container(&job, &mut pump, &mut stop).await;
        self.conclude(at, pump, ended, stop).await;
    }

    /// Takes over a container an earlier process of this runner started (found by its
    /// labels after a restart): resumes its log after the lines already published, waits
    /// for its exit (or reads the exit code it already has) and reports it as usual.
    pub async fn reattach(self, orphan: Orphan, mut stop: StopSignal) {
        let at = orphan.attempt.clone();
        let container_id = orphan.container_id.clone();
        let stopped = *stop.borrow();
        if let Some(StopReason::Stale | StopReason::Shutdown) = stopped {
            // The control plane gave the attempt up (lease expired) while we were down.
            tracing::warn!(container = %container_id, "re-attached attempt is no longer ours; removing its container");
            self.abandon(&at, Some(&container_id)).await;
            return;
        }
        let point = match self.published_so_far(&at).await {
            Ok(point) => point,
            Err(e) => {
                // Resuming blind would duplicate or lose lines: leave the attempt to lease
                // expiry rather than run it unsupervised.
                tracing::error!(error = %e, "cannot read the published log; giving up the re-attached attempt");
                self.abandon(&at, Some(&container_id)).await;
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
        let ended = self.follow_orphan(&orphan, &mut pump, &mut stop).await;
        let unmatched = pump.unmatched_skip();
        if unmatched > 0 {
            // The engine's log no longer holds the start of the output (rotated?).
            tracing::warn!(unmatched, "the container's log is shorter than what was published before the restart");
            pump.system_line(&format!(
                "fastflow: the runner restarted and the container's log no longer held {unmatched} lines \
                 already published; output printed while the runner was down may be missing"
            ));
        }
        self.conclude(at, pump, ended, stop).await;
    }

    /// Delivers an exit report an earlier process of this runner saved but could not
    /// deliver (see `exit_reports`), then removes its container.
    pub async fn resend(self, pending: exit_reports::Pending, stop: StopSignal) {
        tracing::info!(container = ?pending.container_id, "re-sending the exit report an earlier runner process saved");
        self.deliver(pending, stop).await;
    }

    async fn follow_orphan(&self, orphan: &Orphan, pump: &mut LogPump, stop: &mut StopSignal) -> Ended {
        let id = &orphan.container_id;
        let mut state = orphan.state;
        if state == docker::State::Created {
            // Created, then the runner died before starting it: start it now. Its
            // output goes to the engine's log, which `logs` reads from the start.
            if let Err(e) = self.inner.docker.start_existing(id).await {
                return Ended::Lost { container_id: id.clone(), message: format!("container did not start: {e}") };
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

    /// Publishes the rest of the log, then reports how the attempt ended (see
    /// [`Self::deliver`]); always deregisters the attempt.
    async fn conclude(&self, at: AttemptRef, mut pump: LogPump, ended: Ended, mut stop: StopSignal) {
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
            Ended::Lost { container_id, message } => {
                tracing::error!(run_id = %at.run_id, container = %container_id, %message, "lost track of the container");
                pump.system_line(&format!("fastflow: {message}"));
                (ExitOutcome::SetupError { message }, Some(container_id), false, false)
            }
            Ended::CancelledEarly => {
                let message = "cancelled before the container started".to_owned();
                pump.system_line(&format!("fastflow: {message}"));
                (ExitOutcome::SetupError { message }, None, false, true)
            }
            Ended::Abandoned { container_id } => {
                tracing::warn!(run_id = %at.run_id, "attempt no longer held by this runner; dropping it");
                self.abandon(&at, container_id.as_deref()).await;
                return;
            }
        };
        // The whole log before the report, or the report would archive a partial one.
        // Publishing is retried for as long as it takes, unless the attempt stops being
        // ours meanwhile (the fence passed, or the control plane gave it up).
        let log = tokio::select! {
            log = pump.finish() => log,
            () = no_longer_ours(&mut stop) => {
                tracing::warn!(run_id = %at.run_id, "attempt given up while its log was still being published; dropping it");
                self.abandon(&at, container_id.as_deref()).await;
                return;
            }
        };
        let report = ExitReport {
            attempt: at,
            runner_id: self.inner.config.runner_id.clone(),
            outcome,
            log,
            timed_out,
            cancelled,
        };
        self.deliver(exit_reports::Pending { report, container_id }, stop).await;
    }

    /// Saves the report on disk, sends it until the control plane answers for good,
    /// then forgets it and removes the container (the control plane has the log).
    /// Until then the container, and the engine's copy of its output, stay.
    async fn deliver(&self, pending: exit_reports::Pending, mut stop: StopSignal) {
        let at = pending.report.attempt.clone();
        if let Err(e) = self.inner.reports.save(&pending) {
            tracing::error!(run_id = %at.run_id, error = %e, "cannot save the exit report; a restart before it is delivered loses it");
        }
        tokio::select! {
            () = self.report_exit(&pending.report) => {}
            () = no_longer_ours(&mut stop) => {
                tracing::warn!(run_id = %at.run_id, "attempt given up before its exit report was accepted");
            }
        }
        self.inner.reports.remove(&at);
        if let Some(id) = pending.container_id {
            // The container may go, and the slot with it, before the engine has removed it.
            self.inner.removals.remove(id).await;
        }
        self.inner.attempts.deregister(at.run_id);
    }

    /// Drops an attempt that is not ours any more: its container goes at once.
    async fn abandon(&self, at: &AttemptRef, container_id: Option<&str>) {
        if let Some(id) = container_id {
            self.inner.removals.remove_now(id).await;
        }
        self.inner.reports.remove(at);
        self.inner.attempts.deregister(at.run_id);
    }

    async fn run_container(&self, job: &JobSpec, pump: &mut LogPump, stop: &mut StopSignal) -> Ended {
        // A stop (cancel, lease lost, shutdown) ends the setup wherever it is: a fetch
        // or a pull must not hold the slot after the control plane gave up the attempt.
        let prepared = tokio::select! {
            prepared = self.prepare(job, pump) => prepared,
            reason = stop_requested(stop) => return ended_before_start(reason),
        };
        let code_dir = match prepared {
            Ok(code_dir) => code_dir,
            Err(message) => return Ended::SetupFailed(message),
        };
        if let Some(reason) = *stop.borrow() {
            return ended_before_start(reason);
        }
        if !self.inner.fence.is_live() {
            // No container is created past the fence: the lease may be gone already.
            return Ended::Abandoned { container_id: None };
        }
        let spec = match self.container_spec(job, code_dir).await {
            Ok(spec) => spec,
            Err(message) => return Ended::SetupFailed(message),
        };
        let started = match watched("starting the container", self.inner.docker.start(&spec)).await {
            Ok(s) => s,
            Err(e) => return Ended::SetupFailed(format!("container did not start: {e}")),
        };
        let container_id = started.container_id;
        tracing::info!(run_id = %job.run_id, container = %container_id, "container started");
        let timeout_at = job.timeout_seconds.map(|s| Instant::now() + Duration::from_secs(s));
        self.follow(&container_id, started.output, pump, stop, timeout_at).await
    }

    /// Supervises the container until it has exited and its output is read: pumps the
    /// output into the log and, at any moment (the log publisher behind, the output
    /// stream broken or closed early), acts on the timeout and on stop requests.
    async fn follow(
        &self,
        container_id: &str,
        mut output: docker::OutputStream,
        pump: &mut LogPump,
        stop: &mut StopSignal,
        timeout_at: Option<Instant>,
    ) -> Ended {
        let id = container_id.to_owned();
        let (mut timed_out, mut cancelled, mut abandoned) = (false, false, false);
        let mut output_open = true;
        let mut stop_open = true;
        let mut exit: Option<ExitWait> = None;
        let mut exit_code: Option<i64> = None;
        loop {
            if let Some(code) = exit_code
                && (!output_open || abandoned)
            {
                if abandoned {
                    return Ended::Abandoned { container_id: Some(id) };
                }
                return Ended::Exited { container_id: id, exit_code: code, timed_out, cancelled };
            }
            // The exit code is awaited once the output ended (normally at the exit) or the
            // container was told to stop (its output may be unread while the log is behind).
            if exit.is_none() && exit_code.is_none() && (!output_open || timed_out || cancelled || abandoned) {
                exit = Some(Box::pin(wait_for_exit(self.inner.docker.clone(), id.clone())));
            }
            let flush_at = pump.deadline();
            let room = pump.is_behind().then(|| pump.room());
            // Once the container is told to stop, its output is read even while the log is
            // behind: the engine does not finish a container's exit until its attached output
            // is drained, and what a dying container still prints is bounded by its pipes. An
            // abandoned attempt's output goes nowhere.
            let stopping = timed_out || cancelled || abandoned;
            tokio::select! {
                chunk = output.next(), if output_open && (stopping || !pump.is_behind()) => match chunk {
                    Some(Ok(_)) if abandoned => {}
                    Some(Ok(Output::Stdout(b))) => { pump.feed(LogStream::Stdout, &b); pump.hand_over(); }
                    Some(Ok(Output::Stderr(b))) => { pump.feed(LogStream::Stderr, &b); pump.hand_over(); }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "output stream broke; still supervising the container");
                        pump.system_line("fastflow: the container's output stream broke; later output is missing from this log");
                        output_open = false;
                    }
                    None => output_open = false,
                },
                permit = optional(room) => pump.take_room(permit),
                _ = sleep_until_opt(flush_at) => pump.hand_over(),
                _ = sleep_until_opt(timeout_at), if !timed_out => {
                    timed_out = true;
                    pump.system_line("fastflow: timeout reached; stopping the container");
                    self.stop_in_background(&id, self.inner.config.stop_grace);
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
                            self.stop_in_background(&id, grace);
                        }
                        Some(StopReason::Stale | StopReason::Shutdown) => {
                            abandoned = true;
                            self.stop_in_background(&id, Duration::ZERO);
                        }
                        None => {}
                    }
                }
                code = optional(exit.as_mut()) => {
                    exit = None;
                    match code {
                        Ok(code) => exit_code = Some(code),
                        Err(message) if abandoned => {
                            tracing::warn!(container = %id, %message, "cannot confirm the abandoned container exited");
                            return Ended::Abandoned { container_id: Some(id) };
                        }
                        Err(message) => return Ended::Lost { container_id: id, message },
                    }
                }
            }
        }
    }

    /// Fetches the code and makes the image available; `Err` is a setup failure to report.
    async fn prepare(&self, job: &JobSpec, pump: &mut LogPump) -> Result<Option<std::path::PathBuf>, String> {
        let code_dir = match &job.code {
            Some(code) => Some(
                watched("fetching the code bundle", self.inner.code.ensure(code)).await.map_err(|e| e.to_string())?,
            ),
            None => None,
        };
        watched("making the image available", self.pull_image(&job.image, pump)).await?;
        Ok(code_dir)
    }

    /// Makes the image available, streaming pull progress into the log.
    async fn pull_image(&self, image: &str, pump: &mut LogPump) -> Result<(), String> {
        let (tx, mut rx) = mpsc::channel::<String>(64);
        let docker = self.inner.docker.clone();
        let image_owned = image.to_owned();
        // Aborted when dropped: a stop during the pull ends the engine request with it.
        let pull = AbortOnDropHandle::new(tokio::spawn(async move { docker.ensure_image(&image_owned, &tx).await }));
        while let Some(line) = rx.recv().await {
            pump.system_line(&line);
            pump.catch_up().await;
        }
        match pull.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(format!("image pull task failed: {e}")),
        }
    }

    /// The container of one attempt. `Err` is a setup failure for the job's log: the
    /// isolated network could not be set up (never run such a job on a looser network),
    /// the pipeline's uv cache folder could not be made, or the spec asks for a limit
    /// this runner does not allow.
    async fn container_spec(
        &self,
        job: &JobSpec,
        code_dir: Option<std::path::PathBuf>,
    ) -> Result<ContainerSpec, String> {
        // The spec's limits, the runner's defaults for those it leaves out: never none.
        let limits = self.inner.config.limits.apply(&job.resources)?;
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
            log_max_bytes: job.log_max_bytes,
            limits: Limits {
                memory_bytes: Some(limits.memory_bytes()),
                nano_cpus: Some(limits.nano_cpus()),
                pids: Some(limits.pids),
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

    /// Reports until the control plane answers for good (accepted, or rejected: the
    /// attempt is not ours any more). Re-sent with growing pauses, for as long as it
    /// takes: the report is on disk and the attempt keeps its lease meanwhile.
    async fn report_exit(&self, report: &ExitReport) {
        let mut delay = Duration::from_millis(500);
        loop {
            let reason = match self.inner.link.report_exit(report).await {
                Ok(ExitReply::Accepted) => {
                    tracing::info!(run_id = %report.attempt.run_id, "exit accepted");
                    return;
                }
                Ok(ExitReply::Rejected { reason }) => {
                    tracing::warn!(run_id = %report.attempt.run_id, %reason, "exit report rejected");
                    return;
                }
                Ok(ExitReply::RetryLater { reason }) => reason,
                Err(e) => e.to_string(),
            };
            tracing::warn!(run_id = %report.attempt.run_id, %reason, "exit report not accepted yet; retrying");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(MAX_REPORT_DELAY);
        }
    }
}

/// The container's exit code, once it has exited; `Err` when the engine cannot tell
/// (the container is gone, or the engine keeps failing).
async fn wait_for_exit(docker: Docker, id: String) -> Result<i64, String> {
    let mut delay = Duration::from_millis(500);
    let mut tries = 0;
    loop {
        tries += 1;
        match docker.wait(&id).await {
            Ok(code) => return Ok(code),
            Err(docker::Error::NotFound(_)) => return Err("the container disappeared from the engine".into()),
            Err(e) if tries >= WAIT_TRIES => return Err(format!("lost track of the container: {e}")),
            Err(e) => tracing::warn!(container = %id, error = %e, "waiting for the container failed; retrying"),
        }
        tokio::time::sleep(delay).await;
        delay *= 2;
    }
}

/// Resolves when the attempt stops being this runner's (the control plane gave it up,
/// or the fence passed); a cancel does not count: the container has exited already.
async fn no_longer_ours(stop: &mut StopSignal) {
    loop {
        if let Some(StopReason::Stale | StopReason::Shutdown) = *stop.borrow_and_update() {
            return;
        }
        if stop.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

/// Awaits the future if there is one; never resolves otherwise.
async fn optional<F: Future>(future: Option<F>) -> F::Output {
    match future {
        Some(future) => future.await,
        None => std::future::pending().await,
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

/// Supervision against the real Docker engine (`scripts/dev-deps.sh up`): whatever
/// the output stream or the log publisher do, a stop request still stops the container.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::attempts::Attempts;
    use crate::link::{LinkError, LogAck, Offer};
    use bytes::Bytes;
    use futures::stream::BoxStream;
    use shared::protocol::{CancelNotice, ClaimReply, CodeBundleRef, Heartbeat, HeartbeatReply, JobOffer};
    use tokio_util::sync::CancellationToken;

    /// A link whose log batches are sent but, with `acks: false`, never acknowledged
    /// (a broker that hangs); nothing else is used.
    struct Link {
        acks: bool,
    }

    fn unused<T>(what: &'static str) -> Result<T, LinkError> {
        Err(LinkError::new(what, "not used by this test"))
    }

    #[async_trait::async_trait]
    impl ControlLink for Link {
        async fn next_offers(&self, _pool: &str, _max: usize) -> Result<Vec<Offer>, LinkError> {
            unused("offers")
        }
        async fn claim_batch(&self, _runner_id: &str, _offers: &[JobOffer]) -> Result<Vec<ClaimReply>, LinkError> {
            unused("claim")
        }
        async fn heartbeat(&self, _beat: &Heartbeat) -> Result<HeartbeatReply, LinkError> {
            unused("heartbeat")
        }
        async fn report_exit(&self, _report: &ExitReport) -> Result<ExitReply, LinkError> {
            Ok(ExitReply::Accepted)
        }
        async fn cancel_notices(&self, _runner_id: &str) -> Result<BoxStream<'static, CancelNotice>, LinkError> {
            unused("cancel notices")
        }
        async fn fetch_bundle(&self, _code: &CodeBundleRef, _max_bytes: u64) -> Result<Vec<u8>, LinkError> {
            unused("code bundle")
        }
        fn max_log_payload(&self) -> usize {
            64 * 1024
        }
        async fn publish_log(&self, _at: &AttemptRef, _first_line: u64, _payload: Bytes) -> Result<LogAck, LinkError> {
            if self.acks { Ok(Box::pin(async { Ok(()) })) } else { Ok(Box::pin(std::future::pending())) }
        }
        async fn published_log(
            &self,
            _at: &AttemptRef,
        ) -> Result<BoxStream<'static, Result<(u64, Bytes), LinkError>>, LinkError> {
            unused("published log")
        }
    }

    struct Fixture {
        executor: Executor,
        attempts: attempts::Handle,
        _registry: tokio_util::sync::DropGuard,
        data_dir: std::path::PathBuf,
    }

    async fn fixture(acks: bool) -> Fixture {
        fixture_with(acks, &[]).await
    }

    /// A fixture whose runner has these settings besides its own data dir.
    async fn fixture_with(acks: bool, vars: &[(&str, &str)]) -> Fixture {
        let data_dir = std::env::temp_dir().join(format!("ff-exec-{}", uuid::Uuid::new_v4()));
        let dir = data_dir.display().to_string();
        let config = Config::from_source(&|name| match name {
            "RUNNER_DATA_DIR" => Some(dir.clone()),
            _ => vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string()),
        })
        .expect("config");
        let docker = Docker::connect().await.expect("the Docker engine (scripts/dev-deps.sh up)");
        let registry = Attempts::new();
        let attempts = registry.handle();
        let cancel = CancellationToken::new();
        tokio::spawn(registry.run(cancel.clone()));
        let fence = Fence::new(config.fence_settings(), None);
        fence.renewed(Instant::now(), Duration::from_secs(3600)).expect("a safe lease");
        let link: Arc<dyn ControlLink> = Arc::new(Link { acks });
        let executor = Executor::new(Arc::new(config), docker, link, attempts.clone(), fence);
        Fixture { executor, attempts, _registry: cancel.drop_guard(), data_dir }
    }

    fn spec(command: &str) -> ContainerSpec {
        ContainerSpec {
            name: format!("fastflow-exec-test-{}", uuid::Uuid::new_v4()),
            image: std::env::var("FASTFLOW_BUSYBOX_IMAGE").unwrap_or_else(|_| "fastflow-busybox:latest".into()),
            command: vec!["sh".into(), "-c".into(), command.into()],
            ..Default::default()
        }
    }

    fn attempt() -> AttemptRef {
        AttemptRef { run_id: uuid::Uuid::new_v4(), attempt: 1, fencing_token: 1 }
    }

    /// Runs `follow` on a started container, asks it to stop with `reason` after a
    /// moment, and returns how it ended (or panics if it did not end in time).
    async fn follow_then_stop(
        f: &Fixture,
        container_id: &str,
        output: docker::OutputStream,
        reason: StopReason,
    ) -> Ended {
        let at = attempt();
        let mut stop = f.attempts.register(at.clone()).await.expect("registered");
        let mut pump = LogPump::new(f.executor.link().clone(), &at, None);
        let stopper = async {
            tokio::time::sleep(Duration::from_millis(700)).await;
            f.attempts.stop(&at, reason);
        };
        let following = f.executor.follow(container_id, output, &mut pump, &mut stop, None);
        let (ended, ()) = tokio::time::timeout(Duration::from_secs(30), async { tokio::join!(following, stopper) })
            .await
            .expect("supervision ended the attempt in time");
        f.executor.docker().remove(container_id).await.expect("removed");
        let _ = std::fs::remove_dir_all(&f.data_dir);
        ended
    }

    #[tokio::test]
    async fn after_the_output_stream_breaks_a_cancel_still_stops_the_container() {
        let f = fixture(true).await;
        let started = f.executor.docker().start(&spec("echo hi; sleep 300")).await.expect("started");
        // The engine's stream, broken after its first chunk.
        let broken: docker::OutputStream = Box::pin(
            futures::stream::iter(vec![
                Ok(Output::Stdout(Bytes::from_static(b"hi\n"))),
                Err(docker::Error::WaitInterrupted("simulated broken stream".into())),
            ])
            .chain(futures::stream::pending()),
        );
        let id = started.container_id.clone();
        match follow_then_stop(&f, &id, broken, StopReason::Cancel { force: true }).await {
            Ended::Exited { container_id, cancelled: true, exit_code, .. } => {
                assert_eq!(container_id, id);
                assert_ne!(exit_code, 0, "killed");
            }
            _ => panic!("expected a cancelled exit"),
        }
    }

    #[tokio::test]
    async fn a_log_publisher_that_never_gets_an_ack_does_not_delay_the_fence() {
        // Every batch is sent and never acknowledged: the publisher falls behind at once
        // and the execution stops reading the (endless) output; the stop still acts.
        let f = fixture(false).await;
        let started = f.executor.docker().start(&spec("while true; do seq 1 1000; done")).await.expect("started");
        let docker::Started { container_id: id, output } = started;
        match follow_then_stop(&f, &id, output, StopReason::Stale).await {
            Ended::Abandoned { container_id } => assert_eq!(container_id.as_deref(), Some(id.as_str())),
            _ => panic!("expected the attempt to be abandoned"),
        }
    }

    /// `docker inspect` of one field, through the CLI (what an operator would check).
    fn inspect_field(container_id: &str, template: &str) -> String {
        let out = std::process::Command::new("docker")
            .args(["inspect", "--format", template, container_id])
            .output()
            .expect("run docker inspect");
        assert!(out.status.success(), "docker inspect: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn job(resources: shared::protocol::Resources) -> JobSpec {
        JobSpec {
            run_id: uuid::Uuid::new_v4(),
            attempt: 1,
            fencing_token: 1,
            pipeline_name: "limits".into(),
            image: std::env::var("FASTFLOW_BUSYBOX_IMAGE").unwrap_or_else(|_| "fastflow-busybox:latest".into()),
            command: vec!["sleep".into(), "30".into()],
            env: Default::default(),
            code: None,
            mount_uv_cache: false,
            timeout_seconds: None,
            resources,
            log_max_bytes: None,
            network: shared::protocol::NetworkPolicy::None,
        }
    }

    /// A spec without limits (`resources: null`, or an older control plane's "none")
    /// gets the runner's defaults on the engine, not an unlimited container; a spec's
    /// own limits are kept, the missing ones filled in.
    #[tokio::test]
    async fn a_spec_without_limits_gets_the_runners_defaults_on_the_engine() {
        let f = fixture_with(
            true,
            &[
                ("RUNNER_DEFAULT_MEMORY_MB", "256"),
                ("RUNNER_DEFAULT_CPU_MILLIS", "500"),
                ("RUNNER_DEFAULT_PIDS", "128"),
            ],
        )
        .await;
        let none = shared::protocol::Resources { memory_mb: None, cpu_millis: None, pids: None };
        let partly = shared::protocol::Resources { memory_mb: Some(64), ..none };
        let expected = [(none, ["268435456", "500000000", "128"]), (partly, ["67108864", "500000000", "128"])];
        for (resources, [memory, cpus, pids]) in expected {
            let spec = f.executor.container_spec(&job(resources), None).await.expect("a container spec");
            let started = f.executor.docker().start(&spec).await.expect("started");
            let id = started.container_id.clone();
            let inspected = [
                inspect_field(&id, "{{.HostConfig.Memory}}"),
                inspect_field(&id, "{{.HostConfig.NanoCpus}}"),
                inspect_field(&id, "{{.HostConfig.PidsLimit}}"),
                inspect_field(&id, "{{.HostConfig.MemorySwap}}"),
            ];
            f.executor.docker().stop(&id, Duration::ZERO).await.expect("stopped");
            f.executor.docker().remove(&id).await.expect("removed");
            assert_eq!(inspected, [memory, cpus, pids, memory], "{resources:?}");
        }
        // Asking for what the engine reads as "no limit" fails the setup.
        let zero = shared::protocol::Resources { pids: Some(0), ..none };
        let err = f.executor.container_spec(&job(zero), None).await.err().unwrap_or_default();
        assert!(err.contains("resources.pids"), "{err}");
        let _ = std::fs::remove_dir_all(&f.data_dir);
    }
}
