//! The control plane assembled: its state (shared by HTTP handlers, the runner
//! API and the sweeper) and its long-running tasks.

use crate::bus::Bus;
use crate::bus::local::{LocalBus, LocalLink};
use crate::bus::nats::NatsBus;
use crate::config::Config;
use crate::object_store::ObjectStore;
use crate::pipelines::Catalog;
use crate::store::Store;
use crate::{embedded_runner, http, runner_api, sweeper};
use anyhow::Context;
use std::sync::Arc;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Exit reports processed at once per control plane. Each archives a log (S3
/// multipart buffers, or file copies and fsyncs) and writes the end of the
/// attempt: a burst of exits must neither take every database connection (the
/// SQLite writer) from claims and heartbeats nor hold a buffer per exit. The
/// others wait their turn; runners wait up to 5 minutes for the reply.
pub const FINISH_CONCURRENCY: usize = 8;

/// Cheap to clone; everything a request or task needs.
#[derive(Clone)]
pub struct App {
    pub config: Arc<Config>,
    pub store: Store,
    pub bus: Bus,
    pub objects: ObjectStore,
    pub catalog: Catalog,
    /// Exit reports archived at once (see [`FINISH_CONCURRENCY`]).
    pub finishing: Arc<Semaphore>,
    /// Held while the process runs when it uses `DATA_DIR` (SQLite, live-log spool,
    /// embedded runner): those belong to one process.
    _data_dir_lock: Option<Arc<std::fs::File>>,
}

impl App {
    /// Opens the three seams (store, log store, bus) as configured, printing
    /// one line per seam saying which implementation is in use.
    pub async fn connect(config: Config) -> anyhow::Result<App> {
        let uses_data_dir = config.nats_url.is_none() || config.database_url.starts_with("sqlite://");
        let data_dir_lock = if uses_data_dir { Some(Arc::new(lock_data_dir(&config.data_dir)?)) } else { None };
        let store = Store::connect(&config.database_url).await.context("DATABASE_URL: cannot use the database")?;
        tracing::info!("store: {} at {}", store.kind(), crate::config::redact_url(&config.database_url));
        let bus = match &config.nats_url {
            Some(url) => {
                Bus::Nats(Box::new(NatsBus::connect(url).await.context("NATS_URL: cannot use NATS JetStream")?))
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
        let catalog = Catalog::new(config.pipelines_dir.clone(), config.worker_base_image.clone());
        Ok(App {
            config: Arc::new(config),
            store,
            bus,
            objects,
            catalog,
            finishing: Arc::new(Semaphore::new(FINISH_CONCURRENCY)),
            _data_dir_lock: data_dir_lock,
        })
    }

    /// Serves HTTP and the runner API (or runs the embedded runner) and sweeps
    /// until `shutdown` fires.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let listener = tokio::net::TcpListener::bind(self.config.bind_addr)
            .await
            .with_context(|| format!("BIND_ADDR: cannot listen on {}", self.config.bind_addr))?;
        tracing::info!(addr = %self.config.bind_addr, "listening on http://{}", self.config.bind_addr);
        let runners = match &self.bus {
            Bus::Nats(bus) => tokio::spawn(runner_api::serve(self.clone(), (**bus).clone(), shutdown.clone())),
            Bus::Local(bus) => {
                let link = LocalLink::new(self.clone(), bus.clone());
                let (ready, adopted) = tokio::sync::oneshot::channel();
                let task = tokio::spawn(embedded_runner::run(self.clone(), link, ready, shutdown.clone()));
                // Leftover containers are re-attached (their leases renewed) before
                // the sweeper may judge those leases.
                let _ = tokio::time::timeout(std::time::Duration::from_secs(60), adopted).await;
                task
            }
        };
        let sweeper = tokio::spawn(sweeper::run(self.clone(), shutdown.clone()));
        let served = http::serve(self, listener, shutdown.clone()).await;
        shutdown.cancel();
        runners.await.context("runner task")?.context("runners")?;
        sweeper.await.context("sweeper task")?;
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
