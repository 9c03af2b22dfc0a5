//! The fence's backstop: a separate process (`runner-agent watchdog`) that kills
//! this runner's containers once the fence deadline has passed.
//!
//! The runner stops its own jobs at the fence (`fence`), but a runner that is
//! frozen (SIGSTOP, a stalled VM) or killed cannot; its containers would keep
//! running after the control plane gave their attempts to another runner. The
//! runner writes each new deadline to `RUNNER_DATA_DIR/fence-deadline` as
//! `CLOCK_BOOTTIME` milliseconds (one clock for every process on the host, not
//! moved by NTP, still counting while the machine sleeps); the watchdog reads it
//! four times a second and, past it, SIGKILLs every running container labelled
//! with this runner's id.
//!
//! One watchdog per data dir (a lock file): a restarted runner finds the previous
//! process's watchdog still guarding the old deadline and lets it go on; it reads
//! the same file, which the new process updates after its first renewal. A
//! watchdog whose runner is gone exits once nothing of the runner is running and
//! the deadline has passed (or the runner released it on a clean stop); the
//! runner starts a new one whenever its own is not running.

use crate::docker::Docker;
use crate::execution::label;
use crate::fence::Left;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The deadline file's name in the data dir.
pub const DEADLINE_FILE: &str = "fence-deadline";
const LOCK_FILE: &str = "watchdog.lock";
/// How often the watchdog reads the deadline.
const POLL: Duration = Duration::from_millis(250);
/// The watchdog acts this long after the deadline, so that normally the runner itself
/// stops its jobs first (and says so in their logs). Part of the fence margin.
const SLACK: Duration = Duration::from_millis(500);
/// Exit status of a watchdog that found another one guarding the data dir.
pub const EXIT_ANOTHER: i32 = 3;
/// How long a runner waits before starting its watchdog again.
const RESPAWN_AFTER: Duration = Duration::from_secs(2);

/// What the deadline file says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deadline {
    /// Stop every job at `until` (a `CLOCK_BOOTTIME` millisecond); `confirmed` is the
    /// fence of the last confirmed renewal (earlier after provisional replies).
    At { until: u64, confirmed: u64 },
    /// The runner stopped cleanly with no job: nothing to guard.
    Released,
}

/// The deadline file, written by the runner and read by the watchdog.
#[derive(Debug, Clone)]
pub struct DeadlineFile {
    path: PathBuf,
}

impl DeadlineFile {
    pub fn in_dir(data_dir: &Path) -> DeadlineFile {
        DeadlineFile { path: data_dir.join(DEADLINE_FILE) }
    }

    /// Records the fence (instants of this process's monotonic clock) as boottime
    /// milliseconds: the deadline in force, then the confirmed one.
    pub fn write(&self, left: Left) {
        let (until, confirmed) = (to_boottime_ms(left.until), to_boottime_ms(left.confirmed));
        self.write_text(&format!("deadline {until} {confirmed}\n"));
    }

    pub fn release(&self) {
        self.write_text("released\n");
    }

    /// What the file says; `None` if it is missing or unreadable.
    pub fn read(&self) -> Option<Deadline> {
        let text = std::fs::read_to_string(&self.path).ok()?;
        let text = text.trim();
        if text == "released" {
            return Some(Deadline::Released);
        }
        let mut fields = text.strip_prefix("deadline ")?.split(' ');
        let until = fields.next()?.parse().ok()?;
        let confirmed = fields.next().and_then(|c| c.parse().ok()).unwrap_or(until);
        Some(Deadline::At { until, confirmed })
    }

    /// The fence an earlier process left, as instants of this process's clock, if it is
    /// still ahead.
    pub fn remaining(&self) -> Option<Left> {
        match self.read()? {
            Deadline::At { until, confirmed } => {
                let until = from_boottime_ms(until)?;
                Some(Left { until, confirmed: from_boottime_ms(confirmed).unwrap_or(until).min(until) })
            }
            Deadline::Released => None,
        }
    }

    /// Write-then-rename: the watchdog never reads half a deadline.
    fn write_text(&self, text: &str) {
        let tmp = self.path.with_extension("tmp");
        let written = std::fs::File::create(&tmp)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .and_then(|()| std::fs::rename(&tmp, &self.path));
        if let Err(e) = written {
            tracing::error!(path = %self.path.display(), error = %e, "cannot write the fence deadline for the watchdog");
        }
    }
}

fn to_boottime_ms(at: Instant) -> u64 {
    let left = at.saturating_duration_since(Instant::now());
    boottime_ms().saturating_add(u64::try_from(left.as_millis()).unwrap_or(u64::MAX))
}

/// `None` if the instant has passed.
fn from_boottime_ms(at: u64) -> Option<Instant> {
    let left = at.checked_sub(boottime_ms()).filter(|left| *left > 0)?;
    Some(Instant::now() + Duration::from_millis(left))
}

/// Milliseconds of `CLOCK_BOOTTIME`.
fn boottime_ms() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    u64::try_from(now.tv_sec).unwrap_or(0).saturating_mul(1000) + u64::try_from(now.tv_nsec / 1_000_000).unwrap_or(0)
}

/// The watchdog process: guards `file` for `runner_id` until its runner is gone and
/// nothing is left to guard. Returns the process's exit status.
pub async fn watch(runner_id: &str, data_dir: &Path) -> anyhow::Result<i32> {
    let parent = std::os::unix::process::parent_id();
    let lock = std::fs::File::create(data_dir.join(LOCK_FILE))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => return Ok(EXIT_ANOTHER),
        Err(std::fs::TryLockError::Error(e)) => return Err(e.into()),
    }
    let docker = Docker::connect().await?;
    let file = DeadlineFile::in_dir(data_dir);
    tracing::info!(runner_id, "watchdog guarding the fence deadline");
    let mut tick = tokio::time::interval(POLL);
    loop {
        tick.tick().await;
        // A dead parent's children are adopted by another process.
        let runner_alive = std::os::unix::process::parent_id() == parent;
        let passed = match file.read() {
            Some(Deadline::At { until, .. }) => boottime_ms() >= until.saturating_add(SLACK.as_millis() as u64),
            // Released, or the data dir is gone: nothing left to guard once the runner is.
            Some(Deadline::Released) | None if !runner_alive => return Ok(0),
            Some(Deadline::Released) | None => false,
        };
        if !passed {
            continue;
        }
        match docker.kill_running_with_label(label::RUNNER_ID, runner_id).await {
            Ok(killed) if killed.is_empty() && !runner_alive => return Ok(0),
            Ok(killed) => {
                for id in killed {
                    tracing::error!(container = %id, "fence deadline passed and the runner did not stop the job: killed it");
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "fence deadline passed: cannot list or kill this runner's containers")
            }
        }
    }
}

/// Keeps a watchdog process running beside the runner (started again when it ends,
/// e.g. because the previous process's watchdog still held the data dir), until
/// `cancel`; then kills it.
pub async fn supervise(runner_id: String, data_dir: PathBuf, cancel: CancellationToken) {
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            tracing::error!(error = %e, "cannot find this executable to start the watchdog");
            return;
        }
    };
    loop {
        let spawned = tokio::process::Command::new(&exe)
            .arg("watchdog")
            .env("RUNNER_ID", &runner_id)
            .env("RUNNER_DATA_DIR", &data_dir)
            .stdin(std::process::Stdio::null())
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                tracing::error!(error = %e, "cannot start the watchdog process");
                if pause(&cancel).await {
                    return;
                }
                continue;
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => {
                let _ = child.kill().await;
                return;
            }
            status = child.wait() => match status.map(|s| s.code()) {
                Ok(Some(EXIT_ANOTHER)) => tracing::debug!("the previous process's watchdog still guards the data dir"),
                Ok(code) => tracing::error!(?code, "the watchdog process ended; starting it again"),
                Err(e) => tracing::error!(error = %e, "lost the watchdog process; starting it again"),
            }
        }
        if pause(&cancel).await {
            return;
        }
    }
}

/// `true` if cancelled during the pause.
async fn pause(cancel: &CancellationToken) -> bool {
    tokio::select! {
        _ = cancel.cancelled() => true,
        _ = tokio::time::sleep(RESPAWN_AFTER) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn deadline_round_trips_through_the_file() {
        let dir = std::env::temp_dir().join(format!("ff-watchdog-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = DeadlineFile::in_dir(&dir);
        assert_eq!(file.read(), None);
        let now = Instant::now();
        file.write(Left { confirmed: now + Duration::from_secs(10), until: now + Duration::from_secs(20) });
        let left = file.remaining().expect("ahead");
        let until = left.until.saturating_duration_since(Instant::now());
        assert!(until > Duration::from_secs(19) && until <= Duration::from_secs(20), "{until:?}");
        let confirmed = left.confirmed.saturating_duration_since(Instant::now());
        assert!(confirmed > Duration::from_secs(9) && confirmed <= Duration::from_secs(10), "{confirmed:?}");
        file.write(Left { confirmed: Instant::now(), until: Instant::now() });
        assert_eq!(file.remaining(), None, "passed");
        file.release();
        assert_eq!(file.read(), Some(Deadline::Released));
        std::fs::remove_dir_all(&dir).ok();
    }
}
