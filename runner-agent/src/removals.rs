//! Removal of exited job containers without holding the attempt's slot.
//!
//! The engine takes ~30 ms to remove a container (unmounting and deleting its
//! writable layer): time the next claimed job need not wait for, since the
//! container's log is archived by then. At most as many removals run in the
//! background as the runner has slots; beyond that an attempt removes its own
//! container while it still holds its slot, so exited containers left around
//! stay bounded even when the engine is slow. Shutdown waits for the pending ones.

use crate::docker::Docker;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

#[derive(Clone)]
pub struct Removals {
    docker: Docker,
    pending: TaskTracker,
    room: Arc<Semaphore>,
}

impl Removals {
    /// `max_in_background`: removals running at once off their slots (the runner's slot count).
    pub fn new(docker: Docker, max_in_background: usize) -> Self {
        Self { docker, pending: TaskTracker::new(), room: Arc::new(Semaphore::new(max_in_background.max(1))) }
    }

    /// Removes the container: in the background when there is room (returns at once),
    /// otherwise before returning.
    pub async fn remove(&self, container_id: String) {
        match self.room.clone().try_acquire_owned() {
            Ok(permit) => {
                let docker = self.docker.clone();
                self.pending.spawn(async move {
                    remove_logging(&docker, &container_id).await;
                    drop(permit);
                });
            }
            Err(_) => self.remove_now(&container_id).await,
        }
    }

    /// Removes the container before returning (a failure is logged: the container is
    /// found by its labels at the next start).
    pub async fn remove_now(&self, container_id: &str) {
        remove_logging(&self.docker, container_id).await;
    }

    /// How many removals are still running in the background.
    pub fn in_background(&self) -> usize {
        self.pending.len()
    }

    /// Waits (at most `patience`) for the background removals; `false` if some were
    /// still running. A container left behind is found by its labels at the next start.
    pub async fn finish(&self, patience: Duration) -> bool {
        self.pending.close();
        tokio::time::timeout(patience, self.pending.wait()).await.is_ok()
    }
}

async fn remove_logging(docker: &Docker, container_id: &str) {
    if let Err(e) = docker.remove(container_id).await {
        tracing::warn!(container = %container_id, error = %e, "could not remove the container");
    }
}
