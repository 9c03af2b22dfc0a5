//! Start-up, the composition root: connect the seams as configured, lock
//! `DATA_DIR`, build the [`Context`], then spawn the long-running parts (runner
//! API or embedded runner, sweeper), serve HTTP, and shut all of it down in order.
//!
//! Architecture invariant: nothing imports this module but `main.rs` (and tests);
//! it is the only place that knows every layer.

use crate::auth::{Authenticator, bootstrap};
use crate::bus::Bus;
use crate::bus::local::LocalBus;
use crate::bus::nats::NatsBus;
use crate::config::Config;
use crate::context::Context;
use crate::http::stream_slots::{StreamLimits, StreamSlots};
use crate::object_store::ObjectStore;
use crate::store::Store;
use crate::{embedded_runner, http, runner_api, runner_identity, sweeper};
use anyhow::Context as _;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long shutdown waits for exit reports and archives still in flight.
const TASK_PATIENCE: Duration = Duration::from_secs(60);
/// How long start-up waits for the embedded runner to re-attach to leftover containers.
const ADOPT_PATIENCE: Duration = Duration::from_secs(60);

/// A connected control plane, not yet serving.
pub struct ControlPlane {
    ctx: Context,
    /// One per process: its credential cache serves every request.
    auth: Authenticator,
    /// One per process: the SSE limits count this process's streams.
    streams: StreamSlots,
    /// Held while the process runs when it uses `DATA_DIR` (SQLite, live-log spool,
    /// embedded runner): those belong to one process.
    _data_dir_lock: Option<std::fs::File>,
}

impl ControlPlane {
    /// Opens the three seams (store, log store, bus) as configured, printing
    /// one line per seam saying which implementation is in use.
    pub async fn connect(config: Config) -> anyhow::Result<ControlPlane> {
        let uses_data_dir = config.nats_url.is_none() || config.database_url.starts_with("sqlite://");
        let data_dir_lock = if uses_data_dir { Some(lock_data_dir(&config.data_dir)?) } else { None };
        let store = Store::connect(&config.database_url).await.context("DATABASE_URL: cannot use the database")?;
        tracing::info!("store: {} at {}", store.kind(), crate::config::redact_url(&config.database_url));
        let bus = match &config.nats_url {
            Some(url) => {
                let nats = config.nats.as_ref().context("NATS settings missing")?;
                if !nats.settings.uses_tls(url) {
                    tracing::warn!("NATS_ALLOW_PLAINTEXT=1: the NATS connection is not encrypted");
                }
                Bus::Nats(Box::new(
                    NatsBus::connect(url, &nats.settings, config.stream_bounds)
                        .await
                        .context("NATS_URL: cannot use NATS JetStream")?,
                ))
            }
            None => Bus::Local(
                LocalBus::open(config.data_dir.join("live-logs")).context("DATA_DIR: cannot keep live logs")?,
            ),
        };
        tracing::info!("bus: {}", bus.describe());
        let objects = match &config.s3 {
            Some(s3) => ObjectStore::connect(s3).await.context("S3_ENDPOINT: cannot use the object store")?,
            None => ObjectStore::local(config.logs_dir.clone()).context("LOGS_DIR: cannot store logs there")?,
        };
        tracing::info!("log store: {}", objects.describe());
        let auth = Authenticator::new(store.clone(), config.sessions);
        let streams =
            StreamSlots::new(StreamLimits { total: config.sse_max_streams, per_user: config.sse_max_streams_per_user });
        let ctx = Context::new(config, store, bus, objects);
        Ok(ControlPlane { ctx, auth, streams, _data_dir_lock: data_dir_lock })
    }

    /// The shared state, e.g. for router tests that serve no socket.
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// What the HTTP router serves from (router tests send requests to it directly).
    pub fn api_state(&self) -> http::ApiState {
        http::ApiState { ctx: self.ctx.clone(), auth: self.auth.clone(), streams: self.streams.clone() }
    }

    /// The single node's zero-config start: with no user at all, create `admin` with
    /// a random password in `DATA_DIR` (the log names the file, never the password).
    /// A distributed deployment creates its first admin with `control-plane user create`.
    async fn ensure_a_user(&self) -> anyhow::Result<()> {
        if matches!(self.ctx.bus, Bus::Local(_)) {
            bootstrap::ensure_initial_admin(&self.ctx.store, &self.ctx.config.data_dir)
                .await
                .context("cannot create the first admin")?;
        } else if self.ctx.store.count_users().await.context("cannot count users")? == 0 {
            tracing::warn!(
                "no user exists yet: create the first admin with \
                 `control-plane user create NAME --role admin` (same DATABASE_URL)"
            );
        }
        Ok(())
    }

    /// Serves HTTP and the runner API (or runs the embedded runner) and sweeps
    /// until `shutdown` fires; then stops taking work, ends log streams and waits
    /// for exit reports in flight.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        self.ensure_a_user().await?;
        let ctx = self.ctx.clone();
        let api = self.api_state();
        let addr = ctx.config.bind_addr;
        let listener =
            tokio::net::TcpListener::bind(addr).await.with_context(|| format!("BIND_ADDR: cannot listen on {addr}"))?;
        tracing::info!(%addr, "listening on http://{addr}");
        // One token for everything the context spawned or serves.
        let forward = ctx.shutdown.clone();
        tokio::spawn(async move {
            shutdown.cancelled().await;
            forward.cancel();
        });
        let runners = match &ctx.bus {
            Bus::Nats(bus) => {
                let callout = runner_identity::callout::serve(ctx.clone(), bus.client().clone());
                let api = runner_api::serve(ctx.clone(), (**bus).clone());
                tokio::spawn(async move {
                    tokio::try_join!(async { callout.await.context("NATS auth callout") }, api)?;
                    Ok(())
                })
            }
            Bus::Local(bus) => {
                let (ready, adopted) = tokio::sync::oneshot::channel();
                let task = tokio::spawn(embedded_runner::run(ctx.clone(), bus.clone(), ready));
                // Leftover containers are re-attached (their leases renewed) before
                // the sweeper may judge those leases.
                let _ = tokio::time::timeout(ADOPT_PATIENCE, adopted).await;
                task
            }
        };
        let sweeper = tokio::spawn(sweeper::run(ctx.clone()));
        let served = http::serve(api, listener, ctx.shutdown.clone()).await;
        ctx.shutdown.cancel();
        runners.await.context("runner task")?.context("runners")?;
        sweeper.await.context("sweeper task")?;
        if !ctx.wait_for_tasks(TASK_PATIENCE).await {
            tracing::warn!(left = ctx.tasks_running(), "shutdown: work still in flight was cut off");
        }
        served.context("HTTP server")
    }
}

/// Locks `DATA_DIR/control-plane.lock` (an advisory lock the OS drops when the process
/// dies, so a crash never leaves it stale). A second process on the same directory would
/// run a second embedded runner with the same id over the same database.
pub fn lock_data_dir(dir: &std::path::Path) -> anyhow::Result<std::fs::File> {
    use std::io::Write;
    std::fs::create_dir_all(dir).with_context(|| format!("DATA_DIR: cannot create {}", dir.display()))?;
    let path = dir.join("control-plane.lock");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("DATA_DIR: cannot open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {
            // For the message a second process prints; the lock itself is what counts.
            file.set_len(0).ok();
            let _ = write!(file, "{}", std::process::id());
            Ok(file)
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            anyhow::bail!(
                "DATA_DIR {} is in use by another control-plane (pid {}); stop it or give this one another DATA_DIR",
                dir.display(),
                holder.trim()
            )
        }
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("DATA_DIR: cannot lock {}", path.display()))
        }
    }
}
