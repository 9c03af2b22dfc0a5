//! `TestEnv`: one isolated Fast-Flow deployment per test, distributed or single-node.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::api::{ControlPlaneClient, Run};
use crate::config::{DevEnv, workspace_root};
use crate::docker;
use crate::nats::{self, NatsAccess, NatsServer};
use crate::postgres::TestDatabase;
use crate::private_postgres::PrivatePostgres;
use crate::process::{ChildProcess, free_port, log_tail};
use crate::s3::{self, Digest};
use crate::session::Session;
use crate::sse::SseStream;
use crate::wait::poll_until;

/// Python dependencies are cached across tests (and test runs) in
/// `$FASTFLOW_DEV_DIR/uv-cache-tests` (the dir scripts/dev-deps.sh uses).
fn uv_cache_dir() -> PathBuf {
    let dev_dir = std::env::var_os("FASTFLOW_DEV_DIR")
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| "/var/tmp/fastflow-dev".into());
    PathBuf::from(dev_dir).join("uv-cache-tests")
}
/// Variables of the test process (from env.sh) that a runner-agent must not need.
const RUNNER_MUST_NOT_SEE: &[&str] = &[
    "NATS_AUTH_CALLOUT_SEED",
    "DATABASE_URL",
    "FASTFLOW_PG_ADMIN_URL",
    "S3_ENDPOINT",
    "S3_BUCKET",
    "S3_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
];
/// Variables of the test process (from env.sh) that select the distributed seams;
/// a single node is started without them, so it must not need them.
const SINGLE_NODE_MUST_NOT_SEE: &[&str] = &[
    "DATABASE_URL",
    "NATS_URL",
    "S3_ENDPOINT",
    "S3_BUCKET",
    "S3_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "FASTFLOW_PG_ADMIN_URL",
];
/// Lines of each process log printed when a test fails.
const LOG_TAIL_LINES: usize = 80;
/// The harness's admin, created with `control-plane user create` before the first
/// control plane starts (or, with [`TestEnvOptions::bootstrap_admin`], the single
/// node's own first admin).
pub const ADMIN_USER: &str = "admin";
/// The name of the admin's API token, which every client of [`TestEnv::cp`] sends.
pub const ADMIN_TOKEN_NAME: &str = "harness";
/// The single node's first-admin password file in DATA_DIR.
const INITIAL_ADMIN_PASSWORD_FILE: &str = "initial-admin-password";

/// A user made by [`TestEnv::create_user`].
#[derive(Debug, Clone)]
pub struct TestUser {
    pub id: String,
    pub username: String,
    pub password: String,
}

/// A fresh random password (35 characters).
pub fn random_password() -> String {
    format!("pw-{}", uuid::Uuid::new_v4().simple())
}

/// Which deployment a [`TestEnv`] builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A private nats-server, a fresh Postgres database and S3 bucket, control-plane
    /// replicas and runner-agent processes.
    Distributed,
    /// One `control-plane` process and no services at all: SQLite in
    /// `<test dir>/data`, archived logs as files in `<test dir>/archive`, the
    /// in-process bus and the embedded runner.
    SingleNode,
}

/// How many of each process to start.
#[derive(Debug, Clone)]
pub struct TestEnvOptions {
    pub mode: Mode,
    /// Control-plane replicas (the single node is always exactly one).
    pub control_planes: usize,
    /// Runner processes; in single-node mode 1 (the embedded runner) or 0 (the
    /// embedded runner serves a pool nobody uses, so default-pool runs stay queued).
    pub runners: usize,
    /// RUNNER_CONCURRENCY of every runner.
    pub runner_concurrency: usize,
    /// Extra environment variables of every control plane (set last, so they win).
    pub control_plane_env: Vec<(String, String)>,
    /// Extra environment variables of every runner (set last, so they win); in
    /// single-node mode they go to the one process, before `control_plane_env`.
    pub runner_env: Vec<(String, String)>,
    /// Run the control planes against a Postgres cluster of the test's own (which
    /// the test may stop and restart) instead of the shared one.
    pub private_postgres: bool,
    /// nats-server's `max_payload` (e.g. `"1MB"`, the server's own default); the
    /// tests' default is 8 MB.
    pub nats_max_payload: Option<String>,
    /// Single node only: create no user before the start, so the node creates its
    /// first admin (`admin`, password in `DATA_DIR/initial-admin-password`); the
    /// harness then makes its token for that user with the CLI.
    pub bootstrap_admin: bool,
    /// Credentials in every service URL the processes get: nats-server requires this
    /// token (`nats://TOKEN@…`), and `DATABASE_URL` carries it as the password (which
    /// the tests' Postgres, trusting loopback, does not check). For tests that look
    /// for credentials in what the product prints.
    pub credentials_in_urls: Option<String>,
    /// `NATS_SUBJECT_PREFIX` of the control planes and runners.
    pub nats_subject_prefix: Option<String>,
    /// Use another deployment's nats-server instead of starting one (two deployments on
    /// one NATS server; give them different prefixes).
    pub shared_nats: Option<NatsAccess>,
}

impl Default for TestEnvOptions {
    /// The distributed deployment: one control plane, one runner.
    fn default() -> Self {
        Self {
            mode: Mode::Distributed,
            control_planes: 1,
            runners: 1,
            runner_concurrency: 4,
            control_plane_env: Vec::new(),
            runner_env: Vec::new(),
            private_postgres: false,
            nats_max_payload: None,
            bootstrap_admin: false,
            credentials_in_urls: None,
            nats_subject_prefix: None,
            shared_nats: None,
        }
    }
}

impl TestEnvOptions {
    /// The single node: one `control-plane` with no DATABASE_URL, NATS_URL or S3
    /// settings, running its embedded runner.
    pub fn single_node() -> Self {
        Self { mode: Mode::SingleNode, ..Self::default() }
    }

    pub fn control_planes(mut self, n: usize) -> Self {
        self.control_planes = n;
        self
    }

    pub fn runners(mut self, n: usize) -> Self {
        self.runners = n;
        self
    }

    pub fn runner_concurrency(mut self, n: usize) -> Self {
        self.runner_concurrency = n;
        self
    }

    /// Passes `key=value` to every control plane.
    pub fn control_plane_env(mut self, key: &str, value: &str) -> Self {
        self.control_plane_env.push((key.to_string(), value.to_string()));
        self
    }

    /// Passes `key=value` to every runner (in single-node mode: to the single node).
    pub fn runner_env(mut self, key: &str, value: &str) -> Self {
        self.runner_env.push((key.to_string(), value.to_string()));
        self
    }

    /// A private Postgres cluster (initdb + pg_ctl as user `postgres`) for this test,
    /// so it can be restarted with [`TestEnv::restart_postgres`].
    pub fn private_postgres(mut self) -> Self {
        self.private_postgres = true;
        self
    }

    /// Let the single node create its first admin itself (see the field).
    pub fn bootstrap_admin(mut self) -> Self {
        self.bootstrap_admin = true;
        self
    }

    /// Puts `secret` into the NATS and Postgres URLs (see the field).
    pub fn credentials_in_urls(mut self, secret: &str) -> Self {
        self.credentials_in_urls = Some(secret.to_string());
        self
    }

    /// `NATS_SUBJECT_PREFIX` of every process of the deployment.
    pub fn nats_subject_prefix(mut self, prefix: &str) -> Self {
        self.nats_subject_prefix = Some(prefix.to_string());
        self
    }

    /// Runs on another deployment's nats-server ([`TestEnv::nats_access`]).
    pub fn shared_nats(mut self, access: NatsAccess) -> Self {
        self.shared_nats = Some(access);
        self
    }

    /// nats-server's largest message (`max_payload`, e.g. `"1MB"`).
    pub fn nats_max_payload(mut self, size: &str) -> Self {
        self.nats_max_payload = Some(size.to_string());
        self
    }

    /// Panics when the options ask for what a single node cannot be.
    fn check_single_node(&self) {
        assert!(
            self.control_planes == 1,
            "TestEnvOptions::control_planes({}) is not available in single-node mode: the single node is exactly one \
             control-plane process; keep this test distributed-only",
            self.control_planes
        );
        assert!(
            self.runners <= 1,
            "TestEnvOptions::runners({}) is not available in single-node mode: the single node has one embedded \
             runner (runners(0) makes it serve a pool nobody uses); keep this test distributed-only",
            self.runners
        );
        assert!(
            !self.private_postgres,
            "TestEnvOptions::private_postgres() is not available in single-node mode: it uses SQLite"
        );
        assert!(
            self.nats_max_payload.is_none(),
            "TestEnvOptions::nats_max_payload() is not available in single-node mode: it has no NATS"
        );
    }
}

struct ControlPlane {
    client: ControlPlaneClient,
    /// Kept across [`TestEnv::restart_control_plane`].
    port: u16,
    process: ChildProcess,
}

struct Runner {
    id: String,
    process: ChildProcess,
}

/// What only a distributed deployment has: the services and their per-test state.
struct Services {
    /// The test's own nats-server; `None` when it shares another deployment's.
    nats: Option<NatsServer>,
    nats_access: NatsAccess,
    db: TestDatabase,
    /// Set with [`TestEnvOptions::private_postgres`]; `db` then lives in it.
    private_pg: Option<PrivatePostgres>,
    s3: aws_sdk_s3::Client,
    bucket: String,
}

/// A private deployment: in distributed mode nats-server, database, bucket, control
/// planes and runners; in single-node mode one control plane with its data under
/// the test dir. Both have a private pipelines folder. Dropping it kills every
/// process and removes what it made.
pub struct TestEnv {
    pub dev: DevEnv,
    /// The test's temp dir (kept when the test fails).
    pub dir: PathBuf,
    pub pipelines_dir: PathBuf,
    options: TestEnvOptions,
    tag: String,
    /// `None` in single-node mode.
    services: Option<Services>,
    control_planes: Vec<ControlPlane>,
    /// Runner processes (always empty in single-node mode).
    runners: Vec<Runner>,
    /// RUNNER_ID of the single node's embedded runner (`runner-0-<tag>`).
    embedded_runner_id: String,
    /// Counts container creations from before the first process starts.
    creations: crate::ContainerCreations,
    /// Environment variables of one runner only (by index), on top of the options'.
    runner_extra_env: std::collections::HashMap<usize, Vec<(String, String)>>,
    /// The password of [`ADMIN_USER`].
    admin_password: String,
    /// The API token [`ADMIN_TOKEN_NAME`] of [`ADMIN_USER`].
    admin_token: String,
    /// A reusable runner registration token (distributed mode): every runner the harness
    /// starts is enrolled with it, as an admin enrolls runners.
    registration_token: String,
}

impl TestEnv {
    pub async fn start(options: TestEnvOptions) -> Self {
        let dev = DevEnv::from_env();
        let single_node = options.mode == Mode::SingleNode;
        if single_node {
            options.check_single_node();
        }
        assert!(
            single_node || !options.bootstrap_admin,
            "TestEnvOptions::bootstrap_admin() is for the single node: only it creates its first admin"
        );
        // Fail before starting anything when the product was not built.
        dev.binary("control-plane");
        if !single_node {
            dev.binary("runner-agent");
        }
        let tag = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
        let dir = std::env::temp_dir().join("fastflow-tests").join(format!("{}-{tag}", test_name()));
        std::fs::create_dir_all(dir.join("logs")).expect("cannot create the test dir");

        let pipelines_dir = dir.join("pipelines");
        copy_dir(&workspace_root().join("pipelines"), &pipelines_dir);
        copy_dir(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/pipelines"), &pipelines_dir);
        let uv_cache = uv_cache_dir();
        std::fs::create_dir_all(&uv_cache).unwrap_or_else(|e| panic!("cannot create {}: {e}", uv_cache.display()));

        let services = if single_node { None } else { Some(Services::start(&dev, &dir, &options).await) };

        let creations = crate::ContainerCreations::start().await;
        let mut env = Self {
            creations,
            dev,
            embedded_runner_id: format!("runner-0-{tag}"),
            dir,
            pipelines_dir,
            options: options.clone(),
            tag,
            services,
            control_planes: Vec::new(),
            runners: Vec::new(),
            runner_extra_env: std::collections::HashMap::new(),
            admin_password: String::new(),
            admin_token: String::new(),
            registration_token: String::new(),
        };
        // The first admin and its token, as an operator makes them: with the CLI, on the
        // store the control planes will use, before any of them starts (the CLI migrates).
        if !options.bootstrap_admin {
            env.create_admin_with_cli().await;
        }
        // Start all replicas at once.
        for i in 0..options.control_planes {
            let port = free_port();
            let process = env.spawn_control_plane(i, port);
            let client = ControlPlaneClient::new(format!("http://127.0.0.1:{port}"));
            env.control_planes.push(ControlPlane { client, port, process });
        }
        for i in 0..options.control_planes {
            env.wait_control_plane_ready(i).await;
        }
        if options.bootstrap_admin {
            env.take_over_initial_admin().await;
        }
        for cp in &mut env.control_planes {
            cp.client = cp.client.with_token(&env.admin_token);
        }
        if single_node {
            env.wait_embedded_runner_listed().await;
        } else {
            env.registration_token = env.create_registration_token(&json!({ "single_use": false })).await;
            for _ in 0..options.runners {
                env.start_runner().await;
            }
        }
        env
    }

    /// Creates [`ADMIN_USER`] (a random password, from a mode-0600 file) and its token
    /// [`ADMIN_TOKEN_NAME`] with the CLI.
    async fn create_admin_with_cli(&mut self) {
        let password = random_password();
        let file = self.dir.join("admin-password");
        write_private(&file, &password);
        let file = file.display().to_string();
        self.cli(&["user", "create", ADMIN_USER, "--role", "admin", "--password-file", &file]).await;
        self.admin_password = password;
        self.admin_token = self.create_token(ADMIN_USER, ADMIN_TOKEN_NAME, None).await;
    }

    /// After the single node created its first admin: reads the password from its file
    /// and makes the harness's token for that user with the CLI.
    async fn take_over_initial_admin(&mut self) {
        let path = self.initial_admin_password_path();
        let password = poll_until(
            &format!("the single node to write {}", path.display()),
            Duration::from_secs(10),
            Duration::from_millis(50),
            || {
                let path = path.clone();
                async move {
                    match std::fs::read_to_string(&path) {
                        Ok(text) if !text.trim().is_empty() => Ok(text.trim_end_matches(['\n', '\r']).to_string()),
                        Ok(_) => Err("empty".to_string()),
                        Err(e) => Err(e.to_string()),
                    }
                }
            },
        )
        .await;
        self.admin_password = password;
        self.admin_token = self.create_token(ADMIN_USER, ADMIN_TOKEN_NAME, None).await;
    }

    /// Where the single node writes its first admin's password.
    pub fn initial_admin_password_path(&self) -> PathBuf {
        self.data_dir().join(INITIAL_ADMIN_PASSWORD_FILE)
    }

    /// The password of [`ADMIN_USER`].
    pub fn admin_password(&self) -> &str {
        &self.admin_password
    }

    /// A runner registration token made through the API as admin (`body` as
    /// `POST /api/v1/runners/registration-tokens` takes it); returns its value.
    pub async fn create_registration_token(&self, body: &Value) -> String {
        let response = self.cp(0).json(reqwest::Method::POST, "/api/v1/runners/registration-tokens", Some(body)).await;
        let created = response.expect(reqwest::StatusCode::CREATED);
        created["token"].as_str().expect("the creation answer holds the token").to_owned()
    }

    /// The reusable registration token the harness enrolls its runners with.
    pub fn registration_token(&self) -> &str {
        &self.registration_token
    }

    /// The NATS URL runners and other clients use (no credentials), the CA of its
    /// certificate (distributed mode only).
    pub fn nats_client(&self) -> (String, PathBuf) {
        let nats = &self.services.as_ref().expect("NATS exists in distributed mode only").nats_access;
        (nats.client_url.clone(), nats.tls_ca.clone())
    }

    /// The API token every client of [`Self::cp`] sends (admin's [`ADMIN_TOKEN_NAME`]).
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// Runs `control-plane <args>` (e.g. `user create …`, `token create …`) with the
    /// environment control plane 0 gets (the same store), to completion.
    pub async fn cli_output(&self, args: &[&str]) -> std::process::Output {
        let mut command = self.control_plane_command(0);
        command.args(args).stdin(std::process::Stdio::null());
        tokio::process::Command::from(command)
            .output()
            .await
            .unwrap_or_else(|e| panic!("cannot run control-plane {}: {e}", args.join(" ")))
    }

    /// [`Self::cli_output`], asserting success; returns stdout.
    pub async fn cli(&self, args: &[&str]) -> String {
        let output = self.cli_output(args).await;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "control-plane {} failed ({}):\n{stdout}\n{}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    }

    /// A user with a random password, made by the admin through `POST /api/v1/users`.
    pub async fn create_user(&self, username: &str, role: &str) -> TestUser {
        let password = random_password();
        let body = json!({ "username": username, "password": password, "role": role });
        let response = self.cp(0).create_user(&body).await;
        let user = response.expect(StatusCode::CREATED);
        assert_eq!(user["username"], username, "{}", response.text);
        assert_eq!(user["role"], role, "{}", response.text);
        let id = user["id"].as_str().unwrap_or_else(|| panic!("the new user has no id: {}", response.text));
        TestUser { id: id.to_string(), username: username.to_string(), password }
    }

    /// An API token of `user` named `name` (role: `role`, else the user's), made with
    /// `control-plane token create`; returns the token (`ff_…`).
    pub async fn create_token(&self, user: &str, name: &str, role: Option<&str>) -> String {
        let mut args = vec!["token", "create", "--user", user, "--name", name];
        if let Some(role) = role {
            args.extend(["--role", role]);
        }
        let stdout = self.cli(&args).await;
        let token = stdout.trim().to_string();
        assert!(
            token.starts_with("ff_") && !token.contains(char::is_whitespace),
            "`token create` must print the token alone on stdout, got {} bytes",
            stdout.len()
        );
        token
    }

    /// A browser with no cookie yet, at control plane `i`.
    pub fn session(&self, i: usize) -> Session {
        Session::new(self.cp(i).base_url.clone())
    }

    /// A browser signed in as `username` at control plane `i` (asserts 200).
    pub async fn login(&self, i: usize, username: &str, password: &str) -> Session {
        let session = self.session(i);
        let response = session.login(username, password).await;
        response.expect(StatusCode::OK);
        assert!(session.session_cookie().is_some(), "the login set no session cookie: {:?}", response.headers);
        session
    }

    /// Whether this is the single node ([`TestEnvOptions::single_node`]).
    pub fn is_single_node(&self) -> bool {
        self.options.mode == Mode::SingleNode
    }

    /// The single node's DATA_DIR (`<test dir>/data`: its SQLite database, live log
    /// spool and, under `runner/`, the embedded runner's data).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The single node's LOGS_DIR (`<test dir>/archive`): archived logs as files,
    /// under the same keys as the S3 objects of the distributed mode.
    pub fn archive_dir(&self) -> PathBuf {
        self.dir.join("archive")
    }

    /// Path of the process log of control-plane replica `i` (appended across restarts).
    pub fn control_plane_log_path(&self, i: usize) -> PathBuf {
        self.dir.join("logs").join(format!("control-plane-{i}.log"))
    }

    /// The services of the distributed mode; panics naming `what` in single-node mode.
    fn services(&mut self, what: &str) -> &mut Services {
        self.services.as_mut().unwrap_or_else(|| panic!("{what} is not available in single-node mode"))
    }

    /// The test's own nats-server; panics naming `what` when there is none.
    fn own_nats(&mut self, what: &str) -> &mut NatsServer {
        self.services(what).nats.as_mut().unwrap_or_else(|| panic!("{what}: this deployment shares another's NATS"))
    }

    /// How this deployment's processes reach its NATS server (to share it: [`TestEnvOptions::shared_nats`]).
    pub fn nats_access(&self) -> NatsAccess {
        self.services.as_ref().expect("NATS exists in distributed mode only").nats_access.clone()
    }

    /// Panics naming `what` in single-node mode (runner processes do not exist there).
    fn distributed_only(&self, what: &str) {
        assert!(!self.is_single_node(), "{what} is not available in single-node mode");
    }

    /// Client for control-plane replica `i`.
    pub fn cp(&self, i: usize) -> &ControlPlaneClient {
        &self.control_planes.get(i).unwrap_or_else(|| panic!("there is no control plane #{i}")).client
    }

    /// RUNNER_ID of runner `i` (in single-node mode, runner 0 is the embedded runner).
    pub fn runner_id(&self, i: usize) -> &str {
        if self.is_single_node() {
            assert_eq!(i, 0, "the single node has only runner #0 (its embedded runner)");
            return &self.embedded_runner_id;
        }
        &self.runners.get(i).unwrap_or_else(|| panic!("there is no runner #{i}")).id
    }

    /// Starts one more runner and waits until the control plane lists it; returns its index.
    pub async fn start_runner(&mut self) -> usize {
        self.start_runner_with_env(&[]).await
    }

    /// Starts one more runner with extra environment variables (e.g. `RUNNER_POOL`).
    pub async fn start_runner_with_env(&mut self, env: &[(&str, &str)]) -> usize {
        let i = self.launch_runner_with_env(env);
        self.wait_runner_registered(i).await;
        i
    }

    /// Starts one more runner without waiting for it to register (e.g. one expected to
    /// refuse to start); returns its index.
    pub fn launch_runner_with_env(&mut self, env: &[(&str, &str)]) -> usize {
        self.distributed_only("launch_runner_with_env");
        let i = self.runners.len();
        let id = format!("runner-{i}-{}", self.tag);
        let extra: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        self.runner_extra_env.insert(i, extra);
        let process = self.spawn_runner(i, &id);
        self.runners.push(Runner { id, process });
        i
    }

    /// Waits until the control plane lists runner `i` (one started with
    /// [`Self::launch_runner_with_env`]); panics if it exits first.
    pub async fn wait_runner_listed(&mut self, i: usize) {
        self.wait_runner_registered(i).await;
    }

    /// Starts runner `i` again after [`Self::kill_runner`] without waiting for it to be
    /// listed (e.g. while the database is down).
    pub fn relaunch_runner(&mut self, i: usize) {
        self.distributed_only("relaunch_runner");
        assert!(self.runners[i].process.exit_status().is_some(), "runner #{i} still runs; kill it first");
        let id = self.runners[i].id.clone();
        self.runners[i].process = self.spawn_runner(i, &id);
    }

    /// Runner `i`'s RUNNER_DATA_DIR.
    pub fn runner_data_dir(&self, i: usize) -> PathBuf {
        self.dir.join(format!("runner-{i}"))
    }

    /// Path of runner `i`'s process log (appended across restarts).
    pub fn runner_log_path(&self, i: usize) -> PathBuf {
        self.dir.join("logs").join(format!("runner-{i}.log"))
    }

    /// Starts runner `i` again after [`Self::kill_runner`]: a new process with the same
    /// RUNNER_ID and RUNNER_DATA_DIR (its log is appended to the same file), as a
    /// supervisor would after a crash.
    pub async fn restart_runner(&mut self, i: usize) {
        self.distributed_only("restart_runner");
        assert!(
            self.runners[i].process.exit_status().is_some(),
            "runner #{i} still runs; kill it before restarting it"
        );
        let id = self.runners[i].id.clone();
        self.runners[i].process = self.spawn_runner(i, &id);
        self.wait_runner_registered(i).await;
    }

    /// Spawns runner process `i` with RUNNER_ID `id` and data dir `<test dir>/runner-<i>`.
    fn spawn_runner(&self, i: usize, id: &str) -> ChildProcess {
        let nats = &self.services.as_ref().expect("runner processes exist in distributed mode only").nats_access;
        let data_dir = self.dir.join(format!("runner-{i}"));
        std::fs::create_dir_all(&data_dir).expect("cannot create runner data dir");
        let mut command = Command::new(self.dev.binary("runner-agent"));
        // The runner talks to NATS only: hide the shared services' addresses that
        // the test process itself was given, so a shortcut would fail here.
        for name in RUNNER_MUST_NOT_SEE {
            command.env_remove(name);
        }
        command
            .env("NATS_URL", &nats.client_url)
            .env("NATS_TLS_CA", &nats.tls_ca)
            .env("RUNNER_REGISTRATION_TOKEN", &self.registration_token)
            .env("NATS_SUBJECT_PREFIX", self.options.nats_subject_prefix.as_deref().unwrap_or(""))
            .env("RUNNER_ID", id)
            .env("RUNNER_CONCURRENCY", self.options.runner_concurrency.to_string())
            .env("RUNNER_DATA_DIR", &data_dir)
            .env("UV_CACHE_DIR", uv_cache_dir())
            .env("RUST_LOG", rust_log())
            .env("NO_COLOR", "1");
        command.envs(self.options.runner_env.iter().map(|(k, v)| (k, v)));
        if let Some(extra) = self.runner_extra_env.get(&i) {
            command.envs(extra.iter().map(|(k, v)| (k, v)));
        }
        let log = self.dir.join("logs").join(format!("runner-{i}.log"));
        ChildProcess::spawn(&format!("runner-agent #{i} ({id})"), command, &log)
    }

    /// kill -9 of runner `i` (its containers are left behind, as in a crash).
    pub fn kill_runner(&mut self, i: usize) {
        self.distributed_only("kill_runner");
        self.runners[i].process.kill();
    }

    /// SIGSTOP of runner `i` (by PID): it keeps its connections but does nothing,
    /// as a hung host would. [`Self::thaw_runner`] resumes it.
    pub fn freeze_runner(&mut self, i: usize) {
        self.distributed_only("freeze_runner");
        self.runners[i].process.signal("STOP");
    }

    /// SIGCONT of runner `i` (by PID).
    pub fn thaw_runner(&mut self, i: usize) {
        self.distributed_only("thaw_runner");
        self.runners[i].process.signal("CONT");
    }

    /// The URL of the test's nats-server (distributed mode only).
    pub fn nats_url(&self) -> String {
        self.services.as_ref().expect("NATS exists in distributed mode only").nats_access.url.clone()
    }

    /// kill -9 of the test's nats-server.
    pub fn kill_nats(&mut self) {
        self.own_nats("kill_nats").kill();
    }

    /// SIGSTOP of the test's nats-server: connections stay open, nothing is answered
    /// (a hung broker). [`Self::thaw_nats`] resumes it.
    pub fn freeze_nats(&mut self) {
        self.own_nats("freeze_nats").signal("STOP");
    }

    /// SIGCONT of the test's nats-server.
    pub fn thaw_nats(&mut self) {
        self.own_nats("thaw_nats").signal("CONT");
    }

    /// Restarts nats-server on the same port with an empty JetStream store.
    pub async fn restart_nats_with_empty_store(&mut self) {
        self.own_nats("restart_nats_with_empty_store").restart_with_empty_store().await;
    }

    /// Restarts nats-server on the same port with its store directory kept (kills it
    /// first if it still runs): streams, consumers and messages on disk survive.
    pub async fn restart_nats_keeping_store(&mut self) {
        self.own_nats("restart_nats_keeping_store").restart_keeping_store().await;
    }

    /// kill -9 of control-plane replica `i` (by PID); its client stays in place and
    /// fails to connect from now on. In single-node mode this is the whole node:
    /// the job containers it started keep running.
    pub fn kill_control_plane(&mut self, i: usize) {
        self.control_planes[i].process.kill();
    }

    /// Starts control-plane replica `i` again after [`Self::kill_control_plane`] (or
    /// after it exited): a new process with the same environment, DATA_DIR and port
    /// (so [`Self::cp`] keeps working), its output appended to the same log file.
    /// Waits for /health, and in single-node mode for the embedded runner to be listed.
    pub async fn restart_control_plane(&mut self, i: usize) {
        assert!(
            self.control_planes[i].process.exit_status().is_some(),
            "control plane #{i} still runs; kill it before restarting it"
        );
        let port = self.control_planes[i].port;
        self.control_planes[i].process = self.spawn_control_plane(i, port);
        self.wait_control_plane_ready(i).await;
        if self.is_single_node() {
            self.wait_embedded_runner_listed().await;
        }
    }

    /// Sends `signal` (a name such as `TERM`, `INT`, `STOP`) to runner `i` by PID.
    pub fn signal_runner(&mut self, i: usize, signal: &str) {
        self.distributed_only("signal_runner");
        self.runners[i].process.signal(signal);
    }

    /// PID of runner process `i` (panics once the test killed it).
    pub fn runner_pid(&self, i: usize) -> u32 {
        self.distributed_only("runner_pid");
        self.runners[i].process.pid().unwrap_or_else(|| panic!("runner #{i} was killed by the test"))
    }

    /// PID of control-plane replica `i` (panics once the test killed it).
    pub fn control_plane_pid(&self, i: usize) -> u32 {
        self.control_planes[i].process.pid().unwrap_or_else(|| panic!("control plane #{i} was killed by the test"))
    }

    /// Waits until runner `i` exits by itself and returns its exit status; panics
    /// (with its log tail) after `timeout`.
    pub async fn wait_runner_exit(&mut self, i: usize, timeout: Duration) -> std::process::ExitStatus {
        self.distributed_only("wait_runner_exit");
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.runners[i].process.try_exit_status() {
                return status;
            }
            if std::time::Instant::now() >= deadline {
                panic!(
                    "runner #{i} did not exit within {timeout:?}; its log:\n{}",
                    self.runners[i].process.log_tail(LOG_TAIL_LINES)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The exit status of runner `i` if it has exited by itself, `None` while it runs.
    pub fn runner_exit_status(&mut self, i: usize) -> Option<std::process::ExitStatus> {
        self.distributed_only("runner_exit_status");
        self.runners[i].process.try_exit_status()
    }

    fn private_pg(&mut self, what: &str) -> &mut PrivatePostgres {
        self.services(what)
            .private_pg
            .as_mut()
            .expect("this TestEnv has no private Postgres; use TestEnvOptions::private_postgres()")
    }

    /// `pg_ctl -m immediate stop` of the private Postgres (connections cut, as in a crash).
    pub async fn stop_postgres(&mut self) {
        self.private_pg("stop_postgres").stop_immediate().await;
    }

    /// `pg_ctl -w start` of the private Postgres on its port, after [`Self::stop_postgres`].
    pub async fn start_postgres(&mut self) {
        self.private_pg("start_postgres").start_server().await;
    }

    /// Immediate stop, then start again, of the private Postgres.
    pub async fn restart_postgres(&mut self) {
        self.stop_postgres().await;
        self.start_postgres().await;
    }

    /// The TCP ports this deployment's services listen on (127.0.0.1 in tests): each
    /// control plane, and in distributed mode NATS and Postgres.
    pub fn service_ports(&self) -> Vec<(String, u16)> {
        let mut ports: Vec<(String, u16)> =
            self.control_planes.iter().enumerate().map(|(i, cp)| (format!("control-plane-{i}"), cp.port)).collect();
        if let Some(services) = &self.services {
            if let Some(nats) = &services.nats {
                ports.push(("nats".into(), nats.port));
            }
            let db = reqwest::Url::parse(&services.db.url)
                .unwrap_or_else(|e| panic!("DATABASE_URL is not a URL ({e}): {}", services.db.url));
            ports.push(("postgres".into(), db.port().unwrap_or(5432)));
        }
        ports
    }

    /// Starts `name` on control plane 0 and returns the created run (asserts 201).
    pub async fn run_pipeline(&self, name: &str, params: &[(&str, &str)]) -> Run {
        let body = (!params.is_empty()).then(|| {
            let params: serde_json::Map<String, Value> =
                params.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
            json!({ "params": params })
        });
        let run = self.cp(0).create_run(name, body.as_ref()).await.run(StatusCode::CREATED);
        assert_eq!(run.pipeline_name, name, "created run names another pipeline: {run:?}");
        run
    }

    /// `GET /api/v1/runs/{id}` on control plane 0 (asserts 200).
    pub async fn get_run(&self, run_id: &str) -> Run {
        self.cp(0).get_run(run_id).await.run(StatusCode::OK)
    }

    /// Polls the run every 100 ms until `predicate` holds; panics after `timeout`.
    pub async fn wait_for_status(&self, run_id: &str, predicate: impl Fn(&Run) -> bool, timeout: Duration) -> Run {
        self.wait_for_run(run_id, "reach the expected state", predicate, timeout).await
    }

    /// Waits until the run is success, failed or cancelled.
    pub async fn wait_final(&self, run_id: &str, timeout: Duration) -> Run {
        self.wait_for_run(run_id, "be final (success, failed or cancelled)", Run::is_final, timeout).await
    }

    async fn wait_for_run(&self, run_id: &str, what: &str, predicate: impl Fn(&Run) -> bool, timeout: Duration) -> Run {
        let predicate = &predicate;
        poll_until(&format!("run {run_id} to {what}"), timeout, Duration::from_millis(100), || async move {
            let run = self.get_run(run_id).await;
            if predicate(&run) { Ok(run) } else { Err(format!("{run:?}")) }
        })
        .await
    }

    /// `GET …/logs` on control plane 0, asserting 200 text/plain.
    pub async fn logs(&self, run_id: &str) -> Bytes {
        let response = self.cp(0).get_logs(run_id).await;
        assert_eq!(
            response.status,
            StatusCode::OK,
            "GET logs of {run_id}: {}",
            String::from_utf8_lossy(&response.body)
        );
        assert!(
            response.content_type.as_deref().is_some_and(|c| c.starts_with("text/plain")),
            "GET logs of {run_id}: content-type {:?} is not text/plain",
            response.content_type
        );
        response.body
    }

    /// Polls `GET …/logs` until it contains `needle`; returns the log then.
    pub async fn wait_for_log(&self, run_id: &str, needle: &str, timeout: Duration) -> Bytes {
        poll_until(
            &format!("the log of run {run_id} to contain {needle:?}"),
            timeout,
            Duration::from_millis(100),
            || async move {
                let log = self.logs(run_id).await;
                if contains(&log, needle.as_bytes()) {
                    Ok(log)
                } else {
                    Err(format!("log so far: {:?}", String::from_utf8_lossy(&log)))
                }
            },
        )
        .await
    }

    /// The SSE log stream of a run on control plane 0.
    pub async fn stream_logs(&self, run_id: &str, last_event_id: Option<u64>) -> SseStream {
        self.cp(0).stream_logs(run_id, last_event_id).await
    }

    /// Makes the log store refuse writes to the test's bucket, and only to it (the S3
    /// server is shared): removes the (still empty) bucket and puts a plain file where
    /// s3s-fs keeps it as a directory, so every upload to it fails.
    pub async fn s3_refuse_writes(&self) {
        let services = self.services.as_ref().expect("S3 exists in distributed mode only");
        s3::delete_bucket(&services.s3, &services.bucket).await.unwrap_or_else(|e| panic!("removing the bucket: {e}"));
        std::fs::write(self.s3_bucket_path(), b"writes refused by the test\n")
            .unwrap_or_else(|e| panic!("cannot block the bucket's directory: {e}"));
    }

    /// Undoes [`Self::s3_refuse_writes`]: the bucket exists again, empty.
    pub async fn s3_accept_writes(&self) {
        let services = self.services.as_ref().expect("S3 exists in distributed mode only");
        std::fs::remove_file(self.s3_bucket_path()).unwrap_or_else(|e| panic!("cannot unblock the bucket: {e}"));
        s3::create_bucket(&services.s3, &services.bucket).await.unwrap_or_else(|e| panic!("restoring the bucket: {e}"));
    }

    fn s3_bucket_path(&self) -> PathBuf {
        let services = self.services.as_ref().expect("S3 exists in distributed mode only");
        let dir =
            self.dev.s3_data_dir.as_ref().expect("FASTFLOW_S3_DATA_DIR is not set: re-run scripts/dev-deps.sh up");
        dir.join(&services.bucket)
    }

    /// An object of the log store, `None` when it does not exist: the test's S3
    /// bucket in distributed mode, the file `<archive dir>/<key>` in single-node mode.
    pub async fn s3_get(&self, key: &str) -> Option<Bytes> {
        match &self.services {
            Some(services) => s3::get(&services.s3, &services.bucket, key).await,
            None => {
                let path = self.archive_path(key);
                match tokio::fs::read(&path).await {
                    Ok(bytes) => Some(Bytes::from(bytes)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                    Err(e) => panic!("cannot read the archived file {}: {e}", path.display()),
                }
            }
        }
    }

    /// Length + SHA-256 of an object of the log store (see [`Self::s3_get`]), streamed.
    pub async fn s3_digest(&self, key: &str) -> Option<Digest> {
        match &self.services {
            Some(services) => s3::digest(&services.s3, &services.bucket, key).await,
            None => file_digest(&self.archive_path(key)).await,
        }
    }

    /// The archived log of `attempt` of a run, from the log store (key
    /// `runs/<run_id>/<attempt>.log`, an S3 object or a file; see [`Self::s3_get`]).
    pub async fn archived_log(&self, run_id: &str, attempt: i64) -> Bytes {
        let key = format!("runs/{run_id}/{attempt}.log");
        self.s3_get(&key).await.unwrap_or_else(|| panic!("{} does not exist", self.describe_key(&key)))
    }

    /// Where a log-store key lives, for messages.
    fn describe_key(&self, key: &str) -> String {
        match &self.services {
            Some(services) => format!("S3 object {}/{key}", services.bucket),
            None => format!("archived file {}", self.archive_path(key).display()),
        }
    }

    fn archive_path(&self, key: &str) -> PathBuf {
        assert!(!key.starts_with('/') && !key.split('/').any(|part| part == ".."), "bad log-store key {key:?}");
        self.archive_dir().join(key)
    }

    pub async fn docker_containers_with_label(&self, run_id: &str) -> Vec<String> {
        docker::docker_containers_with_label(run_id).await
    }

    /// Containers created for `run_id` since this environment started (counted by a
    /// live `docker events` subscription, which cannot miss events under load).
    pub async fn docker_created_count(&self, run_id: &str) -> usize {
        self.creations.count(run_id, Duration::from_secs(1)).await
    }

    /// `docker inspect` of one container; `None` when it does not exist.
    pub async fn docker_inspect(&self, container_id: &str) -> Option<Value> {
        docker::docker_inspect(container_id).await
    }

    /// Spawns control-plane replica `i` listening on `port`.
    fn spawn_control_plane(&self, i: usize, port: u16) -> ChildProcess {
        let mut command = self.control_plane_command(i);
        command.env("BIND_ADDR", format!("127.0.0.1:{port}"));
        let name = if self.is_single_node() {
            format!("control-plane #{i} (single node)")
        } else {
            format!("control-plane #{i}")
        };
        ChildProcess::spawn(&name, command, &self.control_plane_log_path(i))
    }

    /// `DATABASE_URL` as the control planes get it: with the password of
    /// [`TestEnvOptions::credentials_in_urls`] when the test set one.
    fn database_url_for_processes(&self, url: &str) -> String {
        let Some(secret) = &self.options.credentials_in_urls else { return url.to_owned() };
        let mut url = reqwest::Url::parse(url).unwrap_or_else(|e| panic!("DATABASE_URL is not a URL ({e}): {url}"));
        url.set_password(Some(secret)).unwrap_or_else(|()| panic!("DATABASE_URL cannot take a password: {url}"));
        url.to_string()
    }

    /// The `control-plane` binary with the environment of replica `i` (all but
    /// `BIND_ADDR`): the serving process, and the CLI on the same store.
    fn control_plane_command(&self, i: usize) -> Command {
        let mut command = Command::new(self.dev.binary("control-plane"));
        match &self.services {
            Some(services) => {
                command
                    // Used only where a test switches a seam to SQLite or files; without it
                    // the default `./data` would be the test process's working directory.
                    .env("DATA_DIR", self.dir.join(format!("data-cp{i}")))
                    .env("DATABASE_URL", self.database_url_for_processes(&services.db.url))
                    .env("NATS_URL", &services.nats_access.url)
                    .env("NATS_TLS_CA", &services.nats_access.tls_ca)
                    .env("NATS_AUTH_CALLOUT_SEED", &services.nats_access.callout_seed)
                    .env("NATS_SUBJECT_PREFIX", self.options.nats_subject_prefix.as_deref().unwrap_or(""))
                    .env("S3_ENDPOINT", &self.dev.s3_endpoint)
                    .env("S3_BUCKET", &services.bucket)
                    .env("S3_REGION", &self.dev.s3_region)
                    .env("AWS_ACCESS_KEY_ID", &self.dev.aws_access_key_id)
                    .env("AWS_SECRET_ACCESS_KEY", &self.dev.aws_secret_access_key);
            }
            None => {
                // No service addresses at all: the single node must not need them.
                for name in SINGLE_NODE_MUST_NOT_SEE {
                    command.env_remove(name);
                }
                command
                    .env("DATA_DIR", self.data_dir())
                    .env("LOGS_DIR", self.archive_dir())
                    .env("RUNNER_ID", &self.embedded_runner_id)
                    .env("RUNNER_CONCURRENCY", self.options.runner_concurrency.to_string())
                    .env("UV_CACHE_DIR", uv_cache_dir());
                if self.options.runners == 0 {
                    // As if there were no runner: runs of the default pool stay queued.
                    command.env("RUNNER_POOL", format!("nobody-{}", self.tag));
                }
            }
        }
        command
            .env("PIPELINES_DIR", &self.pipelines_dir)
            .env("WORKER_BASE_IMAGE", &self.dev.worker_base_image)
            .env("RUST_LOG", rust_log())
            .env("NO_COLOR", "1");
        if self.is_single_node() {
            command.envs(self.options.runner_env.iter().map(|(k, v)| (k, v)));
        }
        command.envs(self.options.control_plane_env.iter().map(|(k, v)| (k, v)));
        command
    }

    async fn wait_control_plane_ready(&mut self, i: usize) {
        let url = format!("{}/health", self.control_planes[i].client.base_url);
        let http = reqwest::Client::new();
        let cp = &mut self.control_planes[i];
        let ready = poll_until(
            &format!("control plane #{i} to answer /health with 200 and all checks ok"),
            Duration::from_secs(60),
            Duration::from_millis(100),
            || {
                let exited = cp.process.exit_status();
                let request = http.get(&url).timeout(Duration::from_secs(5)).send();
                async move {
                    if let Some(status) = exited {
                        return Ok(Err(status));
                    }
                    let response = request.await.map_err(|e| e.to_string())?;
                    let status = response.status();
                    let text = response.text().await.unwrap_or_default();
                    if status == StatusCode::OK { Ok(Ok(text)) } else { Err(format!("HTTP {status}: {text}")) }
                }
            },
        )
        .await;
        let text = ready.unwrap_or_else(|status| {
            panic!(
                "control plane #{i} exited during start-up ({status}); its log:\n{}",
                self.control_planes[i].process.log_tail(LOG_TAIL_LINES)
            )
        });
        let body: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("/health body is not JSON ({e}): {text}"));
        assert_eq!(
            body,
            json!({"status": "ok", "checks": {"database": "ok", "bus": "ok", "log_store": "ok"}}),
            "unexpected /health body of control plane #{i}"
        );
    }

    async fn wait_runner_registered(&mut self, i: usize) {
        let client = self.cp(0).clone();
        let runner = &mut self.runners[i];
        if let Err(status) = wait_runner_listed(&client, &runner.id, &mut runner.process).await {
            panic!(
                "runner-agent #{i} exited during start-up ({status}); its log:\n{}",
                self.runners[i].process.log_tail(LOG_TAIL_LINES)
            );
        }
    }

    /// Waits until the single node lists its embedded runner in GET /api/v1/runners.
    async fn wait_embedded_runner_listed(&mut self) {
        let client = self.cp(0).clone();
        let id = self.embedded_runner_id.clone();
        if let Err(status) = wait_runner_listed(&client, &id, &mut self.control_planes[0].process).await {
            panic!(
                "the single node exited before listing its embedded runner {id} ({status}); its log:\n{}",
                self.control_planes[0].process.log_tail(LOG_TAIL_LINES)
            );
        }
    }

    /// Stops every process; returns `(name, how it ended, log path)` for each.
    fn stop_all(&mut self) -> Vec<(String, String, PathBuf)> {
        let mut stopped = Vec::new();
        let mut stop = |process: &mut ChildProcess| {
            let how = process.stop_and_describe();
            stopped.push((process.name.clone(), how, process.log_path.clone()));
        };
        // Runners first, so no job is started on the way down; NATS last.
        self.runners.iter_mut().for_each(|r| stop(&mut r.process));
        self.control_planes.iter_mut().for_each(|cp| stop(&mut cp.process));
        if let Some(nats) = self.services.as_mut().and_then(|s| s.nats.as_mut()) {
            stop(&mut nats.process);
        }
        stopped
    }
}

impl Services {
    async fn start(dev: &DevEnv, dir: &Path, options: &TestEnvOptions) -> Self {
        let max_payload = options.nats_max_payload.as_deref().unwrap_or(nats::DEFAULT_MAX_PAYLOAD);
        let password = options.credentials_in_urls.as_deref();
        let (nats, nats_access) = match &options.shared_nats {
            Some(access) => (None, access.clone()),
            None => {
                let nats =
                    NatsServer::start(&dev.nats_server_bin, &dev.tls_dir, &dir.join("nats"), max_payload, password)
                        .await;
                let access = nats.access();
                (Some(nats), access)
            }
        };
        let private_pg = if options.private_postgres {
            Some(PrivatePostgres::start(&dir.join("logs").join("postgres.log")).await)
        } else {
            None
        };
        let db = match &private_pg {
            Some(pg) => TestDatabase::create(&pg.admin_url(), &pg.admin_url()).await,
            None => TestDatabase::create(&dev.pg_admin_url, &dev.database_url).await,
        };
        let s3 = s3::client(dev);
        let bucket = format!("t-{}", uuid::Uuid::new_v4().simple());
        Self { nats, nats_access, db, private_pg, s3, bucket }
    }
}

/// Polls GET /api/v1/runners until it lists `id`; `Err(how it ended)` when
/// `process` (the runner, or the single node) exits first.
async fn wait_runner_listed(client: &ControlPlaneClient, id: &str, process: &mut ChildProcess) -> Result<(), String> {
    poll_until(
        &format!("runner {id} to appear in GET /api/v1/runners"),
        Duration::from_secs(30),
        Duration::from_millis(100),
        || {
            let exited = process.exit_status();
            let client = client.clone();
            let id = id.to_string();
            async move {
                if let Some(status) = exited {
                    return Ok(Err(status));
                }
                let response = client.list_runners().await;
                let found =
                    response.body.as_array().is_some_and(|runners| runners.iter().any(|r| r["id"] == id.as_str()));
                if response.status == StatusCode::OK && found {
                    Ok(Ok(()))
                } else {
                    Err(format!("HTTP {}: {}", response.status, response.text))
                }
            }
        },
    )
    .await
}

/// Length + SHA-256 of a file, streamed; `None` when it does not exist.
async fn file_digest(path: &Path) -> Option<Digest> {
    use tokio::io::AsyncReadExt;
    let mut file = match tokio::fs::File::open(path).await {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => panic!("cannot open the archived file {}: {e}", path.display()),
    };
    let mut digest = s3::DigestBuilder::default();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buffer)
            .await
            .unwrap_or_else(|e| panic!("cannot read the archived file {}: {e}", path.display()));
        if n == 0 {
            return Some(digest.finish());
        }
        digest.update(&buffer[..n]);
    }
}

fn print_process_logs(stopped: &[(String, String, PathBuf)]) {
    for (name, how, path) in stopped {
        eprintln!(
            "\n----- {name}: {how}; last {LOG_TAIL_LINES} lines of {} -----\n{}",
            path.display(),
            log_tail(path, LOG_TAIL_LINES)
        );
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        let failed = std::thread::panicking();
        let stopped = self.stop_all();
        if failed || std::env::var_os("TEST_LOG").is_some() {
            print_process_logs(&stopped);
        }

        // Async cleanup on a thread of its own: Drop may run inside or outside a runtime.
        let mut runner_ids: Vec<String> = self.runners.iter().map(|r| r.id.clone()).collect();
        if self.is_single_node() {
            runner_ids.push(self.embedded_runner_id.clone());
        }
        let labels: Vec<String> = runner_ids.iter().map(|id| format!("fastflow-runner-id={id}")).collect();
        let services = self.services.as_ref().map(|s| (s.db.clone(), s.s3.clone(), s.bucket.clone()));
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("cannot build cleanup runtime");
            runtime.block_on(async move {
                for label in &labels {
                    docker::remove_containers_with_label(label).await;
                }
                if let Some((db, s3, bucket)) = services {
                    if let Err(e) = db.drop_database().await {
                        eprintln!("warning: could not drop test database {}: {e}", db.name);
                    }
                    if let Err(e) = s3::delete_bucket(&s3, &bucket).await {
                        eprintln!("warning: could not delete test bucket {bucket}: {e}");
                    }
                }
            });
        });
        let _ = cleanup.join();

        if failed {
            eprintln!("test files kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn rust_log() -> String {
    std::env::var("FASTFLOW_TEST_RUST_LOG").unwrap_or_else(|_| "info".to_string())
}

/// libtest names each test's thread after the test's path. The last two segments
/// are kept, so that the two variants of an [`crate::in_both_modes!`] test
/// (`<name>::distributed`, `<name>::single_node`) get distinct, recognisable dirs.
fn test_name() -> String {
    dir_name_of(std::thread::current().name().unwrap_or("test"))
}

fn dir_name_of(thread_name: &str) -> String {
    let sanitize = |s: &str, max: usize| -> String {
        s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '-' }).take(max).collect()
    };
    let mut segments: Vec<&str> = thread_name.rsplit("::").take(2).collect();
    segments.reverse();
    match segments.as_slice() {
        [test, variant] => format!("{}-{}", sanitize(test, 60), sanitize(variant, 20)),
        _ => sanitize(thread_name, 60),
    }
}

/// Writes `content` to a new file only its owner can read.
fn write_private(path: &Path, content: &str) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
    file.write_all(content.as_bytes()).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap_or_else(|e| panic!("cannot create {}: {e}", to.display()));
    let entries = std::fs::read_dir(from).unwrap_or_else(|e| panic!("cannot read {}: {e}", from.display()));
    for entry in entries {
        let entry = entry.expect("cannot read dir entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("no file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target)
                .unwrap_or_else(|e| panic!("cannot copy {} to {}: {e}", entry.path().display(), target.display()));
        }
    }
}

/// Whether `haystack` contains `needle` as a byte substring.
pub(crate) fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::dir_name_of;

    #[test]
    fn both_variants_of_a_test_get_distinct_dir_names() {
        let long = "a_very_long_test_name_that_goes_on_and_on_past_sixty_characters_for_sure";
        let distributed = dir_name_of(&format!("{long}::distributed"));
        let single = dir_name_of(&format!("{long}::single_node"));
        assert_ne!(distributed, single);
        assert!(single.ends_with("-single_node"), "{single}");
        assert_eq!(dir_name_of("plain_test"), "plain_test");
        assert_eq!(dir_name_of("module::plain_test"), "module-plain_test");
    }
}
