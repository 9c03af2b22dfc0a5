//! Claiming over NATS at the edges: a claim reply that would not fit in one NATS
//! message is cut short, and the offers it did not decide are claimed next, so
//! nothing is lost or run twice. Distributed only (the single node has no NATS).

use std::time::Duration;

use tests::checks::assert_finished;
use tests::{TestEnv, TestEnvOptions};

const RUN: Duration = Duration::from_secs(120);
const RUNS: usize = 8;
/// Eight params of this size make a job spec of ~240 KiB: with NATS's default 1 MB
/// message, a claim reply (¾ of it) holds three.
const PARAM_BYTES: usize = 30_000;

#[tokio::test(flavor = "multi_thread")]
async fn a_claim_reply_too_large_for_one_message_is_cut_short_and_the_rest_is_claimed_next() {
    let mut env =
        TestEnv::start(TestEnvOptions::default().runners(0).runner_concurrency(RUNS).nats_max_payload("1MB")).await;
    // Queued before any runner starts, so the runner's first exchange asks for all of them.
    let mut created = Vec::new();
    for i in 0..RUNS {
        let values: Vec<(String, String)> = (1..=8)
            .map(|p| (format!("P{p}"), char::from(b'a' + (i + p) as u8 % 26).to_string().repeat(PARAM_BYTES)))
            .collect();
        let params: Vec<(&str, &str)> = values.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        created.push(env.run_pipeline("big_params", &params).await);
    }
    let runner = env.start_runner().await;

    let expected = format!("lengths{}\n", format!(" {PARAM_BYTES}").repeat(8));
    for run in &created {
        let run = env.wait_final(&run.id, RUN).await;
        assert_finished(&run, "success", None);
        assert_eq!(run.attempt, 1, "an undecided offer must not cost an attempt: {run:#?}");
        assert_eq!(run.runner_id.as_deref(), Some(env.runner_id(runner)), "{run:#?}");
        let log = String::from_utf8_lossy(&env.logs(&run.id).await).into_owned();
        assert_eq!(log, expected, "run {}", run.id);
    }
    let log_path = env.control_plane_log_path(0);
    let log = std::fs::read_to_string(&log_path).unwrap_or_else(|e| panic!("cannot read {}: {e}", log_path.display()));
    assert!(
        log.contains("claim reply cut short"),
        "no claim reply was cut short, so this test did not reach the path it is for; the log:\n{log}"
    );
    // Each run was granted exactly once although most were offered more than once.
    for run in &created {
        let grants = log.lines().filter(|l| l.contains("run claimed") && l.contains(&run.id)).count();
        assert_eq!(grants, 1, "run {} was granted {grants} times", run.id);
    }
}
