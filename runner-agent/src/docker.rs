//! The runner's only door to the Docker engine.
//!
//! Architecture invariant: no other module of the runner names `bollard`. Everything the runner
//! needs from the engine (pull, create/attach/start, wait, stop, remove, list by label, inspect,
//! read an existing container's log) is a method here, and engine failures arrive as [`Error`],
//! sorted by what the caller does next.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use bollard::ClientVersion;
use bollard::container::LogOutput;
use bollard::errors::Error as EngineError;
use bollard::models::{
    ContainerCreateBody, ContainerStateStatusEnum, CreateImageInfo, HostConfig, HostConfigLogConfig, Mount, MountType,
    NetworkCreateRequest,
};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, CreateImageOptionsBuilder, InspectContainerOptions,
    ListContainersOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder, StartContainerOptions,
    StopContainerOptionsBuilder, WaitContainerOptions,
};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;

/// Where the engine listens when `DOCKER_HOST` is not set (bollard's own default).
const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";
/// bollard's default per-request timeout; it bounds the wait for response headers only.
const REQUEST_TIMEOUT_SECS: u64 = 120;
/// Extra time a stop request may take beyond the grace period (SIGKILL, teardown).
const STOP_SLACK: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The image is neither local nor pullable: the run fails, retrying will not help.
    #[error("image {image} is not available: {message}")]
    ImageUnavailable { image: String, message: String },
    /// The container spec was rejected (bad mount, bad path): the run fails.
    #[error("invalid container spec: {message}")]
    InvalidSpec { message: String },
    /// A container with this name exists already, e.g. left over from a crashed runner.
    #[error("container name {name} is already in use: {message}")]
    NameConflict { name: String, message: String },
    /// The container does not exist (any more).
    #[error("container {0} not found")]
    NotFound(String),
    /// A network of the runner's name exists with other settings (made by hand or by
    /// another tool): the runner will not attach jobs to it.
    #[error(
        "docker network {name} exists but {problem}; remove it (`docker network rm {name}`) and the runner recreates it"
    )]
    NetworkMismatch { name: String, problem: String },
    /// The engine ended a wait without an exit status (engine restart, dropped connection).
    #[error("waiting for container {0} ended without an exit status")]
    WaitInterrupted(String),
    /// Anything else from the engine: unreachable, internal errors. Usually worth a retry.
    #[error("docker engine: {0}")]
    Engine(#[from] EngineError),
}

/// A cheap, cloneable handle to one Docker engine.
#[derive(Clone, Debug)]
pub struct Docker {
    inner: bollard::Docker,
}

/// What to run. Built by the executor from a job step.
#[derive(Clone, Debug, Default)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    /// Empty means the image's default command.
    pub command: Vec<String>,
    pub env: Vec<(String, String)>,
    pub labels: HashMap<String, String>,
    pub mounts: Vec<BindMount>,
    pub working_dir: Option<String>,
    pub limits: Limits,
    pub log_driver: LogDriver,
    /// The attempt's log cap: bounds the engine's copy of the output too.
    pub log_max_bytes: Option<u64>,
    pub network: NetworkMode,
}

/// Which network a job container joins.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum NetworkMode {
    /// The engine's default bridge (`docker0`).
    #[default]
    DefaultBridge,
    /// No network interface but loopback.
    None,
    /// A user-defined network, by name (see [`Docker::ensure_bridge_network`]).
    Named(String),
}

impl NetworkMode {
    fn host_config(&self) -> Option<String> {
        match self {
            NetworkMode::DefaultBridge => None,
            NetworkMode::None => Some("none".into()),
            NetworkMode::Named(name) => Some(name.clone()),
        }
    }
}

/// A user-defined bridge network without traffic between its containers.
#[derive(Clone, Copy, Debug)]
pub struct BridgeNetwork<'a> {
    pub name: &'a str,
    /// The host interface's name, fixed so that firewall rules can name it (≤ 15 bytes).
    pub bridge: &'a str,
}

impl BridgeNetwork<'_> {
    /// What the engine must report for the network to be ours: the bridge name, no
    /// inter-container traffic (`enable_icc=false`), outbound NAT on.
    fn options(&self) -> [(&'static str, String); 3] {
        [
            ("com.docker.network.bridge.name", self.bridge.to_owned()),
            ("com.docker.network.bridge.enable_icc", "false".to_owned()),
            ("com.docker.network.bridge.enable_ip_masquerade", "true".to_owned()),
        ]
    }

    /// Why an existing network with this name is not the one asked for, if it is not.
    fn mismatch(&self, driver: Option<&str>, internal: bool, options: &HashMap<String, String>) -> Option<String> {
        if driver != Some("bridge") {
            return Some(format!("uses driver {}", driver.unwrap_or("(none)")));
        }
        if internal {
            return Some("is internal (no outbound traffic)".into());
        }
        self.options().into_iter().find_map(|(key, want)| {
            let have = options.get(key).map(String::as_str);
            // The engine omits options left at their default; masquerading defaults to on.
            let ok = have == Some(want.as_str()) || (have.is_none() && key.ends_with("enable_ip_masquerade"));
            (!ok).then(|| format!("has {key}={} instead of {want}", have.unwrap_or("(unset)")))
        })
    }
}

/// Where the engine keeps a job container's own copy of its output. The runner streams
/// the output through attach either way; the engine's copy is what `logs` re-reads after
/// a runner restart, so it must keep everything from the start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogDriver {
    /// The engine's `local` driver without rotation: it writes a binary format instead
    /// of a JSON line per output line, which lets a chatty container print ~1.5x faster
    /// than under `json-file` (BENCHMARKS.md), and `logs` still reads it back.
    #[default]
    Local,
    /// Whatever the engine is configured with (`daemon.json`), e.g. to ship job output
    /// to journald or fluentd as well. Re-attaching after a runner restart then depends
    /// on that driver being readable and not rotating the start of the output away.
    EngineDefault,
}

impl LogDriver {
    /// Options of the `local` driver. Without a log cap the whole output stays in one
    /// file: the driver's defaults (5 files of 20 MB) would rotate the start of a long
    /// log away, and `max-size=0` makes engine 20.10 spin (measured). With a cap, the
    /// engine's copy is bounded too, to two files of twice the cap plus 1 MiB: the
    /// driver frames each line with ~26 bytes, so that holds the start of the output
    /// until the cap is reached for lines of 9 bytes and more (a restarted runner skips
    /// the lines it published by count, so the start must still be there), while a job
    /// that prints gigabytes past its cap cannot fill the host's disk.
    fn local_options(log_max_bytes: Option<u64>) -> HashMap<String, String> {
        let (size, files) = match log_max_bytes {
            Some(cap) => (format!("{}k", cap.div_ceil(1024).saturating_mul(2).saturating_add(1024)), "2"),
            None => ("1t".to_owned(), "1"),
        };
        HashMap::from([
            ("max-size".to_owned(), size),
            ("max-file".to_owned(), files.to_owned()),
            ("compress".to_owned(), "false".to_owned()),
        ])
    }

    fn host_config(self, log_max_bytes: Option<u64>) -> Option<HostConfigLogConfig> {
        match self {
            LogDriver::Local => Some(HostConfigLogConfig {
                typ: Some("local".into()),
                config: Some(Self::local_options(log_max_bytes)),
            }),
            LogDriver::EngineDefault => None,
        }
    }
}

/// Resource limits and the capabilities given back after dropping all of them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    pub memory_bytes: Option<i64>,
    pub nano_cpus: Option<i64>,
    pub pids: Option<i64>,
    /// Capabilities an administrator allows (`CONTAINER_CAP_ADD`); all others are dropped.
    pub cap_add: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct BindMount {
    pub host_path: PathBuf,
    pub container_path: String,
    pub read_only: bool,
}

/// A started container and its output, attached before the start so nothing is missed.
pub struct Started {
    pub container_id: String,
    pub output: OutputStream,
}

/// Stdout and stderr chunks in the order the engine sent them; ends when the container's
/// output ends. It must be drained: the engine blocks the container's writes while it is not.
pub type OutputStream = Pin<Box<dyn Stream<Item = Result<Output, Error>> + Send>>;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    Stdout(Bytes),
    Stderr(Bytes),
}

/// A container as found on the engine, e.g. left running by an earlier runner process.
#[derive(Clone, Debug)]
pub struct Inspected {
    pub id: String,
    pub labels: HashMap<String, String>,
    pub state: State,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Created but never started.
    Created,
    /// Running, paused or restarting: it may still print and has no exit code yet.
    Running,
    /// Exited (or dead) with this exit code.
    Exited(i64),
    /// Being removed.
    Removing,
}

impl Docker {
    /// Connects to `DOCKER_HOST` (or the local socket) and settles on an API version both sides
    /// speak, since the engine may be older than bollard's default.
    pub async fn connect() -> Result<Docker, Error> {
        let inner = bollard::Docker::connect_with_defaults()?;
        match inner.negotiate_version().await {
            Ok(inner) => Ok(Docker { inner }),
            Err(err) => Self::connect_at_server_maximum(err).await,
        }
    }

    /// A client that has not spoken to the engine yet (tests whose code never reaches it).
    #[cfg(test)]
    pub(crate) fn unconnected() -> Result<Docker, Error> {
        Ok(Docker { inner: bollard::Docker::connect_with_defaults()? })
    }

    /// Older engines (20.10) reject bollard's versioned `/version` request with "client version
    /// X is too new. Maximum supported API version is Y", so `negotiate_version` cannot work;
    /// reconnect at the version that message names instead.
    async fn connect_at_server_maximum(err: EngineError) -> Result<Docker, Error> {
        let Some(version) = max_version_from_error(&err) else {
            return Err(err.into());
        };
        let host = docker_host();
        let inner = if host.starts_with("unix://") {
            bollard::Docker::connect_with_unix(&host, REQUEST_TIMEOUT_SECS, &version)?
        } else if host.starts_with("tcp://") || host.starts_with("http://") {
            bollard::Docker::connect_with_http(&host, REQUEST_TIMEOUT_SECS, &version)?
        } else {
            return Err(err.into());
        };
        tracing::debug!(api_version = %version, "docker engine is older than bollard's default");
        Ok(Docker { inner: inner.negotiate_version().await? })
    }

    pub async fn ping(&self) -> Result<(), Error> {
        self.inner.ping().await?;
        Ok(())
    }

    /// Makes sure `image` is present locally, pulling it if needed. Pull progress goes to
    /// `progress` as one line per layer status change, for the job's log.
    pub async fn ensure_image(&self, image: &str, progress: &mpsc::Sender<String>) -> Result<(), Error> {
        match self.inner.inspect_image(image).await {
            Ok(_) => Ok(()),
            Err(err) if status_of(&err) == Some(404) => self.pull(image, progress).await,
            Err(err) => Err(err.into()),
        }
    }

    async fn pull(&self, image: &str, progress: &mpsc::Sender<String>) -> Result<(), Error> {
        let reference = with_default_tag(image);
        let options = CreateImageOptionsBuilder::new().from_image(&reference).build();
        let mut events = self.inner.create_image(Some(options), None, None);
        let mut lines = PullLines::default();
        while let Some(event) = events.next().await {
            let line = match event {
                Ok(info) => lines.line_for(&info),
                Err(err) => {
                    let err = pull_error(image, err);
                    // Best effort: the job log should show why, the caller gets the error too.
                    let _ = progress.send(format!("pull failed: {err}")).await;
                    return Err(err);
                }
            };
            if let Some(line) = line {
                // A dropped receiver only means nobody watches the progress; keep pulling.
                let _ = progress.send(line).await;
            }
        }
        Ok(())
    }

    /// Creates the container, attaches to its stdout and stderr, then starts it. Attaching
    /// first is what makes the output of even an instantly exiting container complete.
    pub async fn start(&self, spec: &ContainerSpec) -> Result<Started, Error> {
        let container_id = self.create(spec).await?;
        match self.attach_and_start(&container_id).await {
            Ok(output) => Ok(Started { container_id, output }),
            Err(err) => {
                // Do not leak a created-but-never-started container.
                if let Err(cleanup) = self.remove(&container_id).await {
                    tracing::warn!(container_id, error = %cleanup, "removing unstarted container failed");
                }
                Err(err)
            }
        }
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<String, Error> {
        let options = CreateContainerOptionsBuilder::new().name(&spec.name).build();
        let body = create_body(spec)?;
        match self.inner.create_container(Some(options), body).await {
            Ok(created) => Ok(created.id),
            Err(err) => Err(create_error(spec, err)),
        }
    }

    async fn attach_and_start(&self, container_id: &str) -> Result<OutputStream, Error> {
        let options = AttachContainerOptionsBuilder::new().stream(true).stdout(true).stderr(true).build();
        // Dropping `input` is fine: stdin is not attached and the read half keeps the connection.
        let attached = self.inner.attach_container(container_id, Some(options)).await?;
        self.inner.start_container(container_id, None::<StartContainerOptions>).await?;
        Ok(output_stream(attached.output))
    }

    /// Waits until the container is not running and returns its exit code.
    pub async fn wait(&self, container_id: &str) -> Result<i64, Error> {
        let mut responses = self.inner.wait_container(container_id, None::<WaitContainerOptions>);
        match responses.next().await {
            Some(Ok(response)) => Ok(response.status_code),
            // bollard turns every non-zero exit code into this error; for us it is a result.
            Some(Err(EngineError::DockerContainerWaitError { code, error })) => {
                if !error.is_empty() {
                    tracing::warn!(container_id, error, "engine reported an error on wait");
                }
                Ok(code)
            }
            Some(Err(err)) if status_of(&err) == Some(404) => Err(Error::NotFound(container_id.to_owned())),
            Some(Err(err)) => Err(err.into()),
            None => Err(Error::WaitInterrupted(container_id.to_owned())),
        }
    }

    /// SIGTERM, then SIGKILL once `grace` has passed. Stopped or vanished containers are fine.
    pub async fn stop(&self, container_id: &str, grace: Duration) -> Result<(), Error> {
        let options = StopContainerOptionsBuilder::new().t(whole_seconds(grace)).build();
        // The engine answers only once the container is down, which can take the whole grace
        // period: the default request timeout must not cut that short.
        let engine = self.inner.clone().with_timeout(grace + STOP_SLACK);
        match engine.stop_container(container_id, Some(options)).await {
            // 304 (already stopped) counts as success in bollard; 404 means already removed.
            Ok(()) => Ok(()),
            Err(err) if status_of(&err) == Some(404) => Ok(()),
            Err(err) => Err(err.into()),
        }
    }

    /// Removes the container, running or not, with its anonymous volumes.
    pub async fn remove(&self, container_id: &str) -> Result<(), Error> {
        let options = RemoveContainerOptionsBuilder::new().force(true).v(true).build();
        match self.inner.remove_container(container_id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(err) if status_of(&err) == Some(404) => Ok(()),
            Err(err) => Err(err.into()),
        }
    }

    /// Labels and state of one container.
    pub async fn inspect(&self, container_id: &str) -> Result<Inspected, Error> {
        let info = match self.inner.inspect_container(container_id, None::<InspectContainerOptions>).await {
            Ok(info) => info,
            Err(err) if status_of(&err) == Some(404) => return Err(Error::NotFound(container_id.to_owned())),
            Err(err) => return Err(err.into()),
        };
        let state = info.state.unwrap_or_default();
        let state = match state.status {
            Some(ContainerStateStatusEnum::CREATED) => State::Created,
            Some(ContainerStateStatusEnum::EXITED | ContainerStateStatusEnum::DEAD) => {
                State::Exited(state.exit_code.unwrap_or_default())
            }
            Some(ContainerStateStatusEnum::REMOVING) => State::Removing,
            _ if state.running == Some(false) => State::Exited(state.exit_code.unwrap_or_default()),
            _ => State::Running,
        };
        Ok(Inspected {
            id: info.id.unwrap_or_else(|| container_id.to_owned()),
            labels: info.config.and_then(|c| c.labels).unwrap_or_default(),
            state,
        })
    }

    /// Starts an existing container (created earlier, never started).
    pub async fn start_existing(&self, container_id: &str) -> Result<(), Error> {
        match self.inner.start_container(container_id, None::<StartContainerOptions>).await {
            Ok(()) => Ok(()),
            Err(err) if status_of(&err) == Some(404) => Err(Error::NotFound(container_id.to_owned())),
            Err(err) => Err(err.into()),
        }
    }

    /// The container's whole output from its start, from the engine's log (stdout and
    /// stderr, no timestamps). With `follow` the stream goes on until the container stops.
    ///
    /// Unlike attach, this works after the fact (the json-file and local log drivers keep
    /// everything unless the engine rotates them away), but the order of stdout relative to
    /// stderr may differ slightly from the order attach delivered.
    pub fn logs(&self, container_id: &str, follow: bool) -> OutputStream {
        let options = LogsOptionsBuilder::new().follow(follow).stdout(true).stderr(true).timestamps(false).build();
        output_stream(Box::pin(self.inner.logs(container_id, Some(options))))
    }

    /// Makes sure the bridge network exists with exactly these settings; creates it if
    /// missing. Runners on one host share it: when two create it at once, the engine
    /// refuses the second (same bridge name) and that one finds the first's network.
    pub async fn ensure_bridge_network(&self, network: &BridgeNetwork<'_>) -> Result<(), Error> {
        if !self.check_bridge_network(network).await? {
            let request = NetworkCreateRequest {
                name: network.name.to_owned(),
                driver: Some("bridge".into()),
                internal: Some(false),
                enable_ipv6: Some(false),
                options: Some(network.options().into_iter().map(|(k, v)| (k.to_owned(), v)).collect()),
                labels: Some(HashMap::from([("fastflow-network".to_owned(), network.name.to_owned())])),
                ..Default::default()
            };
            if let Err(err) = self.inner.create_network(request).await {
                // Another runner may have created it meanwhile: then it exists now, though the
                // engine may take a moment (rolling back our half-made copy) before it answers
                // for the name.
                for _ in 0..20 {
                    if self.check_bridge_network(network).await? {
                        return Ok(());
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                return Err(err.into());
            }
        }
        Ok(())
    }

    /// `false` when the network does not exist; an error when it exists with other settings.
    async fn check_bridge_network(&self, network: &BridgeNetwork<'_>) -> Result<bool, Error> {
        let found = match self.inner.inspect_network(network.name, None).await {
            Ok(found) => found,
            Err(err) if status_of(&err) == Some(404) => return Ok(false),
            Err(err) => return Err(err.into()),
        };
        let options = found.options.unwrap_or_default();
        match network.mismatch(found.driver.as_deref(), found.internal.unwrap_or(false), &options) {
            None => Ok(true),
            Some(problem) => Err(Error::NetworkMismatch { name: network.name.to_owned(), problem }),
        }
    }

    /// Kills (SIGKILL) every running container with this label; returns their ids.
    /// For the watchdog: nothing may outlive a lease, however it ends.
    pub async fn kill_running_with_label(&self, key: &str, value: &str) -> Result<Vec<String>, Error> {
        let filters =
            HashMap::from([("label", vec![format!("{key}={value}")]), ("status", vec!["running".to_owned()])]);
        let options = ListContainersOptionsBuilder::new().filters(&filters).build();
        let mut killed = Vec::new();
        for id in self.inner.list_containers(Some(options)).await?.into_iter().filter_map(|c| c.id) {
            match self.inner.kill_container(&id, None::<bollard::query_parameters::KillContainerOptions>).await {
                Ok(()) => killed.push(id),
                // Gone or already stopped meanwhile.
                Err(err) if matches!(status_of(&err), Some(404 | 409)) => {}
                Err(err) => return Err(err.into()),
            }
        }
        Ok(killed)
    }

    /// Ids of all containers, running or not, labelled `key=value`.
    pub async fn containers_with_label(&self, key: &str, value: &str) -> Result<Vec<String>, Error> {
        let filters = HashMap::from([("label", vec![format!("{key}={value}")])]);
        let options = ListContainersOptionsBuilder::new().all(true).filters(&filters).build();
        let containers = self.inner.list_containers(Some(options)).await?;
        Ok(containers.into_iter().filter_map(|c| c.id).collect())
    }
}

/// The same variable, with the same default, that `connect_with_defaults` reads.
fn docker_host() -> String {
    std::env::var("DOCKER_HOST").unwrap_or_else(|_| DEFAULT_HOST.to_owned())
}

fn status_of(err: &EngineError) -> Option<u16> {
    match err {
        EngineError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

fn max_version_from_error(err: &EngineError) -> Option<ClientVersion> {
    let EngineError::DockerResponseServerError { message, .. } = err else {
        return None;
    };
    let (_, version) = message.split_once("Maximum supported API version is ")?;
    let (major, minor) = version.trim().split_once('.')?;
    Some(ClientVersion { major_version: major.parse().ok()?, minor_version: minor.parse().ok()? })
}

/// Docker pulls every tag of a repository when the reference has none; the CLI adds
/// `:latest`, and so do we.
fn with_default_tag(image: &str) -> String {
    let last_component = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') || last_component.contains(':') { image.to_owned() } else { format!("{image}:latest") }
}

/// Server-side failures are about the image (no registry, no such repository, denied);
/// transport failures are about the engine and stay `Engine`.
fn pull_error(image: &str, err: EngineError) -> Error {
    let message = match err {
        EngineError::DockerStreamError { error } => error,
        EngineError::DockerResponseServerError { message, .. } => message,
        other => return Error::Engine(other),
    };
    Error::ImageUnavailable { image: image.to_owned(), message }
}

fn create_error(spec: &ContainerSpec, err: EngineError) -> Error {
    match err {
        // A network that vanished (removed by hand) is not the image's fault.
        EngineError::DockerResponseServerError { status_code: 404, message } if message.starts_with("network ") => {
            Error::InvalidSpec { message }
        }
        EngineError::DockerResponseServerError { status_code: 404, message } => {
            Error::ImageUnavailable { image: spec.image.clone(), message }
        }
        EngineError::DockerResponseServerError { status_code: 409, message } => {
            Error::NameConflict { name: spec.name.clone(), message }
        }
        EngineError::DockerResponseServerError { status_code: 400, message } => Error::InvalidSpec { message },
        other => Error::Engine(other),
    }
}

fn create_body(spec: &ContainerSpec) -> Result<ContainerCreateBody, Error> {
    let env = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mounts = spec.mounts.iter().map(mount).collect::<Result<_, _>>()?;
    let host_config = HostConfig {
        // docker-init as PID 1 forwards SIGTERM; a bare PID 1 would ignore it and only die
        // from the SIGKILL at the end of the grace period.
        init: Some(true),
        auto_remove: Some(false),
        mounts: Some(mounts),
        // Least privilege by default: no capabilities but those allowed, no privilege
        // gain through setuid binaries, the engine's default seccomp profile, and limits
        // so one job cannot starve the host (a fork bomb hits `pids`, a hog `memory`).
        privileged: Some(false),
        cap_drop: Some(vec!["ALL".into()]),
        cap_add: (!spec.limits.cap_add.is_empty()).then(|| spec.limits.cap_add.clone()),
        security_opt: Some(vec!["no-new-privileges:true".into()]),
        pids_limit: spec.limits.pids,
        memory: spec.limits.memory_bytes,
        // Equal to `memory`: no swap on top of the limit.
        memory_swap: spec.limits.memory_bytes,
        nano_cpus: spec.limits.nano_cpus,
        log_config: spec.log_driver.host_config(spec.log_max_bytes),
        network_mode: spec.network.host_config(),
        ..Default::default()
    };
    Ok(ContainerCreateBody {
        image: Some(spec.image.clone()),
        cmd: (!spec.command.is_empty()).then(|| spec.command.clone()),
        env: Some(env),
        labels: Some(spec.labels.clone()),
        working_dir: spec.working_dir.clone(),
        tty: Some(false),
        open_stdin: Some(false),
        attach_stdin: Some(false),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        host_config: Some(host_config),
        ..Default::default()
    })
}

fn mount(bind: &BindMount) -> Result<Mount, Error> {
    // A lossy conversion would silently mount some other path.
    let Some(source) = bind.host_path.to_str() else {
        return Err(Error::InvalidSpec { message: format!("host path {} is not UTF-8", bind.host_path.display()) });
    };
    Ok(Mount {
        target: Some(bind.container_path.clone()),
        source: Some(source.to_owned()),
        typ: Some(MountType::BIND),
        read_only: Some(bind.read_only),
        ..Default::default()
    })
}

type AttachStream = Pin<Box<dyn Stream<Item = Result<LogOutput, EngineError>> + Send>>;

fn output_stream(attached: AttachStream) -> OutputStream {
    Box::pin(attached.filter_map(|item| async move {
        match item {
            Ok(LogOutput::StdOut { message }) => Some(Ok(Output::Stdout(message))),
            Ok(LogOutput::StdErr { message }) => Some(Ok(Output::Stderr(message))),
            // Without a TTY the engine always frames its output; an unframed rest only appears
            // when the connection ends mid-frame. Deliver it rather than drop bytes.
            Ok(LogOutput::Console { message }) => Some(Ok(Output::Stdout(message))),
            Ok(LogOutput::StdIn { .. }) => None,
            Err(err) => Some(Err(Error::Engine(err))),
        }
    }))
}

/// Docker takes whole seconds; round up so the container gets at least `grace`.
fn whole_seconds(grace: Duration) -> i32 {
    let secs = grace.as_secs() + u64::from(grace.subsec_nanos() > 0);
    i32::try_from(secs).unwrap_or(i32::MAX)
}

/// Turns the engine's chatty pull events (many per second per layer) into one line per
/// layer status change.
#[derive(Default)]
struct PullLines {
    seen: HashSet<(String, String)>,
}

impl PullLines {
    fn line_for(&mut self, info: &CreateImageInfo) -> Option<String> {
        let status = info.status.as_deref()?;
        let id = info.id.clone().unwrap_or_default();
        if !self.seen.insert((id.clone(), status.to_owned())) {
            return None;
        }
        let total = info.progress_detail.as_ref().and_then(|d| d.total);
        Some(match (id.is_empty(), total) {
            (true, _) => status.to_owned(),
            (false, Some(total)) if total > 0 => format!("{id}: {status} ({})", megabytes(total)),
            (false, _) => format!("{id}: {status}"),
        })
    }
}

fn megabytes(bytes: i64) -> String {
    format!("{:.1} MB", bytes as f64 / 1_000_000.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::ProgressDetail;

    #[test]
    fn default_tag_is_added_only_when_missing() {
        assert_eq!(with_default_tag("busybox"), "busybox:latest");
        assert_eq!(with_default_tag("busybox:1.36"), "busybox:1.36");
        assert_eq!(with_default_tag("localhost:5000/x"), "localhost:5000/x:latest");
        assert_eq!(with_default_tag("x@sha256:abc"), "x@sha256:abc");
    }

    #[test]
    fn server_maximum_version_is_read_from_the_rejection() {
        let err = EngineError::DockerResponseServerError {
            status_code: 400,
            message: "client version 1.53 is too new. Maximum supported API version is 1.41".to_owned(),
        };
        let version = max_version_from_error(&err).map(|v| v.to_string());
        assert_eq!(version.as_deref(), Some("1.41"));
    }

    #[test]
    fn a_bridge_network_with_other_settings_is_named_not_used() {
        let network = BridgeNetwork { name: "ff-net", bridge: "ff-br" };
        let ours: HashMap<String, String> = network.options().into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        assert_eq!(network.mismatch(Some("bridge"), false, &ours), None);
        let mut defaulted = ours.clone();
        defaulted.remove("com.docker.network.bridge.enable_ip_masquerade");
        assert_eq!(network.mismatch(Some("bridge"), false, &defaulted), None);
        let mut chatty = ours.clone();
        chatty.insert("com.docker.network.bridge.enable_icc".into(), "true".into());
        let problem = network.mismatch(Some("bridge"), false, &chatty).unwrap_or_default();
        assert!(problem.contains("enable_icc=true"), "{problem}");
        assert!(network.mismatch(Some("bridge"), true, &ours).is_some());
        assert!(network.mismatch(Some("overlay"), false, &ours).is_some());
        assert_eq!(NetworkMode::DefaultBridge.host_config(), None);
        assert_eq!(NetworkMode::None.host_config().as_deref(), Some("none"));
    }

    #[test]
    fn grace_rounds_up_to_whole_seconds() {
        assert_eq!(whole_seconds(Duration::from_millis(1500)), 2);
        assert_eq!(whole_seconds(Duration::from_secs(3)), 3);
        assert_eq!(whole_seconds(Duration::ZERO), 0);
    }

    #[test]
    fn pull_lines_are_deduplicated_per_layer_and_status() {
        let event = |id: &str, status: &str, current| CreateImageInfo {
            id: Some(id.to_owned()),
            status: Some(status.to_owned()),
            progress_detail: Some(ProgressDetail { current: Some(current), total: Some(2_500_000) }),
            ..Default::default()
        };
        let mut lines = PullLines::default();
        let got: Vec<_> = [
            event("abc", "Downloading", 1),
            event("abc", "Downloading", 2),
            event("def", "Downloading", 1),
            event("abc", "Download complete", 3),
        ]
        .iter()
        .filter_map(|e| lines.line_for(e))
        .collect();
        assert_eq!(got, ["abc: Downloading (2.5 MB)", "def: Downloading (2.5 MB)", "abc: Download complete (2.5 MB)"]);
    }
}
