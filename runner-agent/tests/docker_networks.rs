//! `runner_agent::docker`'s bridge networks against the real Docker engine
//! (`scripts/dev-deps.sh up`): created once even when two runners ask at the same time,
//! with the settings isolation relies on, and a foreign network of the name refused.
//! Each test uses networks of its own name, removed by a guard even on a panic.

use runner_agent::docker::{BridgeNetwork, Docker, Error};

async fn engine() -> Docker {
    let result = match Docker::connect().await {
        Ok(docker) => docker.ping().await.map(|()| docker),
        Err(err) => Err(err),
    };
    result.unwrap_or_else(|err| panic!("Docker engine not reachable: {err}. Start it with `scripts/dev-deps.sh up`."))
}

fn docker_cli(args: &[&str]) -> std::process::Output {
    std::process::Command::new("docker").args(args).output().unwrap_or_else(|e| panic!("cannot run docker: {e}"))
}

/// Removes the named networks when dropped.
struct Networks(Vec<String>);

impl Drop for Networks {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = docker_cli(&["network", "rm", name]);
        }
    }
}

#[tokio::test]
async fn a_bridge_network_is_created_once_with_its_settings_and_a_foreign_one_is_refused() {
    let docker = engine().await;
    let tag = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    let (name, foreign) = (format!("fastflow-test-net-{tag}"), format!("fastflow-test-foreign-{tag}"));
    let _guard = Networks(vec![name.clone(), foreign.clone()]);
    let bridge = format!("fft{tag}");
    let network = BridgeNetwork { name: &name, bridge: &bridge };

    // Two runners of one host starting together.
    let (a, b) = tokio::join!(docker.ensure_bridge_network(&network), docker.ensure_bridge_network(&network));
    a.expect("first");
    b.expect("second");
    docker.ensure_bridge_network(&network).await.expect("again: idempotent");
    let listed = docker_cli(&["network", "ls", "-q", "--filter", &format!("name=^{name}$")]);
    assert_eq!(String::from_utf8_lossy(&listed.stdout).lines().count(), 1, "networks named {name}");
    let options = docker_cli(&["network", "inspect", "--format", "{{json .Options}}", &name]);
    let options: serde_json::Value = serde_json::from_slice(&options.stdout).expect("options JSON");
    assert_eq!(options["com.docker.network.bridge.enable_icc"], "false", "{options}");
    assert_eq!(options["com.docker.network.bridge.name"], bridge.as_str(), "{options}");

    // Made by hand with the engine's defaults (containers may talk to each other).
    let made = docker_cli(&["network", "create", &foreign]);
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let other_bridge = format!("ffu{tag}");
    let err = docker.ensure_bridge_network(&BridgeNetwork { name: &foreign, bridge: &other_bridge }).await.err();
    match err {
        Some(Error::NetworkMismatch { name, problem }) => {
            assert_eq!(name, foreign);
            assert!(problem.contains("com.docker.network.bridge"), "{problem}");
        }
        other => panic!("a foreign network must be refused, got {other:?}"),
    }
}
