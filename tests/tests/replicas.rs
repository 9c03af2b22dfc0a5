//! Several processes sharing the work: control-plane replicas, competing runners,
//! and recovery after NATS loses its store.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use reqwest::StatusCode;
use tests::checks::{assert_finished, count_occurrences};
use tests::{Run, TestEnv, TestEnvOptions};

const RUN: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread")]
async fn a_run_started_on_one_replica_streams_and_lists_on_another() {
    let env = TestEnv::start(TestEnvOptions::default().control_planes(2)).await;

    let created = env.run_pipeline("counter", &[]).await;
    let sse = env.cp(1).stream_logs(&created.id, None).await.collect_until_end(RUN).await;

    let expected: Vec<String> = (1..=60).map(|i| format!("line {i}")).collect();
    assert_eq!(sse.output_lines(), expected, "lines streamed by replica 1");
    let ids: Vec<u64> = (1..=sse.logs.len() as u64).collect();
    assert_eq!(sse.ids(), ids);
    assert_eq!(sse.end["status"], "success", "end: {}", sse.end);

    let on_replica_1 = env.cp(1).get_run(&created.id).await.run(StatusCode::OK);
    assert_finished(&on_replica_1, "success", None);
    let list = env.cp(1).list_runs(&[]).await;
    let listed: Vec<Run> =
        list.expect(StatusCode::OK)["items"].as_array().expect("items").iter().map(Run::from_json).collect();
    assert!(listed.iter().any(|r| r.id == created.id), "replica 1 does not list the run: {}", list.text);
}

#[tokio::test(flavor = "multi_thread")]
async fn competing_runners_execute_every_run_exactly_once() {
    let env = TestEnv::start(TestEnvOptions::default().runners(2).runner_concurrency(2)).await;

    let mut marks = BTreeMap::new();
    for i in 0..20 {
        let mark = format!("mark-{i}-{}", uuid::Uuid::new_v4().simple());
        let run = env.run_pipeline("quick", &[("FASTFLOW_MARK", &mark)]).await;
        marks.insert(run.id, mark);
    }

    let mut runners_used = BTreeSet::new();
    for (id, mark) in &marks {
        let run = env.wait_final(id, Duration::from_secs(180)).await;
        assert_finished(&run, "success", None);
        let log = env.logs(id).await;
        assert_eq!(
            count_occurrences(&log, format!("ran {mark}\n").as_bytes()),
            1,
            "run {id} should print its own mark exactly once: {:?}",
            String::from_utf8_lossy(&log)
        );
        assert_eq!(count_occurrences(&log, b"ran "), 1, "run {id} log: {log:?}");
        runners_used.insert(run.runner_id.clone().expect("runner_id of a finished run"));
    }
    for id in marks.keys() {
        assert_eq!(env.docker_created_count(id).await, 1, "run {id} should have had exactly one container created");
    }
    let expected: BTreeSet<String> = [env.runner_id(0), env.runner_id(1)].into_iter().map(str::to_string).collect();
    assert_eq!(runners_used, expected, "both runners should have executed runs");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_queued_run_lost_with_the_nats_store_is_offered_again() {
    let mut env = TestEnv::start(TestEnvOptions::default().runners(0)).await;
    let mark = format!("lost-{}", uuid::Uuid::new_v4().simple());
    let created = env.run_pipeline("quick", &[("FASTFLOW_MARK", &mark)]).await;
    assert_eq!(created.status, "queued");

    // The offer lived only in JetStream: crash NATS and come back with nothing.
    env.kill_nats();
    env.restart_nats_with_empty_store().await;
    env.start_runner().await;

    // The control plane's sweeper re-offers queued runs within 30 s.
    let run = env.wait_final(&created.id, Duration::from_secs(90)).await;
    assert_finished(&run, "success", None);
    let log = env.logs(&run.id).await;
    assert_eq!(
        count_occurrences(&log, format!("ran {mark}\n").as_bytes()),
        1,
        "log: {:?}",
        String::from_utf8_lossy(&log)
    );
    // Give a duplicate delivery time to show up before counting containers.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(env.docker_created_count(&run.id).await, 1, "the re-offered run must be executed exactly once");
    let again = env.get_run(&run.id).await;
    assert_eq!(again.status, "success", "{again:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_whose_runner_dies_ends_as_lost_with_its_log_so_far() {
    let mut env = TestEnv::start(TestEnvOptions::default()).await;
    let created = env.run_pipeline("slow", &[]).await;
    env.wait_for_log(&created.id, "tick 2/60", RUN).await;

    // kill -9: no exit report, no more heartbeats; the lease must run out.
    env.kill_runner(0);
    let run = env.wait_for_status(&created.id, |r| r.is_final(), Duration::from_secs(120)).await;
    assert_finished(&run, "failed", Some("lost"));
    let log = String::from_utf8_lossy(&env.logs(&run.id).await).into_owned();
    assert!(log.contains("tick 1/60\ntick 2/60\n"), "log kept after the loss: {log:?}");
    assert!(!log.contains("tick 60/60"), "log: {log:?}");
}
