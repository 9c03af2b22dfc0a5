//! The attempts this runner holds right now, and how to tell one to stop.

use shared::protocol::AttemptRef;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::watch;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// A user cancelled the run: stop (gracefully unless forced) and report.
    Cancel { force: bool },
    /// The control plane says this runner no longer holds the attempt: stop and forget it.
    Stale,
    /// The runner is shutting down hard.
    Shutdown,
}

struct Entry {
    attempt: AttemptRef,
    stop: watch::Sender<Option<StopReason>>,
}

#[derive(Clone, Default)]
pub struct Active {
    inner: Arc<Mutex<HashMap<Uuid, Entry>>>,
}

impl Active {
    fn lock(&self) -> MutexGuard<'_, HashMap<Uuid, Entry>> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers an attempt; the receiver learns when it must stop.
    pub fn insert(&self, attempt: AttemptRef) -> watch::Receiver<Option<StopReason>> {
        let (stop, rx) = watch::channel(None);
        self.lock().insert(attempt.run_id, Entry { attempt, stop });
        rx
    }

    pub fn remove(&self, run_id: Uuid) {
        self.lock().remove(&run_id);
    }

    pub fn contains(&self, run_id: Uuid) -> bool {
        self.lock().contains_key(&run_id)
    }

    pub fn snapshot(&self) -> Vec<AttemptRef> {
        self.lock().values().map(|e| e.attempt.clone()).collect()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Asks the execution of this exact attempt to stop (a stale token is ignored).
    pub fn stop(&self, attempt: &AttemptRef, reason: StopReason) {
        if let Some(entry) = self.lock().get(&attempt.run_id)
            && entry.attempt == *attempt
        {
            entry.stop.send_if_modified(|current| {
                let first = current.is_none();
                if first {
                    *current = Some(reason);
                }
                first
            });
        }
    }

    pub fn stop_all(&self, reason: StopReason) {
        for entry in self.lock().values() {
            let _ = entry.stop.send(Some(reason));
        }
    }
}
