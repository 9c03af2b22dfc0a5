//! A private nats-server (JetStream) per test.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::process::{ChildProcess, free_port};
use crate::wait::poll_until;

pub(crate) struct NatsServer {
    pub(crate) port: u16,
    monitor_port: u16,
    bin: PathBuf,
    config: PathBuf,
    dir: PathBuf,
    incarnation: u32,
    /// The token clients must present (`authorization { token }`), if the test set one.
    token: Option<String>,
    pub(crate) process: ChildProcess,
}

/// The tests' `max_payload` unless a test asks for another: some tests' log batches
/// and code bundles exceed NATS's 1 MB default.
pub(crate) const DEFAULT_MAX_PAYLOAD: &str = "8MB";

impl NatsServer {
    pub(crate) async fn start(bin: &Path, dir: &Path, max_payload: &str, token: Option<&str>) -> Self {
        std::fs::create_dir_all(dir).expect("cannot create nats dir");
        let config = dir.join("nats.conf");
        let mut text = format!("max_payload: {max_payload}\n");
        if let Some(token) = token {
            text.push_str(&format!("authorization {{ token: \"{token}\" }}\n"));
        }
        std::fs::write(&config, text).expect("cannot write nats.conf");
        let port = free_port();
        let monitor_port = free_port();
        let process = spawn(bin, &config, &dir.join("store-0"), port, monitor_port, dir);
        let mut server = Self {
            port,
            monitor_port,
            bin: bin.to_path_buf(),
            config,
            dir: dir.to_path_buf(),
            incarnation: 0,
            token: token.map(str::to_owned),
            process,
        };
        server.wait_ready().await;
        server
    }

    /// The URL clients use, with the token in it when the server requires one.
    pub(crate) fn url(&self) -> String {
        match &self.token {
            Some(token) => format!("nats://{token}@127.0.0.1:{}", self.port),
            None => format!("nats://127.0.0.1:{}", self.port),
        }
    }

    /// kill -9: in-flight and unsynced JetStream state is lost, as in a crash.
    pub(crate) fn kill(&mut self) {
        self.process.kill();
    }

    /// Sends `signal` (e.g. `STOP`, `CONT`) to the server process.
    pub(crate) fn signal(&mut self, signal: &str) {
        self.process.signal(signal);
    }

    /// Starts a new server on the same ports with an EMPTY store directory:
    /// every stream, consumer and message is gone.
    pub(crate) async fn restart_with_empty_store(&mut self) {
        self.process.kill();
        self.incarnation += 1;
        let store = self.dir.join(format!("store-{}", self.incarnation));
        self.process = spawn(&self.bin, &self.config, &store, self.port, self.monitor_port, &self.dir);
        self.wait_ready().await;
    }

    /// Starts a new server on the same ports with the SAME store directory (kills
    /// the running one first, if any): JetStream recovers what reached the disk.
    pub(crate) async fn restart_keeping_store(&mut self) {
        self.process.kill();
        let store = self.dir.join(format!("store-{}", self.incarnation));
        self.process = spawn(&self.bin, &self.config, &store, self.port, self.monitor_port, &self.dir);
        self.wait_ready().await;
    }

    async fn wait_ready(&mut self) {
        let url = format!("http://127.0.0.1:{}/healthz?js-enabled-only=true", self.monitor_port);
        let http = reqwest::Client::new();
        let process = &mut self.process;
        poll_until("nats-server to be ready", Duration::from_secs(20), Duration::from_millis(100), || {
            let exited = process.exit_status();
            let request = http.get(&url).timeout(Duration::from_secs(2)).send();
            async move {
                if let Some(status) = exited {
                    return Ok(Err(status));
                }
                match request.await {
                    Ok(r) if r.status().is_success() => Ok(Ok(())),
                    Ok(r) => Err(format!("healthz answered {}", r.status())),
                    Err(e) => Err(e.to_string()),
                }
            }
        })
        .await
        .unwrap_or_else(|status| {
            panic!("nats-server exited during start-up ({status}); its log:\n{}", self.process.log_tail(40))
        });
    }
}

fn spawn(bin: &Path, config: &Path, store: &Path, port: u16, monitor_port: u16, dir: &Path) -> ChildProcess {
    std::fs::create_dir_all(store).expect("cannot create nats store dir");
    let mut command = Command::new(bin);
    command.arg("-c").arg(config).arg("-js").arg("-sd").arg(store).args([
        "-a",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-m",
        &monitor_port.to_string(),
    ]);
    ChildProcess::spawn("nats-server", command, &dir.join("nats-server.log"))
}
