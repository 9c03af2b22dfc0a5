//! A private Postgres cluster for one test, for tests that stop or restart Postgres
//! (the shared one must stay up for every other test).
//!
//! `initdb` and `pg_ctl` run as the `postgres` user (`runuser -u postgres --`), with
//! the cluster under `/var/tmp/fastflow-tests-pg/<uuid>` (a folder that user can
//! traverse), listening on 127.0.0.1 only. Dropping it stops the server and removes
//! the folder, after copying the server log next to the test's other logs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::process::free_port;
use crate::wait::poll_until;

const PG_BIN_DIR: &str = "/usr/lib/postgresql/15/bin";
const PG_ROOT: &str = "/var/tmp/fastflow-tests-pg";

pub(crate) struct PrivatePostgres {
    pub(crate) port: u16,
    /// `/var/tmp/fastflow-tests-pg/<uuid>`: data dir, socket dir and server log.
    base: PathBuf,
    /// Where the server log is copied on drop.
    log_copy: PathBuf,
    running: bool,
}

impl PrivatePostgres {
    /// initdb + start on a free port; `log_copy` receives the server log on drop.
    pub(crate) async fn start(log_copy: &Path) -> Self {
        let base = PathBuf::from(PG_ROOT).join(uuid::Uuid::new_v4().simple().to_string());
        std::fs::create_dir_all(base.join("sock")).unwrap_or_else(|e| panic!("cannot create {}: {e}", base.display()));
        // The root folder must be traversable by postgres; the cluster folder its own.
        set_mode(Path::new(PG_ROOT), 0o755);
        run_checked("chown", &["-R", "postgres:postgres", &path_str(&base)]).await;
        let mut pg = Self { port: free_port(), base, log_copy: log_copy.to_path_buf(), running: false };
        let data = path_str(&pg.data_dir());
        as_postgres(
            "initdb",
            &["-D", &data, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8", "--no-locale"],
        )
        .await;
        pg.start_server().await;
        pg
    }

    /// The maintenance database as superuser: the test's database is created
    /// through it (as with the shared Postgres), and its path replaced.
    pub(crate) fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// `pg_ctl -m immediate stop`: connections are cut, as in a crash.
    pub(crate) async fn stop_immediate(&mut self) {
        let data = path_str(&self.data_dir());
        as_postgres("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "-t", "30", "stop"]).await;
        self.running = false;
    }

    /// `pg_ctl -w start` on the same port (crash recovery runs first after an
    /// immediate stop).
    pub(crate) async fn start_server(&mut self) {
        let data = path_str(&self.data_dir());
        let log = path_str(&self.server_log());
        let sock = path_str(&self.base.join("sock"));
        let options = format!("-p {} -c listen_addresses=127.0.0.1 -c fsync=off -k {sock}", self.port);
        as_postgres("pg_ctl", &["-D", &data, "-l", &log, "-o", &options, "-w", "-t", "60", "start"]).await;
        self.running = true;
        let isready = format!("{PG_BIN_DIR}/pg_isready");
        let port = self.port.to_string();
        poll_until(
            "the private Postgres to accept connections",
            Duration::from_secs(30),
            Duration::from_millis(100),
            || {
                let isready = isready.clone();
                let port = port.clone();
                async move {
                    let output = tokio::process::Command::new(&isready)
                        .args(["-h", "127.0.0.1", "-p", &port])
                        .output()
                        .await
                        .map_err(|e| e.to_string())?;
                    if output.status.success() {
                        Ok(())
                    } else {
                        Err(String::from_utf8_lossy(&output.stdout).into_owned())
                    }
                }
            },
        )
        .await;
    }

    fn data_dir(&self) -> PathBuf {
        self.base.join("data")
    }

    fn server_log(&self) -> PathBuf {
        self.base.join("postgres.log")
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        if self.running {
            let data = path_str(&self.data_dir());
            let _ = std::process::Command::new("runuser")
                .args(["-u", "postgres", "--", &format!("{PG_BIN_DIR}/pg_ctl")])
                .args(["-D", &data, "-m", "immediate", "-w", "-t", "30", "stop"])
                .output();
        }
        let _ = std::fs::copy(self.server_log(), &self.log_copy);
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

fn path_str(path: &Path) -> String {
    path.to_str().unwrap_or_else(|| panic!("path is not UTF-8: {}", path.display())).to_string()
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode));
}

/// Runs a Postgres binary as the `postgres` user; panics with its output on failure.
async fn as_postgres(binary: &str, args: &[&str]) {
    let program = format!("{PG_BIN_DIR}/{binary}");
    let mut all = vec!["-u", "postgres", "--", program.as_str()];
    all.extend_from_slice(args);
    run_checked("runuser", &all).await;
}

async fn run_checked(program: &str, args: &[&str]) {
    let output = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run `{program} {}`: {e}", args.join(" ")));
    assert!(
        output.status.success(),
        "`{program} {}` failed ({}):\n{}{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
