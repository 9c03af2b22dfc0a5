//! The runner assembled: connect, then claim, execute and heartbeat until shut down.
//!
//! Shutdown ([`Shutdown`]): the first signal stops claiming and waits for running
//! attempts to finish; a second one stops them. The single-node control plane embeds
//! the same loop through [`serve`] with its in-process link, and leaves running
//! attempts alone when it stops.
//!
//! Each long-running part is a service with `run(self, cancel)`: the attempts
//! registry (`attempts`), heartbeats and the cancel listener (`heartbeat`), and the
//! claimer (`claimer`); executions talk to the registry through its handle.

use crate::attempts::{Attempts, StopReason};
use crate::claimer::Claimer;
use crate::config::Config;
use crate::docker::Docker;
use crate::enrollment;
use crate::execution::Executor;
use crate::fence::Fence;
use crate::heartbeat::{CancelListener, Heartbeats};
use crate::link::ControlLink;
use crate::link::nats::NatsLink;
use crate::reattach;
use crate::watchdog::{self, DeadlineFile};
use anyhow::Context;
use shared::nats_settings::NatsSettings;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, oneshot};
use tokio_util::sync::CancellationToken;

/// How long shutdown waits for exited containers still being removed.
const REMOVAL_PATIENCE: Duration = Duration::from_secs(30);

/// What [`serve`] runs with.
pub struct Options {
    pub config: Arc<Config>,
    pub docker: Docker,
    pub link: Arc<dyn ControlLink>,
    /// Fired once the leftovers of an earlier process are adopted and claiming starts.
    pub ready: Option<oneshot::Sender<()>>,
    /// Run the watchdog process beside the runner (see `watchdog`): a `runner-agent`
    /// process. Not the single node: frozen, it freezes its control plane too.
    pub watchdog: bool,
}

/// How [`serve`] ends.
pub struct Shutdown {
    /// Stop claiming.
    pub drain: CancellationToken,
    /// Stop the running attempts (after `drain`).
    pub stop: CancellationToken,
    /// What happens to running attempts on `drain`.
    pub attempts: OnDrain,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDrain {
    /// Wait for them to finish (until `stop`), and for their containers' removal.
    Finish,
    /// Return at once and leave their containers running: the next start re-attaches
    /// to them by their labels, as after a crash (the single node).
    LeaveRunning,
}

impl Shutdown {
    /// The runner process: drain on `drain` (first signal), stop attempts on `stop` (second).
    pub fn drain_then_stop(drain: CancellationToken, stop: CancellationToken) -> Self {
        Self { drain, stop, attempts: OnDrain::Finish }
    }

    /// Return as soon as `leave` fires; running containers keep running.
    pub fn leave_running(leave: CancellationToken) -> Self {
        Self { drain: leave, stop: CancellationToken::new(), attempts: OnDrain::LeaveRunning }
    }
}

/// The `runner-agent` process: NATS link, then [`serve`].
pub async fn run(config: Config, shutdown: Shutdown) -> anyhow::Result<()> {
    let nats = NatsSettings::from_source(&config.nats_url, &|name| std::env::var(name).ok())?;
    if !nats.uses_tls(&config.nats_url) {
        tracing::warn!(
            "NATS_ALLOW_PLAINTEXT=1: the NATS connection is not encrypted (credentials and job specs travel in clear)"
        );
    }
    let config = prepare(config)?;
    let wanted = enrollment::Wanted {
        data_dir: &config.data_dir,
        registration_token: config.registration_token.as_deref(),
        runner_id: &config.runner_id,
        runner_id_from_env: config.runner_id_from_env,
        pool: config.pool_from_env.then_some(config.pool.as_str()),
    };
    let creds = enrollment::load_or_enroll(&config.nats_url, &nats, &wanted).await?;
    let config = if creds.runner_id != config.runner_id || creds.pool != config.pool {
        if !config.runner_id_from_env {
            // The watchdog reads the id from this file: it must name the enrolled one.
            config.persist_runner_id(&creds.runner_id)?;
        }
        let mut c = (*config).clone();
        c.runner_id = creds.runner_id.clone();
        c.pool = creds.pool.clone();
        Arc::new(c)
    } else {
        config
    };
    let docker = Docker::connect().await.context("cannot reach the Docker engine")?;
    let link = NatsLink::connect(&config.nats_url, &nats, &creds).await.with_context(|| {
        format!("NATS_URL: cannot connect to {}", shared::service_url::redact_url(&config.nats_url))
    })?;
    serve(Options { config, docker, link: Arc::new(link), ready: None, watchdog: true }, shutdown).await
}

/// Creates the data and uv cache folders, settles the runner id (persisted in
/// the data folder) and makes the paths absolute (Docker bind mounts need that).
pub fn prepare(config: Config) -> anyhow::Result<Arc<Config>> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("RUNNER_DATA_DIR: cannot create {}", config.data_dir.display()))?;
    std::fs::create_dir_all(&config.uv_cache_dir)
        .with_context(|| format!("UV_CACHE_DIR: cannot create {}", config.uv_cache_dir.display()))?;
    let mut config = config;
    config.load_or_persist_runner_id()?;
    config.data_dir = std::fs::canonicalize(&config.data_dir).context("RUNNER_DATA_DIR")?;
    config.uv_cache_dir = std::fs::canonicalize(&config.uv_cache_dir).context("UV_CACHE_DIR")?;
    Ok(Arc::new(config))
}

/// Re-attaches to this runner's leftover containers, then claims and executes until
/// shut down (see [`Shutdown`]); returns when done.
pub async fn serve(options: Options, shutdown: Shutdown) -> anyhow::Result<()> {
    match shutdown.attempts {
        OnDrain::Finish => serve_until_drained(options, &shutdown).await,
        OnDrain::LeaveRunning => {
            // Dropping the loop cancels its services; executions already spawned go on.
            tokio::select! {
                biased;
                _ = shutdown.drain.cancelled() => {
                    tracing::info!("runner stopped; running jobs keep running and are re-attached at the next start");
                    Ok(())
                }
                served = serve_until_drained(options, &shutdown) => served,
            }
        }
    }
}

async fn serve_until_drained(options: Options, shutdown: &Shutdown) -> anyhow::Result<()> {
    let Options { config, docker, link, ready, watchdog } = options;
    // Cancels every service below when this function returns or is dropped.
    let services = CancellationToken::new();
    let _services = services.clone().drop_guard();
    let registry = Attempts::new();
    let attempts = registry.handle();
    let registry = tokio::spawn(registry.run(services.clone()));
    let deadline_file = watchdog.then(|| DeadlineFile::in_dir(&config.data_dir));
    let fence = Fence::new(config.fence_settings(), deadline_file.clone());
    if let Some(until) = deadline_file.as_ref().and_then(DeadlineFile::remaining) {
        // An earlier process's leases may still be running: its deadline covers the
        // attempts re-attached below until the first renewal.
        fence.resume_from(until);
    }
    // Stopped (killed) last, after the services: it guards running jobs to the end.
    let guard = CancellationToken::new();
    let watchdog = watchdog
        .then(|| tokio::spawn(watchdog::supervise(config.runner_id.clone(), config.data_dir.clone(), guard.clone())));
    let executor = Executor::new(config.clone(), docker, link.clone(), attempts.clone(), fence.clone());
    // Before the first claim, so a host without the firewall tools says so at once; the
    // isolated jobs themselves try again (and fail with this reason) until it works.
    if let Err(e) = executor.network().ensure().await {
        tracing::error!(error = %e, "isolated job network unavailable: jobs with network = \"isolated\" (the default) will fail");
    }
    tracing::info!(runner_id = %config.runner_id, pool = %config.pool, slots = config.concurrency, "runner ready");

    let slots = Arc::new(Semaphore::new(config.concurrency as usize));
    let heartbeats = Heartbeats::new(config.clone(), link.clone(), attempts.clone(), fence.clone());
    // Before claiming anything new and before the heartbeat loop: take over the
    // containers an earlier process of this runner left behind. Its first heartbeat
    // also checks the fence settings against the control plane's lease.
    if let Err(e) = reattach::adopt_orphans(&executor, &heartbeats, &slots).await {
        guard.cancel();
        return Err(anyhow::Error::new(e).context("refusing to start"));
    }
    if let Some(ready) = ready {
        let _ = ready.send(());
    }

    let heartbeats = tokio::spawn(heartbeats.run(services.clone()));
    let cancels = tokio::spawn(
        CancelListener::new(config.runner_id.clone(), link.clone(), attempts.clone()).run(services.clone()),
    );
    Claimer::new(executor.clone(), slots.clone()).run(shutdown.drain.clone()).await;

    let running = attempts.count().await;
    tracing::info!(running, "draining: no new claims; waiting for running attempts");
    let all = config.concurrency;
    tokio::select! {
        _ = slots.acquire_many(all) => {}
        _ = shutdown.stop.cancelled() => {
            tracing::warn!("second signal: stopping running attempts");
            attempts.stop_all(StopReason::Cancel { force: false });
            let _ = tokio::time::timeout(config.stop_grace + Duration::from_secs(30), slots.acquire_many(all)).await;
        }
    }
    let removals = executor.removals();
    if !removals.finish(REMOVAL_PATIENCE).await {
        tracing::warn!(
            left = removals.in_background(),
            "containers still being removed at exit; the next start removes them"
        );
    }
    let left = attempts.count().await;
    services.cancel();
    let _ = tokio::join!(heartbeats, cancels, registry);
    link.flush().await;
    if left == 0 {
        // Nothing left running: the watchdog may end with this process.
        fence.release();
    }
    guard.cancel();
    if let Some(watchdog) = watchdog {
        let _ = watchdog.await;
    }
    Ok(())
}
