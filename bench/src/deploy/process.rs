//! Child processes whose output goes to a log file, killed on drop.

use std::fs::OpenOptions;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::Context;

pub struct ChildProcess {
    pub name: String,
    child: Option<Child>,
}

impl ChildProcess {
    pub fn spawn(name: &str, mut command: Command, log_path: &Path) -> anyhow::Result<Self> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path)
            .with_context(|| format!("cannot open {}", log_path.display()))?;
        let log_err = log.try_clone().context("cannot clone a log file handle")?;
        command.stdin(Stdio::null()).stdout(Stdio::from(log)).stderr(Stdio::from(log_err));
        let child = command.spawn().with_context(|| format!("cannot start {name} ({command:?})"))?;
        Ok(Self { name: name.to_string(), child: Some(child) })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `Some(description)` once the process has exited.
    pub fn exited(&mut self) -> Option<String> {
        match self.child.as_mut() {
            None => Some("stopped by the harness".into()),
            Some(child) => match child.try_wait() {
                Ok(Some(status)) => Some(status.to_string()),
                Ok(None) => None,
                Err(e) => Some(format!("unknown ({e})")),
            },
        }
    }

    /// SIGTERM (by PID, with `kill`), wait up to `grace` for the exit, then SIGKILL; reaps.
    pub async fn terminate(&mut self, grace: std::time::Duration) {
        let Some(pid) = self.pid() else { return };
        let sent = Command::new("kill").args(["-TERM", &pid.to_string()]).status().is_ok_and(|s| s.success());
        let started = std::time::Instant::now();
        while sent && started.elapsed() < grace {
            if let Some(child) = self.child.as_mut()
                && !matches!(child.try_wait(), Ok(None))
            {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        self.kill();
    }

    /// SIGKILL and reap; idempotent.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port that was free a moment ago (loopback only).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("cannot bind a free port")?;
    Ok(listener.local_addr().context("no local address")?.port())
}
