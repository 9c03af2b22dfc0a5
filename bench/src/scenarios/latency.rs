//! Trigger → container exited, trivial busybox job, one run at a time.
//!
//! Fast-Flow: `POST …/run`, then follow the run's SSE stream until `end` (pushed once the
//! run is final, archive written). Floor: the same container created, attached, started,
//! waited for and removed through the Docker API. Product and floor alternate run by run,
//! so background noise hits both alike.

use std::time::Instant;

use crate::report::Row;
use crate::stats::{Summary, percentile};

use super::Ctx;

const SCENARIO: &str = "Trigger → exited (sequential)";

pub async fn run(ctx: &mut Ctx) -> anyhow::Result<Vec<Row>> {
    ctx.deployment.restart_runner(1).await?;
    // One unmeasured round warms the code cache, the image lookup and the connections.
    one_product_run(ctx).await?;
    ctx.floor.run(&["true"], &[]).await?;

    let (mut p50, mut p95, mut floor_p50, mut floor_p95) = (vec![], vec![], vec![], vec![]);
    for _ in 0..ctx.profile.latency_reps {
        let (mut product, mut floor) = (vec![], vec![]);
        for _ in 0..ctx.profile.latency_runs {
            product.push(one_product_run(ctx).await?);
            floor.push(ctx.floor.run(&["true"], &[]).await?.elapsed.as_secs_f64() * 1000.0);
        }
        p50.extend(percentile(&product, 50.0));
        p95.extend(percentile(&product, 95.0));
        floor_p50.extend(percentile(&floor, 50.0));
        floor_p95.extend(percentile(&floor, 95.0));
    }
    ctx.deployment.check_alive()?;
    let overhead: Vec<f64> = p50.iter().zip(&floor_p50).map(|(p, f)| p - f).collect();
    let runs = format!("{} runs per repetition", ctx.profile.latency_runs);
    Ok(vec![
        Row::new(SCENARIO, "p50", "ms")
            .value(Summary::of(&p50))
            .floor(Summary::of(&floor_p50))
            .goal("ratio ≤ 1.1", |r| r.ratio.map(|x| x <= 1.1))
            .note(runs.clone()),
        Row::new(SCENARIO, "p95", "ms").value(Summary::of(&p95)).floor(Summary::of(&floor_p95)).note(runs),
        Row::new(SCENARIO, "p50 overhead over floor", "ms")
            .value(Summary::of(&overhead))
            .goal("≤ 30 ms", |r| r.value.as_ref().map(|v| v.median <= 30.0)),
    ])
}

/// Milliseconds from POST to the `end` event of a successful run.
async fn one_product_run(ctx: &Ctx) -> anyhow::Result<f64> {
    let started = Instant::now();
    let run = ctx.api().create_run("trivial", &[]).await?;
    let run = ctx.api().wait_end(&run.id).await?;
    let elapsed = started.elapsed().as_secs_f64() * 1000.0;
    run.expect_success()?;
    Ok(elapsed)
}
