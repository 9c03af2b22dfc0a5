//! The shared services written by `scripts/dev-deps.sh up` (`/var/tmp/fastflow-dev/env.sh`).

use std::path::PathBuf;

use anyhow::{Context, bail};

/// What the harness needs from the environment, read once at start.
#[derive(Debug, Clone)]
pub struct DevEnv {
    /// Credentials and host only: the harness creates its own database.
    pub database_url: String,
    pub pg_admin_url: String,
    pub s3_endpoint: String,
    pub s3_region: String,
    pub aws_access_key_id: String,
    pub aws_secret_access_key: String,
    pub nats_server_bin: PathBuf,
    /// `FASTFLOW_TLS_DIR`: the dev certificates (`ca.pem`, `server-cert.pem`,
    /// `server-key.pem`) the bench's nats-server serves TLS with.
    pub tls_dir: PathBuf,
    /// Directory holding the release `control-plane` and `runner-agent` binaries.
    pub bin_dir: PathBuf,
}

const REQUIRED: &[&str] = &[
    "DATABASE_URL",
    "FASTFLOW_PG_ADMIN_URL",
    "S3_ENDPOINT",
    "S3_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "NATS_SERVER_BIN",
    "FASTFLOW_TLS_DIR",
];

impl DevEnv {
    pub fn from_env() -> anyhow::Result<Self> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let missing: Vec<&str> = REQUIRED.iter().copied().filter(|name| var(name).is_none()).collect();
        if !missing.is_empty() {
            bail!(
                "missing environment variable(s) {}: run `scripts/dev-deps.sh up` and \
                 `source /var/tmp/fastflow-dev/env.sh` (scripts/bench.sh does both)",
                missing.join(", ")
            );
        }
        let get = |name: &str| var(name).unwrap_or_default();
        let nats_server_bin = PathBuf::from(get("NATS_SERVER_BIN"));
        if !nats_server_bin.is_file() {
            bail!("NATS_SERVER_BIN={} is not a file", nats_server_bin.display());
        }
        let tls_dir = PathBuf::from(get("FASTFLOW_TLS_DIR"));
        for file in ["ca.pem", "server-cert.pem", "server-key.pem"] {
            if !tls_dir.join(file).is_file() {
                bail!(
                    "FASTFLOW_TLS_DIR={} holds no {file}: run `scripts/dev-deps.sh up` (it makes the dev certificates)",
                    tls_dir.display()
                );
            }
        }
        Ok(Self {
            database_url: get("DATABASE_URL"),
            pg_admin_url: get("FASTFLOW_PG_ADMIN_URL"),
            s3_endpoint: get("S3_ENDPOINT"),
            s3_region: get("S3_REGION"),
            aws_access_key_id: get("AWS_ACCESS_KEY_ID"),
            aws_secret_access_key: get("AWS_SECRET_ACCESS_KEY"),
            nats_server_bin,
            tls_dir,
            bin_dir: bin_dir(var("FASTFLOW_BIN_DIR"))?,
        })
    }

    pub fn binary(&self, name: &str) -> anyhow::Result<PathBuf> {
        let path = self.bin_dir.join(name);
        if !path.is_file() {
            bail!(
                "{} not found: build it with `cargo build --release -p control-plane -p runner-agent` \
                 (same CARGO_TARGET_DIR) or set FASTFLOW_BIN_DIR",
                path.display()
            );
        }
        Ok(path)
    }
}

/// `$FASTFLOW_BIN_DIR`, else the directory of the bench executable itself (the same
/// cargo profile directory the product binaries are built into).
fn bin_dir(explicit: Option<String>) -> anyhow::Result<PathBuf> {
    if let Some(dir) = explicit {
        return Ok(PathBuf::from(dir));
    }
    let exe = std::env::current_exe().context("cannot locate the bench executable")?;
    exe.parent().map(PathBuf::from).context("the bench executable has no parent directory")
}
