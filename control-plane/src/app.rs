//! The control plane assembled: its state (shared by HTTP handlers, the runner
//! API and the sweeper) and its long-running tasks.

use crate::bus::Bus;
use crate::config::Config;
use crate::object_store::ObjectStore;
use crate::pipelines::Catalog;
use crate::store::Store;
use crate::{http, runner_api, sweeper};
use anyhow::Context;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Cheap to clone; everything a request or task needs.
#[derive(Clone)]
pub struct App {
    pub config: Arc<Config>,
    pub store: Store,
    pub bus: Bus,
    pub objects: ObjectStore,
    pub catalog: Catalog,
}

impl App {
    /// Connects to Postgres (running migrations), NATS and the object store.
    pub async fn connect(config: Config) -> anyhow::Result<App> {
        let store = Store::connect(&config.database_url).await.context("DATABASE_URL: cannot use the database")?;
        tracing::info!("store: postgres");
        let bus = Bus::connect(&config.nats_url).await.context("NATS_URL: cannot use NATS JetStream")?;
        tracing::info!(url = %config.nats_url, "bus: nats jetstream");
        let objects = ObjectStore::connect(&config.s3).await.context("S3_ENDPOINT: cannot use the object store")?;
        tracing::info!(bucket = %config.s3.bucket, "log store: s3");
        let catalog = Catalog::new(config.pipelines_dir.clone(), config.worker_base_image.clone());
        Ok(App { config: Arc::new(config), store, bus, objects, catalog })
    }

    /// Serves HTTP and the runner API and sweeps until `shutdown` fires.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let listener = tokio::net::TcpListener::bind(self.config.bind_addr)
            .await
            .with_context(|| format!("BIND_ADDR: cannot listen on {}", self.config.bind_addr))?;
        tracing::info!(addr = %self.config.bind_addr, "listening");
        let runner_api = tokio::spawn(runner_api::serve(self.clone(), shutdown.clone()));
        let sweeper = tokio::spawn(sweeper::run(self.clone(), shutdown.clone()));
        let served = http::serve(self, listener, shutdown.clone()).await;
        shutdown.cancel();
        runner_api.await.context("runner API task")?.context("runner API")?;
        sweeper.await.context("sweeper task")?;
        served.context("HTTP server")
    }
}
