//! Child processes whose output goes to a log file, killed on drop.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A running (or exited) child process; stdout and stderr both go to `log_path`.
pub(crate) struct ChildProcess {
    pub(crate) name: String,
    pub(crate) log_path: PathBuf,
    child: Option<Child>,
}

impl ChildProcess {
    /// Spawns `command`, appending its output to `log_path` (appending keeps the
    /// output of earlier incarnations when a process is restarted).
    pub(crate) fn spawn(name: &str, mut command: Command, log_path: &Path) -> Self {
        let log = open_log(log_path);
        let log_err = log.try_clone().expect("cannot clone log file handle");
        command.stdin(Stdio::null()).stdout(Stdio::from(log)).stderr(Stdio::from(log_err));
        let child = command.spawn().unwrap_or_else(|e| panic!("cannot start {name} ({command:?}): {e}"));
        Self { name: name.to_string(), log_path: log_path.to_path_buf(), child: Some(child) }
    }

    /// `Some(description)` when the process has exited.
    pub(crate) fn exit_status(&mut self) -> Option<String> {
        match self.child.as_mut() {
            None => Some("killed by the test".to_string()),
            Some(child) => match child.try_wait() {
                Ok(Some(status)) => Some(status.to_string()),
                Ok(None) => None,
                Err(e) => Some(format!("unknown ({e})")),
            },
        }
    }

    /// Kills the process if it still runs and says how it ended, for failure reports:
    /// a process that died by itself (or by someone else's signal) shows here.
    pub(crate) fn stop_and_describe(&mut self) -> String {
        let description = match self.exit_status() {
            None => "was running; killed at the end of the test".to_string(),
            Some(status) if self.child.is_none() => status,
            Some(status) => format!("HAD EXITED BY ITSELF before the end of the test ({status})"),
        };
        self.kill();
        description
    }

    /// Sends `signal` (a name such as `STOP` or `CONT`) to this process by PID, with
    /// kill(1). Panics when the process is gone or the signal could not be sent.
    pub(crate) fn signal(&mut self, signal: &str) {
        let child = self.child.as_mut().unwrap_or_else(|| panic!("{} was already killed", self.name));
        if let Ok(Some(status)) = child.try_wait() {
            panic!("cannot send SIG{signal} to {}: it has exited ({status})", self.name);
        }
        let pid = child.id().to_string();
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .unwrap_or_else(|e| panic!("cannot run `kill -{signal} {pid}`: {e}"));
        assert!(status.success(), "`kill -{signal} {pid}` ({}) failed: {status}", self.name);
    }

    /// The OS process id; `None` once the test killed it.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The exit status once the process has exited (by itself or by a signal);
    /// `None` while it runs or after the test killed it.
    pub(crate) fn try_exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|child| child.try_wait().ok().flatten())
    }

    /// SIGKILL, then reap. Idempotent.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The last `n` lines of the process's log.
    pub(crate) fn log_tail(&self, n: usize) -> String {
        log_tail(&self.log_path, n)
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

fn open_log(path: &Path) -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("cannot open log file {}: {e}", path.display()))
}

pub(crate) fn log_tail(path: &Path, n: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}

/// A port that was free a moment ago. Racy by nature, but the OS hands out
/// ephemeral ports round-robin, so a collision within one test run is unlikely.
pub(crate) fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("cannot bind a free port");
    listener.local_addr().expect("no local addr").port()
}
