//! The environment written by `scripts/dev-deps.sh up` (`/var/tmp/fastflow-dev/env.sh`).

use std::path::PathBuf;

/// Shared services the end-to-end tests run against, read once from the environment.
///
/// A missing variable is a hard failure, never a skip: a suite that silently skips
/// when its services are absent reports green while testing nothing.
#[derive(Debug, Clone)]
pub struct DevEnv {
    /// Used only for its credentials/host; each test gets its own database.
    pub database_url: String,
    pub pg_admin_url: String,
    pub s3_endpoint: String,
    pub s3_region: String,
    pub aws_access_key_id: String,
    pub aws_secret_access_key: String,
    pub worker_base_image: String,
    pub busybox_image: String,
    pub nats_server_bin: PathBuf,
    /// `FASTFLOW_TLS_DIR`: the dev CA (`ca.pem`) and the NATS server certificate for 127.0.0.1.
    pub tls_dir: PathBuf,
    /// The S3 server's data directory (s3s-fs keeps a bucket as a directory there), for
    /// tests that make the log store refuse writes.
    pub s3_data_dir: Option<PathBuf>,
    /// Directory holding the `control-plane` and `runner-agent` binaries.
    pub bin_dir: PathBuf,
}

const REQUIRED: &[&str] = &[
    "DATABASE_URL",
    "NATS_URL",
    "S3_ENDPOINT",
    "S3_BUCKET",
    "S3_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "WORKER_BASE_IMAGE",
    "FASTFLOW_BUSYBOX_IMAGE",
    "NATS_SERVER_BIN",
    "FASTFLOW_PG_ADMIN_URL",
    "FASTFLOW_TLS_DIR",
];

impl DevEnv {
    /// Reads the environment, panicking with one message that lists everything missing.
    pub fn from_env() -> Self {
        let missing: Vec<&str> =
            REQUIRED.iter().copied().filter(|name| std::env::var(name).map(|v| v.is_empty()).unwrap_or(true)).collect();
        if !missing.is_empty() {
            panic!(
                "end-to-end tests need the shared dev services; missing environment variable(s): {}.\n\
                 Run `scripts/dev-deps.sh up` and then `source /var/tmp/fastflow-dev/env.sh` before `cargo test -p tests`.",
                missing.join(", ")
            );
        }
        let var = |name: &str| std::env::var(name).unwrap_or_default();
        let nats_server_bin = PathBuf::from(var("NATS_SERVER_BIN"));
        assert!(
            nats_server_bin.is_file(),
            "NATS_SERVER_BIN={} is not a file (re-run scripts/dev-deps.sh up)",
            nats_server_bin.display()
        );
        Self {
            database_url: var("DATABASE_URL"),
            pg_admin_url: var("FASTFLOW_PG_ADMIN_URL"),
            s3_endpoint: var("S3_ENDPOINT"),
            s3_region: var("S3_REGION"),
            aws_access_key_id: var("AWS_ACCESS_KEY_ID"),
            aws_secret_access_key: var("AWS_SECRET_ACCESS_KEY"),
            worker_base_image: var("WORKER_BASE_IMAGE"),
            busybox_image: var("FASTFLOW_BUSYBOX_IMAGE"),
            nats_server_bin,
            tls_dir: PathBuf::from(var("FASTFLOW_TLS_DIR")),
            s3_data_dir: std::env::var_os("FASTFLOW_S3_DATA_DIR").map(PathBuf::from),
            bin_dir: bin_dir(),
        }
    }

    /// Path of a product binary, panicking with a hint when it was not built.
    pub fn binary(&self, name: &str) -> PathBuf {
        let path = self.bin_dir.join(name);
        assert!(
            path.is_file(),
            "product binary {} not found; build it first with `cargo build --workspace --bins` \
             (same CARGO_TARGET_DIR) or point FASTFLOW_BIN_DIR at its directory",
            path.display()
        );
        path
    }
}

/// `$FASTFLOW_BIN_DIR`, else the profile dir above the test executable
/// (`<target>/debug/deps/<test>` → `<target>/debug`).
fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("FASTFLOW_BIN_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("cannot locate the test executable");
    let deps = exe.parent().expect("test executable has no parent dir");
    let profile = if deps.file_name().is_some_and(|n| n == "deps") {
        deps.parent().expect("deps dir has no parent")
    } else {
        deps
    };
    profile.to_path_buf()
}

/// The workspace root (the tests crate sits directly under it).
pub(crate) fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().expect("tests crate has no parent dir").to_path_buf()
}
