//! Observing containers through the `docker` CLI (the harness never uses container IPs).

use std::time::{SystemTime, UNIX_EPOCH};

use tokio::process::Command;

/// A timestamp for `docker events --since/--until` (Unix seconds with nanoseconds).
pub fn docker_now() -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock before 1970");
    format!("{}.{:09}", now.as_secs(), now.subsec_nanos())
}

/// IDs of all containers (running or not) labelled `fastflow-run-id=<run_id>`.
pub async fn docker_containers_with_label(run_id: &str) -> Vec<String> {
    docker_ids(&["ps", "-a", "-q", "--filter", &format!("label=fastflow-run-id={run_id}")]).await
}

/// `docker inspect <container_id>` as JSON (the one object, not the array);
/// `None` when there is no such container.
pub async fn docker_inspect(container_id: &str) -> Option<serde_json::Value> {
    let output = Command::new("docker")
        .args(["inspect", "--type", "container", container_id])
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run `docker inspect {container_id}`: {e}"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        assert!(
            stderr.contains("No such") || stderr.contains("no such"),
            "`docker inspect {container_id}` failed ({}): {stderr}",
            output.status
        );
        return None;
    }
    let value: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("`docker inspect {container_id}` printed no JSON ({e}): {stderr}"));
    match value {
        serde_json::Value::Array(mut items) if items.len() == 1 => items.pop(),
        other => panic!("`docker inspect {container_id}` printed not one object: {other:#}"),
    }
}

/// Force-removes every container carrying `label` (cleanup after runners were killed).
pub(crate) async fn remove_containers_with_label(label: &str) {
    let ids = docker_ids(&["ps", "-a", "-q", "--filter", &format!("label={label}")]).await;
    if !ids.is_empty() {
        let mut args = vec!["rm", "-f"];
        args.extend(ids.iter().map(String::as_str));
        let _ = Command::new("docker").args(&args).output().await;
    }
}

async fn docker_ids(args: &[&str]) -> Vec<String> {
    let output = Command::new("docker")
        .args(args)
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run `docker {}`: {e}", args.join(" ")));
    assert!(
        output.status.success(),
        "`docker {}` failed ({}): {}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}
