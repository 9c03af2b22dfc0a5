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
    /// The password of the server's own user `control-plane` (in the control planes' URL).
    control_plane_password: String,
    /// The auth-callout account seed the control planes sign runner permissions with.
    callout_seed: String,
    tls_ca: PathBuf,
    pub(crate) process: ChildProcess,
}

/// The tests' `max_payload` unless a test asks for another: some tests' log batches
/// and code bundles exceed NATS's 1 MB default.
pub(crate) const DEFAULT_MAX_PAYLOAD: &str = "8MB";

/// How a deployment's processes reach its NATS server: the test's own, or one another
/// test deployment started ([`crate::TestEnvOptions::shared_nats`]).
#[derive(Debug, Clone)]
pub struct NatsAccess {
    /// The control planes' URL (their user and password in it).
    pub url: String,
    /// Runners' and other clients' URL (no credentials).
    pub client_url: String,
    pub callout_seed: String,
    pub tls_ca: PathBuf,
}

/// The user the control planes connect as.
pub const CONTROL_PLANE_USER: &str = "control-plane";

impl NatsServer {
    /// A server as production runs one (deploy/nats/nats-server.conf): TLS with the dev
    /// certificate of `tls_dir`, JetStream, the control planes as its own user with
    /// `password` (random when `None`), everyone else authenticated by the control plane
    /// through the auth callout, with a fresh issuer key.
    pub(crate) async fn start(
        bin: &Path,
        tls_dir: &Path,
        dir: &Path,
        max_payload: &str,
        password: Option<&str>,
    ) -> Self {
        std::fs::create_dir_all(dir).expect("cannot create nats dir");
        let key = nkeys::KeyPair::new_account();
        let callout_seed = key.seed().expect("an account key has a seed");
        let control_plane_password =
            password.map(str::to_owned).unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
        let config = dir.join("nats.conf");
        let text = format!(
            r#"max_payload: {max_payload}
tls {{
  cert_file: "{cert}"
  key_file: "{key_file}"
}}
accounts {{
  FASTFLOW {{
    jetstream: enabled
    users: [ {{ user: {CONTROL_PLANE_USER}, password: "{control_plane_password}" }} ]
  }}
  SYS {{}}
}}
system_account: SYS
authorization {{
  auth_callout {{
    issuer: "{issuer}"
    users: [ {CONTROL_PLANE_USER} ]
    account: FASTFLOW
  }}
}}
"#,
            cert = tls_dir.join("server-cert.pem").display(),
            key_file = tls_dir.join("server-key.pem").display(),
            issuer = key.public_key(),
        );
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
            control_plane_password,
            callout_seed,
            tls_ca: tls_dir.join("ca.pem"),
            process,
        };
        server.wait_ready().await;
        server
    }

    /// How processes reach this server (for another deployment sharing it).
    pub(crate) fn access(&self) -> NatsAccess {
        NatsAccess {
            url: self.url(),
            client_url: self.client_url(),
            callout_seed: self.callout_seed.clone(),
            tls_ca: self.tls_ca.clone(),
        }
    }

    /// The URL the control planes use: with their user and password.
    pub(crate) fn url(&self) -> String {
        format!("nats://{CONTROL_PLANE_USER}:{}@127.0.0.1:{}", self.control_plane_password, self.port)
    }

    /// The URL runners (and rogue clients) use: no credentials in it.
    pub(crate) fn client_url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
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
