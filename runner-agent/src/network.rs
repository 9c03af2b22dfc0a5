//! The `isolated` job network: one Docker bridge for the runner's isolated jobs, and the
//! host firewall rules that keep those jobs away from the host and the metadata service.
//!
//! The bridge (`fastflow-isolated`, interface `ff-isolated`) has inter-container traffic
//! off, so jobs on it cannot reach each other; the engine's own rules already drop traffic
//! between different bridges (so no job reaches containers on `docker0` or other
//! networks), and NAT gives it the host's outbound access. What the engine does not stop,
//! two chains of our own do, hooked first into `INPUT` and `DOCKER-USER`:
//! * `FASTFLOW-ISOLATED-IN`: everything from the bridge to the host itself (every address
//!   of the host, the bridge's gateway too: the control plane, NATS, Postgres, the engine's
//!   published ports all listen there);
//! * `FASTFLOW-ISOLATED-FWD`: forwarded traffic from the bridge to link-local and cloud
//!   metadata addresses, to `RUNNER_ISOLATED_BLOCK`, to the bridge itself, and to
//!   anything the host rewrote the destination of (other containers' published ports).
//!
//! Rules are installed with the system's `iptables-restore`/`iptables` (as the engine
//! itself does): the chains' content in one atomic `iptables-restore --noflush`, so a
//! second runner on the host re-installing them never opens a gap.

use std::io::Write;
use std::process::{Command, Stdio};

use ipnet::Ipv4Net;
use tokio::sync::Mutex;

use crate::docker::{self, BridgeNetwork, Docker};

/// The Docker network isolated jobs join.
pub const NETWORK: &str = "fastflow-isolated";
/// Its host interface (Linux allows 15 bytes), named by the firewall rules.
pub const BRIDGE: &str = "ff-isolated";
/// Traffic from the bridge to the host itself.
pub const INPUT_CHAIN: &str = "FASTFLOW-ISOLATED-IN";
/// Forwarded traffic from the bridge (hooked into the engine's `DOCKER-USER`).
pub const FORWARD_CHAIN: &str = "FASTFLOW-ISOLATED-FWD";
/// Always blocked: link-local (the metadata service of AWS, GCP, Azure, OpenStack and
/// Oracle at 169.254.169.254, ECS task credentials at 169.254.170.2) and Alibaba Cloud's
/// metadata address.
pub const ALWAYS_BLOCKED: [&str; 2] = ["169.254.0.0/16", "100.100.100.200/32"];
/// How long an `iptables` call waits for the host's xtables lock (other tools, the engine).
const LOCK_WAIT_SECONDS: &str = "10";
/// Serialises runners of one host while they install the rules.
const LOCK_FILE: &str = "/run/fastflow-firewall.lock";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("docker network fastflow-isolated: {0}")]
    Docker(#[from] docker::Error),
    #[error("cannot install the firewall rules for isolated jobs (`{command}`): {message}")]
    Firewall { command: String, message: String },
}

/// Sets the isolated network up (at start, and again on demand until it worked once).
pub struct Isolation {
    docker: Docker,
    blocked: Vec<Ipv4Net>,
    ready: Mutex<bool>,
}

impl Isolation {
    pub fn new(docker: Docker, blocked: Vec<Ipv4Net>) -> Isolation {
        Isolation { docker, blocked, ready: Mutex::new(false) }
    }

    /// The network's name once the firewall rules and the network exist. A failure is
    /// not remembered: the next isolated job tries again (it may have been transient).
    pub async fn ensure(&self) -> Result<&'static str, Error> {
        let mut ready = self.ready.lock().await;
        if !*ready {
            // Rules first: the bridge never exists on this host without them.
            let rules = rules(&self.blocked);
            tokio::task::spawn_blocking(move || install(&rules)).await.map_err(|e| Error::Firewall {
                command: "iptables".into(),
                message: format!("the install task failed: {e}"),
            })??;
            self.docker.ensure_bridge_network(&BridgeNetwork { name: NETWORK, bridge: BRIDGE }).await?;
            tracing::info!(network = NETWORK, bridge = BRIDGE, "isolated job network ready (firewall rules installed)");
            *ready = true;
        }
        Ok(NETWORK)
    }
}

/// The `iptables-restore` input that (re)writes both chains. With `--noflush`, declaring
/// a chain creates it or empties it, and the whole table commits at once.
fn rules(blocked: &[Ipv4Net]) -> String {
    let mut text = format!("*filter\n:{INPUT_CHAIN} - [0:0]\n:{FORWARD_CHAIN} - [0:0]\n");
    text.push_str(&format!("-A {INPUT_CHAIN} -i {BRIDGE} -j DROP\n"));
    text.push_str(&format!("-A {FORWARD_CHAIN} -i {BRIDGE} -o {BRIDGE} -j DROP\n"));
    text.push_str(&format!("-A {FORWARD_CHAIN} -i {BRIDGE} -m conntrack --ctstate DNAT -j DROP\n"));
    for net in ALWAYS_BLOCKED.iter().map(|n| (*n).to_owned()).chain(blocked.iter().map(ToString::to_string)) {
        text.push_str(&format!("-A {FORWARD_CHAIN} -i {BRIDGE} -d {net} -j DROP\n"));
    }
    text.push_str("COMMIT\n");
    text
}

/// Writes the chains, then hooks each in first place of its parent chain once. Runners
/// of one host serialise on a lock file, so two never both add the same hook.
fn install(rules: &str) -> Result<(), Error> {
    let _lock = host_lock()?;
    run("iptables-restore", &["-w", LOCK_WAIT_SECONDS, "--noflush"], Some(rules))?;
    for (parent, chain) in [("INPUT", INPUT_CHAIN), ("DOCKER-USER", FORWARD_CHAIN)] {
        if run("iptables", &["-w", LOCK_WAIT_SECONDS, "-C", parent, "-j", chain], None).is_err() {
            run("iptables", &["-w", LOCK_WAIT_SECONDS, "-I", parent, "1", "-j", chain], None)?;
        }
    }
    Ok(())
}

/// An exclusive lock on a file in `/run` (root's own directory: a world-writable one such
/// as `/tmp` would let anyone plant a symlink there). Held until dropped.
fn host_lock() -> Result<std::fs::File, Error> {
    let failed = |e: std::io::Error| Error::Firewall { command: format!("lock {LOCK_FILE}"), message: e.to_string() };
    let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(LOCK_FILE).map_err(failed)?;
    file.lock().map_err(failed)?;
    Ok(file)
}

fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Result<(), Error> {
    let command = format!("{program} {}", args.join(" "));
    let failed = |message: String| Error::Firewall { command: command.clone(), message };
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| failed(format!("{e} (the runner needs root and the iptables tools)")))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes()).map_err(|e| failed(e.to_string()))?;
    }
    let output = child.wait_with_output().map_err(|e| failed(e.to_string()))?;
    if output.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        Err(failed(format!("{} ({})", stderr.trim(), output.status)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rules_drop_host_metadata_and_blocked_networks() {
        let blocked = vec!["10.0.0.0/8".parse().expect("net")];
        let text = rules(&blocked);
        assert!(text.starts_with("*filter\n") && text.ends_with("COMMIT\n"), "{text}");
        for line in [
            "-A FASTFLOW-ISOLATED-IN -i ff-isolated -j DROP",
            "-A FASTFLOW-ISOLATED-FWD -i ff-isolated -d 169.254.0.0/16 -j DROP",
            "-A FASTFLOW-ISOLATED-FWD -i ff-isolated -d 100.100.100.200/32 -j DROP",
            "-A FASTFLOW-ISOLATED-FWD -i ff-isolated -d 10.0.0.0/8 -j DROP",
            "-A FASTFLOW-ISOLATED-FWD -i ff-isolated -m conntrack --ctstate DNAT -j DROP",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }
        assert!(BRIDGE.len() <= 15, "Linux interface names have at most 15 bytes");
    }
}
