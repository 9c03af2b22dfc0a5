//! The runner assembled: connect, then claim, execute and heartbeat until shut down.
//!
//! Shutdown: the first signal stops claiming and waits for running attempts to
//! finish; a second one stops them. The single-node control plane embeds the
//! same loop through [`serve`] with its in-process link.

use crate::active::{Active, StopReason};
use crate::code_cache::CodeCache;
use crate::config::Config;
use crate::docker::Docker;
use crate::execution::Executor;
use crate::link::ControlLink;
use crate::link::nats::NatsLink;
use crate::removals::Removals;
use crate::{claimer, heartbeat, reattach};
use anyhow::Context;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, oneshot};
use tokio_util::sync::CancellationToken;

/// How long shutdown waits for exited containers still being removed.
const REMOVAL_PATIENCE: Duration = Duration::from_secs(30);

/// The `runner-agent` process: NATS link, then [`serve`].
pub async fn run(
    config: Config,
    first_signal: CancellationToken,
    second_signal: CancellationToken,
) -> anyhow::Result<()> {
    let config = prepare(config)?;
    let docker = Docker::connect().await.context("cannot reach the Docker engine")?;
    let link = NatsLink::connect(&config.nats_url, &config.runner_id)
        .await
        .with_context(|| format!("NATS_URL: cannot connect to {}", config.nats_url))?;
    serve(config, docker, Arc::new(link), first_signal, second_signal, None).await
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

/// Re-attaches to this runner's leftover containers, then claims and executes
/// until `first_signal` (drain) and `second_signal` (stop running attempts).
/// `ready` fires once the leftovers are adopted and claiming starts.
pub async fn serve(
    config: Arc<Config>,
    docker: Docker,
    link: Arc<dyn ControlLink>,
    first_signal: CancellationToken,
    second_signal: CancellationToken,
    ready: Option<oneshot::Sender<()>>,
) -> anyhow::Result<()> {
    let active = Active::default();
    let executor = Executor {
        config: config.clone(),
        docker: docker.clone(),
        link: link.clone(),
        code: CodeCache::new(config.data_dir.join("code"), link.clone()),
        active: active.clone(),
        removals: Removals::new(docker.clone(), config.concurrency as usize),
    };
    let removals = executor.removals.clone();
    tracing::info!(runner_id = %config.runner_id, pool = %config.pool, slots = config.concurrency, "runner ready");

    let slots = Arc::new(Semaphore::new(config.concurrency as usize));
    // Before claiming anything new and before the heartbeat loop: take over the
    // containers an earlier process of this runner left behind.
    reattach::adopt_orphans(&executor, &slots).await;
    if let Some(ready) = ready {
        let _ = ready.send(());
    }

    let background = CancellationToken::new();
    let heartbeats = tokio::spawn(heartbeat::run(config.clone(), link.clone(), active.clone(), background.clone()));
    let cancels = tokio::spawn(heartbeat::listen_for_cancels(
        config.runner_id.clone(),
        link.clone(),
        active.clone(),
        background.clone(),
    ));
    claimer::run(executor, slots.clone(), first_signal).await;

    tracing::info!(running = active.len(), "draining: no new claims; waiting for running attempts");
    let all = config.concurrency;
    tokio::select! {
        _ = slots.acquire_many(all) => {}
        _ = second_signal.cancelled() => {
            tracing::warn!("second signal: stopping running attempts");
            active.stop_all(StopReason::Cancel { force: false });
            let _ = tokio::time::timeout(config.stop_grace + Duration::from_secs(30), slots.acquire_many(all)).await;
        }
    }
    if !removals.finish(REMOVAL_PATIENCE).await {
        tracing::warn!(
            left = removals.in_background(),
            "containers still being removed at exit; the next start removes them"
        );
    }
    background.cancel();
    let _ = tokio::join!(heartbeats, cancels);
    link.flush().await;
    Ok(())
}
