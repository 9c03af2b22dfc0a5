//! Assertions shared by several test files.

use crate::api::Run;
use crate::expected::log_lines;
use crate::sse::SseTranscript;
use crate::test_env::TestEnv;
use std::time::Duration;

/// The three views of a finished run's log agree: `GET …/logs`, the archived log
/// in the log store (byte for byte), and the SSE stream (ids 1..n in order; its stdout/stderr lines
/// are the log's lines; its `end` carries the final run).
pub fn assert_logs_agree(run: &Run, http_log: &[u8], archive: &[u8], sse: &SseTranscript) {
    assert!(
        http_log == archive,
        "GET logs ({} bytes) and the archived log ({} bytes) of run {} differ:\nHTTP:    {:?}\narchive: {:?}",
        http_log.len(),
        archive.len(),
        run.id,
        String::from_utf8_lossy(http_log),
        String::from_utf8_lossy(archive)
    );
    let ids = sse.ids();
    let expected_ids: Vec<u64> = (1..=ids.len() as u64).collect();
    assert_eq!(ids, expected_ids, "SSE log ids of run {} are not 1..n in order", run.id);
    assert_eq!(
        sse.output_lines(),
        log_lines(archive),
        "SSE stdout/stderr lines of run {} differ from its archived log",
        run.id
    );
    assert_eq!(Run::from_json(&sse.end), *run, "the SSE `end` event of run {} is not the final run", run.id);
}

/// How many times `needle` occurs in `haystack` (non-overlapping).
pub fn count_occurrences(haystack: &[u8], needle: &[u8]) -> usize {
    assert!(!needle.is_empty());
    let mut count = 0;
    let mut i = 0;
    while i + needle.len() <= haystack.len() {
        if &haystack[i..i + needle.len()] == needle {
            count += 1;
            i += needle.len();
        } else {
            i += 1;
        }
    }
    count
}

/// Asserts a final run finished normally with the given status and reason.
pub fn assert_finished(run: &Run, status: &str, failure_reason: Option<&str>) {
    assert_eq!(run.status, status, "unexpected final status: {run:#?}");
    assert_eq!(run.failure_reason.as_deref(), failure_reason, "unexpected failure_reason: {run:#?}");
    assert!(run.finished_at.is_some(), "finished_at not set: {run:#?}");
    let times: Vec<_> = [Some(&run.created_at), run.started_at.as_ref(), run.finished_at.as_ref()]
        .into_iter()
        .flatten()
        .map(|ts| {
            chrono::DateTime::parse_from_rfc3339(ts)
                .unwrap_or_else(|e| panic!("timestamp {ts:?} is not RFC 3339 ({e}): {run:#?}"))
        })
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "timestamps out of order (created <= started <= finished): {run:#?}"
    );
}

/// The one container of a run (asserts there is exactly one).
pub async fn only_container(env: &TestEnv, run_id: &str) -> String {
    let ids = env.docker_containers_with_label(run_id).await;
    assert_eq!(ids.len(), 1, "run {run_id} should have exactly one container: {ids:?}");
    ids[0].clone()
}

/// Polls `docker inspect` until the container's `State.Running` is `running`; returns the state.
pub async fn wait_container_running(env: &TestEnv, id: &str, running: bool, timeout: Duration) -> serde_json::Value {
    crate::poll_until(
        &format!("container {id} to have State.Running = {running}"),
        timeout,
        Duration::from_millis(200),
        || async move {
            let info = env.docker_inspect(id).await.ok_or_else(|| "container is gone".to_string())?;
            let state = info["State"].clone();
            if state["Running"].as_bool() == Some(running) { Ok(state) } else { Err(format!("{state}")) }
        },
    )
    .await
}

/// The runner removes a reported run's container once the control plane has its log.
pub async fn wait_containers_removed(env: &TestEnv, run_id: &str) {
    crate::poll_until(
        &format!("the containers of run {run_id} to be removed"),
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async move {
            let ids = env.docker_containers_with_label(run_id).await;
            if ids.is_empty() { Ok(()) } else { Err(format!("{ids:?}")) }
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::count_occurrences;

    #[test]
    fn counts_non_overlapping_occurrences() {
        assert_eq!(count_occurrences(b"ran a\nran ab\n", b"ran a"), 2);
        assert_eq!(count_occurrences(b"aaaa", b"aa"), 2);
        assert_eq!(count_occurrences(b"", b"x"), 0);
    }
}
