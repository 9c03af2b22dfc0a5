//! The control plane's shared state: its seams (store, bus, log store), the pipeline
//! catalog, the settings, and the tasks it has spawned. Every domain function (`runs`)
//! and every adapter (HTTP, runner API, embedded runner, sweeper) takes a `Context`.
//!
//! Architecture invariant: this module starts nothing and imports only the seams and
//! the settings; connecting and spawning is `startup`'s job.

use crate::bus::Bus;
use crate::config::Config;
use crate::object_store::ObjectStore;
use crate::pipelines::Catalog;
use crate::store::Store;
use std::future::Future;
use std::sync::Arc;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Exit reports processed at once per control plane. Each archives a log (S3
/// multipart buffers, or file copies and fsyncs) and writes the end of the
/// attempt: a burst of exits must neither take every database connection (the
/// SQLite writer) from claims and heartbeats nor hold a buffer per exit. The
/// others wait their turn; runners wait up to 5 minutes for the reply.
pub const FINISH_CONCURRENCY: usize = 8;

/// Everything a request or task needs; a handle to one [`Shared`] per control plane, so
/// a clone is one reference count (the HTTP layer clones it several times a request,
/// and copying the seams' handles each time once cost a tenth of a read's CPU).
#[derive(Clone)]
pub struct Context(Arc<Shared>);

impl std::ops::Deref for Context {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What a [`Context`] shares.
pub struct Shared {
    pub config: Arc<Config>,
    pub store: Store,
    pub bus: Bus,
    pub objects: ObjectStore,
    pub catalog: Catalog,
    /// Exit reports archived at once (see [`FINISH_CONCURRENCY`]).
    pub finishing: Arc<Semaphore>,
    /// Fires when the control plane shuts down: long-lived work (log streams,
    /// back-off timers) ends on it.
    pub shutdown: CancellationToken,
    /// Work spawned on behalf of a request or a runner message; shutdown waits for
    /// it, so an exit report being archived is finished, not cut off.
    tasks: TaskTracker,
    /// When this replica last could not reach the store (see [`StoreOutages`]).
    pub outages: StoreOutages,
}

/// When this replica last found the store unreachable: a failed sweep, or a
/// heartbeat it could only answer provisionally (runners keep their jobs then).
/// Lease expiry waits until the store has been reachable for one whole lease
/// since, so runners can renew what they kept first. Starts as if an outage had
/// just ended: a new replica cannot know whether one did.
#[derive(Clone)]
pub struct StoreOutages {
    last: Arc<std::sync::Mutex<std::time::Instant>>,
}

impl Default for StoreOutages {
    fn default() -> Self {
        StoreOutages { last: Arc::new(std::sync::Mutex::new(std::time::Instant::now())) }
    }
}

impl StoreOutages {
    /// The store could not be reached just now.
    pub fn seen(&self) {
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = std::time::Instant::now();
    }

    /// Whether the store has been reachable for at least `span`.
    pub fn quiet_for(&self, span: std::time::Duration) -> bool {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).elapsed() >= span
    }
}

impl Context {
    pub fn new(config: Config, store: Store, bus: Bus, objects: ObjectStore) -> Context {
        let catalog = Catalog::new(config.pipelines_dir.clone(), config.worker_base_image.clone());
        Context(Arc::new(Shared {
            config: Arc::new(config),
            store,
            bus,
            objects,
            catalog,
            finishing: Arc::new(Semaphore::new(FINISH_CONCURRENCY)),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            outages: StoreOutages::default(),
        }))
    }

    /// Spawns work that shutdown waits for (see [`Context::wait_for_tasks`]).
    pub fn spawn<F>(&self, task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tasks.spawn(task)
    }

    /// Waits up to `patience` for the spawned work to end; `false` if some was still
    /// running then.
    pub async fn wait_for_tasks(&self, patience: std::time::Duration) -> bool {
        self.tasks.close();
        tokio::time::timeout(patience, self.tasks.wait()).await.is_ok()
    }

    /// Spawned work still running.
    pub fn tasks_running(&self) -> usize {
        self.tasks.len()
    }
}
