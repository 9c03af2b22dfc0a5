//! Job isolation: the network policies of pipeline.toml (`isolated` by default, `none`,
//! `host-bridge`), the host firewall rules behind `isolated`, and the per-pipeline uv cache.
//!
//! Traffic goes only to what the test made itself: listener containers, a listener on
//! the host's own addresses, a network namespace standing in for "the internet", and the
//! deployment's own services. No test sends anything to the metadata address; its rule
//! is read with `iptables -S`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::StatusCode;
use tests::checks::assert_finished;
use tests::{TestEnv, in_both_modes, poll_until};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

const RUN: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(100);
/// The runner's isolated network and its host interface (README "Job networks").
const ISOLATED_NETWORK: &str = "fastflow-isolated";
const ISOLATED_BRIDGE: &str = "ff-isolated";
const LISTENER_PORT: u16 = 8080;

in_both_modes! {
    /// A job of a pipeline without `network` gets the isolated network: it reaches a
    /// server outside the host but not the host (its own listener on every address, the
    /// control plane, NATS, Postgres), not a container on the default bridge and not one
    /// on its own network; the same probe on `host-bridge` reaches the host listener and
    /// the container, so the blocked probes fail for the isolation, not by accident.
    async fn isolated_is_the_default_and_reaches_only_the_outside(options) {
        let env = TestEnv::start(options.runners(1)).await;
        assert_firewall_rules().await;
        let gateway = isolated_gateway().await;
        let tag = uuid::Uuid::new_v4().simple().to_string()[..10].to_string();
        let host = HostListener::start(&tag).await;
        let outside = Outside::start(&tag).await;
        let on_bridge = ListenerContainer::start(&tag, "bridge").await;
        let on_isolated = ListenerContainer::start(&tag, ISOLATED_NETWORK).await;
        let docker0 = bridge_gateway("bridge").await;

        let mut targets = vec![
            format!("outside={}:{LISTENER_PORT}", outside.address),
            format!("bridge-container={}:{LISTENER_PORT}", on_bridge.ip),
            format!("isolated-container={}:{LISTENER_PORT}", on_isolated.ip),
            format!("host-via-gateway={gateway}:{}", host.port),
            format!("host-via-docker0={docker0}:{}", host.port),
            format!("host-via-outside-link={}:{}", outside.host_address, host.port),
        ];
        for (name, port) in env.service_ports() {
            targets.push(format!("{name}={gateway}:{port}"));
        }
        let log = probe(&env, "net_default", &targets).await;
        assert_eq!(line_of(&log, "gateway"), format!("gateway: {gateway}"), "not on {ISOLATED_NETWORK}; log:\n{log}");
        assert_eq!(
            line_of(&log, "outside"),
            format!("outside: open outside-{tag}"),
            "an isolated job must reach a server beyond the host (outbound traffic, NAT); log:\n{log}"
        );
        for target in &targets[1..] {
            let name = target.split('=').next().unwrap_or_default();
            assert_eq!(line_of(&log, name), format!("{name}: closed"), "an isolated job reached {target}; log:\n{log}");
        }
        assert_eq!(host.connections(), 0, "the host listener saw a connection from the isolated job");

        let opened = [
            format!("bridge-container={}:{LISTENER_PORT}", on_bridge.ip),
            format!("host-via-docker0={docker0}:{}", host.port),
        ];
        let log = probe(&env, "net_host_bridge", &opened).await;
        assert_eq!(line_of(&log, "gateway"), format!("gateway: {docker0}"), "not on the default bridge; log:\n{log}");
        assert_eq!(line_of(&log, "bridge-container"), format!("bridge-container: open listener-bridge-{tag}"), "{log}");
        assert_eq!(line_of(&log, "host-via-docker0"), format!("host-via-docker0: open host-{tag}"), "{log}");
        assert!(host.connections() >= 1, "the host-bridge job's connection never arrived");
        // The isolated network's listener is still serving (seen from inside it).
        let served = docker(&["exec", &on_isolated.name, "wget", "-q", "-O", "-", "http://127.0.0.1:8080/"]).await;
        assert_eq!(served.trim(), format!("listener-{ISOLATED_NETWORK}-{tag}"));
    }

    /// `network = "none"`: the container has no interface but loopback. The API shows
    /// each pipeline's policy, `isolated` where pipeline.toml names none.
    async fn a_none_job_has_only_loopback(options) {
        let env = TestEnv::start(options.runners(1)).await;
        for (pipeline, network) in [("net_none", "none"), ("net_default", "isolated"), ("net_host_bridge", "host-bridge")] {
            let response = env.cp(0).get_pipeline(pipeline).await;
            let shown = response.expect(StatusCode::OK);
            assert_eq!(shown["network"], network, "{shown}");
        }
        let run = env.run_pipeline("net_none", &[]).await;
        let done = env.wait_final(&run.id, RUN).await;
        assert_finished(&done, "success", None);
        let log = String::from_utf8_lossy(&env.logs(&run.id).await).into_owned();
        let interfaces: Vec<&str> = log.lines().filter_map(|l| l.strip_prefix("interface: ")).collect();
        assert_eq!(interfaces, ["lo"], "log:\n{log}");
    }

    /// A runner that cannot install the firewall rules (no iptables on its PATH) fails
    /// isolated jobs with the reason instead of running them on a looser network, and
    /// still runs the others.
    async fn without_firewall_tools_isolated_jobs_fail_and_others_run(options) {
        let env = TestEnv::start(options.runners(1).runner_env("PATH", "/nonexistent")).await;
        let run = env.run_pipeline("net_default", &[("TARGETS", "")]).await;
        let done = env.wait_final(&run.id, RUN).await;
        assert_finished(&done, "failed", Some("setup_error"));
        let message = done.error_message.clone().unwrap_or_default();
        assert!(message.contains("isolated") && message.contains("iptables"), "error_message: {message}");
        assert!(env.docker_containers_with_label(&run.id).await.is_empty(), "a container was made for {done:?}");
        let open = env.run_pipeline("net_host_bridge", &[("TARGETS", "")]).await;
        assert_finished(&env.wait_final(&open.id, RUN).await, "success", None);
        let none = env.run_pipeline("net_none", &[]).await;
        assert_finished(&env.wait_final(&none.id, RUN).await, "success", None);
    }

    /// Pipeline A writes a marker into its uv cache; a later run of A finds it (the cache
    /// is kept), pipeline B neither lists nor reads it.
    async fn a_pipeline_cannot_read_another_pipelines_uv_cache(options) {
        let env = TestEnv::start(options.runners(1)).await;
        let mark = uuid::Uuid::new_v4().simple().to_string();
        let planted = format!("planted-{mark}");
        let a = python_log(&env, "uv_cache_a", &mark).await;
        assert!(a.contains(&format!("a planted {planted}")), "{a}");
        let again = python_log(&env, "uv_cache_a", &uuid::Uuid::new_v4().simple().to_string()).await;
        assert!(line_of(&again, "a sees").contains(&planted), "A's own cache lost the marker:\n{again}");
        let b = python_log(&env, "uv_cache_b", &mark).await;
        assert_eq!(line_of(&b, "b sees"), "b sees: (nothing)", "{b}");
        assert_eq!(line_of(&b, "b reads the marker"), "b reads the marker: no", "{b}");
    }
}

/// Runs `pipeline` (a probe) with `TARGETS` and returns its log once it succeeded.
async fn probe(env: &TestEnv, pipeline: &str, targets: &[String]) -> String {
    let targets = targets.join(" ");
    let run = env.run_pipeline(pipeline, &[("TARGETS", targets.as_str())]).await;
    let done = env.wait_final(&run.id, RUN).await;
    let log = String::from_utf8_lossy(&env.logs(&run.id).await).into_owned();
    assert_eq!(done.status, "success", "{pipeline}: {done:?}\n{log}");
    assert!(log.contains("probes done\n"), "{log}");
    log
}

async fn python_log(env: &TestEnv, pipeline: &str, mark: &str) -> String {
    let run = env.run_pipeline(pipeline, &[("MARK", mark)]).await;
    let done = env.wait_final(&run.id, RUN).await;
    let log = String::from_utf8_lossy(&env.logs(&run.id).await).into_owned();
    assert_eq!(done.status, "success", "{pipeline}: {done:?}\n{log}");
    log
}

/// The one line of `log` that starts with `name:` (empty when there is none).
fn line_of(log: &str, name: &str) -> String {
    let prefix = format!("{name}:");
    log.lines().find(|l| l.starts_with(&prefix)).unwrap_or_default().to_string()
}

/// The runner's rules: the bridge cannot reach the host, the link-local/metadata range or
/// published ports; both chains are hooked into the chains the kernel and engine use.
async fn assert_firewall_rules() {
    let rules = |chain: &'static str| async move { command("iptables", &["-w", "10", "-S", chain]).await };
    let has = |rules: &str, parts: &[&str]| rules.lines().any(|l| parts.iter().all(|p| l.split(' ').any(|w| w == *p)));
    let input = rules("INPUT").await;
    assert!(has(&input, &["-A", "INPUT", "-j", "FASTFLOW-ISOLATED-IN"]), "INPUT:\n{input}");
    let user = rules("DOCKER-USER").await;
    assert!(has(&user, &["-A", "DOCKER-USER", "-j", "FASTFLOW-ISOLATED-FWD"]), "DOCKER-USER:\n{user}");
    let to_host = rules("FASTFLOW-ISOLATED-IN").await;
    assert!(has(&to_host, &["-i", ISOLATED_BRIDGE, "-j", "DROP"]), "FASTFLOW-ISOLATED-IN:\n{to_host}");
    let forward = rules("FASTFLOW-ISOLATED-FWD").await;
    for rule in [&["-d", "169.254.0.0/16"][..], &["--ctstate", "DNAT"], &["-o", ISOLATED_BRIDGE]] {
        let mut parts = vec!["-i", ISOLATED_BRIDGE, "-j", "DROP"];
        parts.extend_from_slice(rule);
        assert!(has(&forward, &parts), "FASTFLOW-ISOLATED-FWD lacks {parts:?}:\n{forward}");
    }
}

/// The isolated network's gateway: the host's address on that bridge.
async fn isolated_gateway() -> String {
    poll_until("the runner's isolated network", RUN, POLL, || async {
        bridge_gateway_opt(ISOLATED_NETWORK).await.ok_or_else(|| format!("no network {ISOLATED_NETWORK} yet"))
    })
    .await
}

async fn bridge_gateway(network: &str) -> String {
    bridge_gateway_opt(network).await.unwrap_or_else(|| panic!("network {network} has no IPv4 gateway"))
}

/// The gateway the engine lists for `network`, or else the IPv4 address of the network's
/// bridge interface: the engine does not always list a gateway for its default `bridge`
/// (seen on a fresh machine: only the subnet), though `docker0` carries it.
async fn bridge_gateway_opt(network: &str) -> Option<String> {
    let format = "{{range .IPAM.Config}}{{.Gateway}} {{end}}|{{index .Options \"com.docker.network.bridge.name\"}}";
    let output = tokio::process::Command::new("docker")
        .args(["network", "inspect", "--format", format, network])
        .output()
        .await
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (gateways, interface) = text.trim().split_once('|')?;
    if let Some(gateway) = gateways.split_whitespace().find(|g| g.parse::<std::net::Ipv4Addr>().is_ok()) {
        return Some(gateway.to_string());
    }
    let interface = interface.trim();
    if interface.is_empty() || interface == "<no value>" {
        return None;
    }
    // `ip -4 -o addr show dev docker0`: "5: docker0    inet 172.17.0.1/16 brd … scope global docker0 …"
    let output =
        tokio::process::Command::new("ip").args(["-4", "-o", "addr", "show", "dev", interface]).output().await.ok()?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let mut words = text.split_whitespace();
    words.find(|w| *w == "inet")?;
    let address = words.next()?.split('/').next()?;
    address.parse::<std::net::Ipv4Addr>().ok().map(|_| address.to_string())
}

async fn command(program: &str, args: &[&str]) -> String {
    let output = tokio::process::Command::new(program)
        .args(args)
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

async fn docker(args: &[&str]) -> String {
    command("docker", args).await
}

/// A TCP listener on every address of the host that answers one HTTP response per
/// connection and counts them.
struct HostListener {
    port: u16,
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl HostListener {
    async fn start(tag: &str) -> HostListener {
        let listener = TcpListener::bind("0.0.0.0:0").await.expect("bind 0.0.0.0");
        let port = listener.local_addr().expect("local addr").port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        let body = format!("host-{tag}");
        let task = tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let response = format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.shutdown().await;
            }
        });
        HostListener { port, accepted, task }
    }

    fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for HostListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A busybox HTTP server container on `network`, answering `listener-<network>-<tag>`.
struct ListenerContainer {
    name: String,
    ip: String,
}

impl ListenerContainer {
    async fn start(tag: &str, network: &str) -> ListenerContainer {
        let name = format!("ff-test-listener-{network}-{tag}");
        let image = std::env::var("FASTFLOW_BUSYBOX_IMAGE").unwrap_or_else(|_| "fastflow-busybox:latest".into());
        let script = format!(
            "mkdir -p /www && echo listener-{network}-{tag} > /www/index.html && exec httpd -f -p {LISTENER_PORT} -h /www"
        );
        let net = format!("--network={network}");
        docker(&[
            "run",
            "-d",
            "--name",
            &name,
            "--label",
            "fastflow-test-listener=1",
            &net,
            &image,
            "sh",
            "-c",
            &script,
        ])
        .await;
        let mut listener = ListenerContainer { name, ip: String::new() };
        let url = format!("http://127.0.0.1:{LISTENER_PORT}/");
        poll_until(&format!("listener {} to serve", listener.name), RUN, POLL, || async {
            let args = ["exec", listener.name.as_str(), "wget", "-q", "-O", "-", url.as_str()];
            let out = tokio::process::Command::new("docker").args(args).output().await.map_err(|e| e.to_string())?;
            if out.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&out.stderr).into_owned()) }
        })
        .await;
        let format = format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}");
        let ip = docker(&["inspect", "--format", &format, &listener.name]).await.trim().to_string();
        assert!(ip.parse::<std::net::Ipv4Addr>().is_ok(), "listener {} has no IPv4 address: {ip:?}", listener.name);
        listener.ip = ip;
        listener
    }
}

impl Drop for ListenerContainer {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker").args(["rm", "-f", &self.name]).output();
    }
}

/// "The internet" as far as a job can tell: a network namespace behind a veth pair with
/// addresses from the benchmarking range 198.18.0.0/15, running an HTTP server. The host
/// routes to it like to any outside network.
struct Outside {
    namespace: String,
    server: std::process::Child,
    /// The server, inside the namespace.
    address: String,
    /// The host's end of the link.
    host_address: String,
    /// The server's files.
    root: std::path::PathBuf,
}

impl Outside {
    async fn start(tag: &str) -> Outside {
        let namespace = format!("ffo-{}", &tag[..8]);
        let (host_if, inner_if) = (format!("{namespace}h"), format!("{namespace}n"));
        // A /30 of its own per test: the third and fourth octets from the tag.
        let bytes = u32::from_str_radix(&tag[..8], 16).unwrap_or(0);
        let (third, fourth) = ((bytes >> 8) & 0xff, (bytes & 0x3f) * 4);
        let host_address = format!("198.18.{third}.{}", fourth + 1);
        let address = format!("198.18.{third}.{}", fourth + 2);
        let root = std::env::temp_dir().join(format!("fastflow-outside-{tag}"));
        std::fs::create_dir_all(&root).expect("outside www dir");
        std::fs::write(root.join("index.html"), format!("outside-{tag}\n")).expect("outside index");
        let ip = |args: &[&str]| {
            let out = std::process::Command::new("ip").args(args).output().expect("run ip");
            assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
        };
        ip(&["netns", "add", &namespace]);
        ip(&["link", "add", &host_if, "type", "veth", "peer", "name", &inner_if]);
        ip(&["link", "set", &inner_if, "netns", &namespace]);
        ip(&["addr", "add", &format!("{host_address}/30"), "dev", &host_if]);
        ip(&["link", "set", &host_if, "up"]);
        ip(&["-n", &namespace, "addr", "add", &format!("{address}/30"), "dev", &inner_if]);
        ip(&["-n", &namespace, "link", "set", &inner_if, "up"]);
        ip(&["-n", &namespace, "link", "set", "lo", "up"]);
        let server = std::process::Command::new("ip")
            .args(["netns", "exec", &namespace, "busybox", "httpd", "-f", "-p", &LISTENER_PORT.to_string(), "-h"])
            .arg(&root)
            .spawn()
            .expect("start busybox httpd in the namespace");
        let outside = Outside { namespace, server, address, host_address, root };
        // Asked from inside the namespace (its loopback), so only the server is tested.
        let url = format!("http://127.0.0.1:{LISTENER_PORT}/");
        poll_until("the outside server to serve", RUN, POLL, || async {
            let args = ["netns", "exec", outside.namespace.as_str(), "busybox", "wget", "-q", "-O", "-", url.as_str()];
            let out = tokio::process::Command::new("ip").args(args).output().await.map_err(|e| e.to_string())?;
            if out.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&out.stderr).into_owned()) }
        })
        .await;
        outside
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        // Deleting the namespace deletes its end of the veth pair, and with it the host's.
        let _ = std::process::Command::new("ip").args(["netns", "del", &self.namespace]).output();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
