//! Throughput of N trivial runs at parallelism 1, 4, 8.
//!
//! Fast-Flow: a runner with RUNNER_CONCURRENCY = parallelism; all runs are submitted at
//! once and the clock stops when none is queued or running. Floor: `parallelism` workers
//! running the same containers back to back through the Docker API.

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
    let mut rows = Vec::new();
    for &parallelism in &ctx.profile.throughput_parallelism.clone() {
        ctx.deployment.restart_runner(parallelism).await?;
        let timeout = Duration::from_secs(60 + runs as u64 * 5);
        let product = run_batch(ctx.api(), "trivial", runs, timeout).await?;
        ctx.deployment.check_alive()?;
        let floor = floor_batch(&ctx.floor, runs, parallelism).await?;
        let product_rate = runs as f64 / product.as_secs_f64();
        let floor_rate = runs as f64 / floor.as_secs_f64();
        rows.push(
            Row::new(SCENARIO, &format!("{runs} runs, parallelism {parallelism}"), "runs/s")
                .value(Some(Summary::single(product_rate)))
                .floor(Some(Summary::single(floor_rate)))
                .goal("≥ 95 % of floor", |r| r.ratio.map(|x| x >= 0.95)),
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
