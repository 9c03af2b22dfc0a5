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

/// How many containers labelled with `run_id` were created between `since`
/// (a [`docker_now`] value) and now.
pub async fn docker_created_count(run_id: &str, since: &str) -> usize {
    let until = docker_now();
    docker_ids(&[
        "events",
        "--since",
        since,
        "--until",
        &until,
        "--filter",
        "type=container",
        "--filter",
        "event=create",
        "--filter",
        &format!("label=fastflow-run-id={run_id}"),
        "--format",
        "{{.ID}}",
    ])
    .await
    .len()
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
