//! Runner pools: runs go only to runners of their pipeline's pool, and a run
//! no runner can take fails with `no_runner` instead of waiting forever.

use std::time::Duration;

use tests::{TestEnv, TestEnvOptions};

const RUN: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread")]
async fn runs_go_only_to_runners_of_their_pool() {
    let mut env = TestEnv::start(TestEnvOptions::default()).await;
    let gpu_run = env.run_pipeline("gpu_job", &[]).await;
    let plain_run = env.run_pipeline("quick", &[("FASTFLOW_MARK", "plain")]).await;
    let plain = env.wait_final(&plain_run.id, RUN).await;
    assert_eq!(plain.runner_id.as_deref(), Some(env.runner_id(0)), "the default runner takes default-pool runs");
    // The default runner must leave the gpu run alone.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(env.get_run(&gpu_run.id).await.status, "queued", "a default runner took a gpu-pool run");

    let gpu_runner = env.start_runner_with_env(&[("RUNNER_POOL", "gpu")]).await;
    let done = env.wait_final(&gpu_run.id, RUN).await;
    assert_eq!(done.status, "success", "{done:?}");
    assert_eq!(done.runner_id.as_deref(), Some(env.runner_id(gpu_runner)));
    let runners = env.cp(0).list_runners().await;
    let pools: Vec<&str> = runners.body.as_array().into_iter().flatten().filter_map(|r| r["pool"].as_str()).collect();
    assert!(pools.contains(&"gpu") && pools.contains(&"default"), "{}", runners.text);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_no_runner_can_take_fails_with_no_runner() {
    let env = TestEnv::start(
        TestEnvOptions::default()
            .control_plane_env("NO_RUNNER_TIMEOUT_SECONDS", "3")
            .control_plane_env("SWEEP_INTERVAL_SECONDS", "1"),
    )
    .await;
    let run = env.run_pipeline("nowhere", &[]).await;
    let done = env.wait_final(&run.id, RUN).await;
    assert_eq!((done.status.as_str(), done.failure_reason.as_deref()), ("failed", Some("no_runner")), "{done:?}");
    let message = done.error_message.unwrap_or_default();
    assert!(message.contains("nobody-serves-this"), "{message}");
    // Runs of a pool with a live runner are not affected.
    let fine = env.run_pipeline("quick", &[("FASTFLOW_MARK", "fine")]).await;
    assert_eq!(env.wait_final(&fine.id, RUN).await.status, "success");
}
