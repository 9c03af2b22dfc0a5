//! The runner assembled: connect, then claim, execute and heartbeat until shut down.
//!
//! Shutdown: the first signal stops claiming and waits for running attempts to
//! finish; a second one stops them.

use crate::active::{Active, StopReason};
use crate::code_cache::CodeCache;
use crate::config::Config;
use crate::docker::Docker;
use crate::execution::Executor;
use crate::{claimer, heartbeat, reattach};
use anyhow::Context;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

pub async fn run(
    config: Config,
    first_signal: CancellationToken,
    second_signal: CancellationToken,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("RUNNER_DATA_DIR: cannot create {}", config.data_dir.display()))?;
    std::fs::create_dir_all(&config.uv_cache_dir)
        .with_context(|| format!("UV_CACHE_DIR: cannot create {}", config.uv_cache_dir.display()))?;
    let mut config = config;
    config.load_or_persist_runner_id()?;
    // Docker needs absolute host paths for bind mounts.
    config.data_dir = std::fs::canonicalize(&config.data_dir).context("RUNNER_DATA_DIR")?;
    config.uv_cache_dir = std::fs::canonicalize(&config.uv_cache_dir).context("UV_CACHE_DIR")?;
    let config = Arc::new(config);

    let docker = Docker::connect().await.context("cannot reach the Docker engine")?;
    let nats = async_nats::ConnectOptions::new()
        .name(format!("fastflow-runner-{}", config.runner_id))
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(5))
        .connect(&config.nats_url)
        .await
        .with_context(|| format!("NATS_URL: cannot connect to {}", config.nats_url))?;
    let js = async_nats::jetstream::new(nats.clone());
    let active = Active::default();
    let executor = Executor {
        config: config.clone(),
        docker,
        nats: nats.clone(),
        js: js.clone(),
        code: CodeCache::new(config.data_dir.join("code"), js),
        active: active.clone(),
    };
    tracing::info!(runner_id = %config.runner_id, slots = config.concurrency, "runner ready");

    let slots = Arc::new(Semaphore::new(config.concurrency as usize));
    // Before claiming anything new and before the heartbeat loop: take over the
    // containers an earlier process of this runner left behind.
    reattach::adopt_orphans(&executor, &slots).await;

    let background = CancellationToken::new();
    let heartbeats = tokio::spawn(heartbeat::run(config.clone(), nats.clone(), active.clone(), background.clone()));
    let cancels = tokio::spawn(heartbeat::listen_for_cancels(
        config.runner_id.clone(),
        nats.clone(),
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
    background.cancel();
    let _ = tokio::join!(heartbeats, cancels);
    nats.flush().await.ok();
    Ok(())
}
