//! The single node's runner: the runner agent's own claim/execute loop
//! (`runner_agent::agent::serve`, the same executor code), linked in-process
//! through [`link::LocalLink`], the in-process twin of the NATS runner API
//! (`runner_api`): both are thin adapters over the same `runs` calls.
//!
//! On shutdown it stops claiming and leaves running containers alone: the next
//! start re-attaches to them by their labels, as after a crash, so stopping the
//! node never kills a job.

mod link;

use crate::bus::local::LocalBus;
use crate::context::Context;
use anyhow::Context as _;
use link::LocalLink;
use runner_agent::agent::{Options, Shutdown};
use runner_agent::docker::Docker;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// Runs the embedded runner until the context shuts down. `ready` fires once
/// leftover containers are re-attached (or Docker is not reachable yet).
pub async fn run(ctx: Context, bus: LocalBus, ready: oneshot::Sender<()>) -> anyhow::Result<()> {
    let shutdown = ctx.shutdown.clone();
    let Some(config) = ctx.config.embedded_runner.clone() else {
        anyhow::bail!("no embedded runner is configured");
    };
    let config = runner_agent::agent::prepare(config).context("embedded runner")?;
    let link = LocalLink::new(ctx, bus);
    let mut ready = Some(ready);
    // Docker may come up after the control plane: the API serves meanwhile.
    let docker = loop {
        match Docker::connect().await {
            Ok(docker) => break docker,
            Err(e) => {
                tracing::error!(error = %e, "embedded runner: cannot reach the Docker engine; retrying every 5 s");
                // Nothing to re-attach without Docker: let the sweeper start.
                if let Some(ready) = ready.take() {
                    let _ = ready.send(());
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                }
            }
        }
    };
    tracing::info!(runner_id = %config.runner_id, "embedded runner: using the Docker engine");
    // No draining: on shutdown it returns at once and leaves running containers
    // alone (see the module comment).
    let options = Options { config, docker, link: Arc::new(link), ready, watchdog: false };
    runner_agent::agent::serve(options, Shutdown::leave_running(shutdown)).await
}
