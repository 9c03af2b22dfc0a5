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

/// One lifecycle event of a job container, as `docker events` reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerEvent {
    /// The engine's clock, nanoseconds since the epoch: events of one engine are ordered by it.
    pub time_nano: u128,
    /// `create`, `start`, `die`, `destroy`, …
    pub action: String,
    pub run_id: String,
    pub attempt: String,
}

/// Records `create` and `die` events of job containers (those labelled
/// `fastflow-run-id`) from the moment it was started until it is dropped, with the
/// engine's timestamps: enough to check that one attempt's container was dead before
/// the next one's was created.
pub struct ContainerLifecycle {
    events: Arc<Mutex<Vec<ContainerEvent>>>,
    _child: Child,
    task: tokio::task::JoinHandle<()>,
}

impl ContainerLifecycle {
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
                "event=die",
                "--filter",
                "label=fastflow-run-id",
                "--format",
                "{{.TimeNano}} {{.Action}} {{index .Actor.Attributes \"fastflow-run-id\"}} {{index .Actor.Attributes \"fastflow-attempt\"}}",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run `docker events`: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let events = Arc::new(Mutex::new(Vec::new()));
        let seen = events.clone();
        let task = tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let mut fields = line.split_whitespace();
                let (Some(time), Some(action), Some(run_id), Some(attempt)) =
                    (fields.next(), fields.next(), fields.next(), fields.next())
                else {
                    continue;
                };
                let Ok(time_nano) = time.parse() else { continue };
                seen.lock().unwrap_or_else(|e| e.into_inner()).push(ContainerEvent {
                    time_nano,
                    action: action.to_owned(),
                    run_id: run_id.to_owned(),
                    attempt: attempt.to_owned(),
                });
            }
        });
        Self { events, _child: child, task }
    }

    /// The events of `run_id` so far, oldest first.
    pub fn of_run(&self, run_id: &str) -> Vec<ContainerEvent> {
        assert!(!self.task.is_finished(), "the `docker events` subscription ended early");
        let mut events: Vec<ContainerEvent> = self
            .events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|e| e.run_id == run_id)
            .cloned()
            .collect();
        events.sort_by_key(|e| e.time_nano);
        events
    }

    /// When `attempt`'s container of `run_id` had `action` (the first such event).
    pub fn time_of(&self, run_id: &str, attempt: u32, action: &str) -> Option<u128> {
        self.of_run(run_id)
            .into_iter()
            .find(|e| e.attempt == attempt.to_string() && e.action == action)
            .map(|e| e.time_nano)
    }
}

impl Drop for ContainerLifecycle {
    fn drop(&mut self) {
        self.task.abort();
    }
}
