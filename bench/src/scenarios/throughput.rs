//! Throughput of N trivial runs at parallelism 1, 4, 8.
//!
//! Fast-Flow: a runner with RUNNER_CONCURRENCY = parallelism; all runs are submitted at
//! once and the clock stops when none is queued or running. Floor: `parallelism` workers
//! running the same containers back to back through the Docker API. Each parallelism is
//! repeated `throughput_reps` times, product and floor alternating (product, floor,
//! product, …) so load noise on the shared machine hits both.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::floor::Floor;
use crate::report::Row;
use crate::stats::Summary;

use super::{Ctx, run_batch};

const SCENARIO: &str = "Throughput, trivial runs";

pub async fn run(ctx: &mut Ctx) -> anyhow::Result<Vec<Row>> {
    let runs = ctx.profile.throughput_runs;
    let reps = ctx.profile.throughput_reps;
    let mut rows = Vec::new();
    for &parallelism in &ctx.profile.throughput_parallelism.clone() {
        ctx.deployment.restart_runner(parallelism).await?;
        let timeout = Duration::from_secs(60 + runs as u64 * 5);
        let (mut product_rates, mut floor_rates) = (Vec::with_capacity(reps), Vec::with_capacity(reps));
        for _ in 0..reps {
            let product = run_batch(ctx.api(), "trivial", runs, timeout).await?;
            ctx.deployment.check_alive()?;
            let floor = floor_batch(&ctx.floor, runs, parallelism).await?;
            product_rates.push(runs as f64 / product.as_secs_f64());
            floor_rates.push(runs as f64 / floor.as_secs_f64());
        }
        rows.push(
            Row::new(SCENARIO, &format!("{runs} runs, parallelism {parallelism}"), "runs/s")
                .value(Summary::of(&product_rates))
                .floor(Summary::of(&floor_rates))
                .paired_ratios(&product_rates, &floor_rates)
                .goal("≥ 95 % of floor", |r| r.ratio.map(|x| x >= 0.95))
                .note(format!("{runs} runs per repetition")),
        );
    }
    Ok(rows)
}

/// `parallelism` workers taking containers from a shared counter until `runs` are done.
async fn floor_batch(floor: &Floor, runs: usize, parallelism: usize) -> anyhow::Result<Duration> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..parallelism)
        .map(|_| {
            let floor = floor.clone();
            let next = next.clone();
            tokio::spawn(async move {
                while next.fetch_add(1, Ordering::Relaxed) < runs {
                    floor.run(&["true"], &[]).await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for worker in workers {
        worker.await??;
    }
    Ok(started.elapsed())
}
