//! Counting container creations with a live `docker events` subscription.
//!
//! `docker events --since/--until` replays dockerd's in-memory event buffer, which
//! holds only the last 256 events: when other suites create containers on the same
//! engine at the same time, a run's `create` event can drop out of it before it is
//! counted. A subscription that is open while the runs execute sees every event.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::docker::docker_now;

/// Counts `create` events of containers labelled `fastflow-run-id`, per run id,
/// from the moment it was started until it is dropped.
pub struct ContainerCreations {
    counts: Arc<Mutex<BTreeMap<String, usize>>>,
    _child: Child,
    task: tokio::task::JoinHandle<()>,
}

impl ContainerCreations {
    /// Subscribes now (replaying from this instant, so nothing created after the
    /// call is missed while the subscription connects).
    pub async fn start() -> Self {
        let since = docker_now();
        let mut child = Command::new("docker")
            .args([
                "events",
                "--since",
                &since,
                "--filter",
                "type=container",
                "--filter",
                "event=create",
                "--filter",
                "label=fastflow-run-id",
                "--format",
                "{{index .Actor.Attributes \"fastflow-run-id\"}}",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run `docker events`: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let counts = Arc::new(Mutex::new(BTreeMap::new()));
        let seen = counts.clone();
        let task = tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let run_id = line.trim();
                if !run_id.is_empty() {
                    *seen.lock().unwrap_or_else(|e| e.into_inner()).entry(run_id.to_string()).or_insert(0) += 1;
                }
            }
        });
        Self { counts, _child: child, task }
    }

    /// Containers created for `run_id` so far, after `settle` for late events.
    pub async fn count(&self, run_id: &str, settle: Duration) -> usize {
        assert!(!self.task.is_finished(), "the `docker events` subscription ended early");
        tokio::time::sleep(settle).await;
        self.counts.lock().unwrap_or_else(|e| e.into_inner()).get(run_id).copied().unwrap_or(0)
    }
}

impl Drop for ContainerCreations {
    fn drop(&mut self) {
        self.task.abort();
    }
}
