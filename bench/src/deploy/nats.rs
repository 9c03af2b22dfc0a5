//! The distributed deployment's own nats-server, configured as production runs one
//! (`deploy/nats/nats-server.conf`): TLS with the dev certificates of FASTFLOW_TLS_DIR,
//! JetStream in the account FASTFLOW, the control plane as that account's own user
//! (`control-plane` with a random password), and every other client (runners) authenticated
//! by the control plane through the auth callout, whose issuer key is fresh per deployment.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::START_TIMEOUT;
use super::dev_env::DevEnv;
use super::process::{ChildProcess, free_port};

/// The user the control plane connects as (the server's only configured user).
const CONTROL_PLANE_USER: &str = "control-plane";
/// The account runners are placed in by the auth callout (the control plane's default).
const ACCOUNT: &str = "FASTFLOW";

pub struct BenchNats {
    port: u16,
    control_plane_password: String,
    /// NATS_AUTH_CALLOUT_SEED of the control plane: the account seed whose public key is
    /// the server's `auth_callout { issuer }`.
    callout_seed: String,
    /// NATS_TLS_CA of every client.
    pub tls_ca: PathBuf,
    process: ChildProcess,
}

impl BenchNats {
    pub async fn start(dev: &DevEnv, dir: &Path) -> anyhow::Result<Self> {
        let nats_dir = dir.join("nats");
        std::fs::create_dir_all(&nats_dir).with_context(|| format!("cannot create {}", nats_dir.display()))?;
        let key = nkeys::KeyPair::new_account();
        let callout_seed = key.seed().map_err(|e| anyhow::anyhow!("cannot read the seed of a new nkey: {e}"))?;
        let control_plane_password = format!("pw-{}", uuid::Uuid::new_v4().simple());
        // Log batches and code bundles can exceed NATS's 1 MB default payload.
        let text = format!(
            r#"max_payload: 8MB
tls {{
  cert_file: "{cert}"
  key_file: "{key_file}"
}}
accounts {{
  {ACCOUNT} {{
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
    account: {ACCOUNT}
  }}
}}
"#,
            cert = dev.tls_dir.join("server-cert.pem").display(),
            key_file = dev.tls_dir.join("server-key.pem").display(),
            issuer = key.public_key(),
        );
        // The config holds the control plane's password: readable by its owner only.
        let config = nats_dir.join("nats.conf");
        super::write_private(&config, &text)?;
        let port = free_port()?;
        let monitor = free_port()?;
        let mut command = Command::new(&dev.nats_server_bin);
        command.arg("-c").arg(&config).arg("-js").arg("-sd").arg(nats_dir.join("store")).args([
            "-a",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-m",
            &monitor.to_string(),
        ]);
        let mut process = ChildProcess::spawn("nats-server", command, &nats_dir.join("nats-server.log"))?;
        let http = reqwest::Client::builder().no_proxy().build().context("cannot build the HTTP client")?;
        let url = format!("http://127.0.0.1:{monitor}/healthz?js-enabled-only=true");
        let started = Instant::now();
        loop {
            if let Some(status) = process.exited() {
                bail!(
                    "nats-server exited during start-up ({status}); see {}",
                    nats_dir.join("nats-server.log").display()
                );
            }
            if http.get(&url).send().await.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            if started.elapsed() > START_TIMEOUT {
                bail!("nats-server not ready after {START_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Self { port, control_plane_password, callout_seed, tls_ca: dev.tls_dir.join("ca.pem"), process })
    }

    /// The control plane's NATS_URL: with its user and password.
    pub fn control_plane_url(&self) -> String {
        format!("nats://{CONTROL_PLANE_USER}:{}@127.0.0.1:{}", self.control_plane_password, self.port)
    }

    /// What runners connect to: no credentials (they authenticate as their runner id,
    /// or with a registration token while enrolling).
    pub fn client_url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn callout_seed(&self) -> &str {
        &self.callout_seed
    }

    pub fn kill(&mut self) {
        self.process.kill();
    }
}
