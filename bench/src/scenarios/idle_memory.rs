//! Idle memory: VmRSS of the runner and the control plane right after start, after half
//! of `idle_runs` trivial runs and after all of them (each after a few seconds idle).
//!
//! Single node: the one process, against the sum of the two goals (15 + 40 = 55 MiB): it
//! holds both the control plane and the runner, so the distributed budget of the pair is
//! the natural budget for the node (one runtime and allocator instead of two, but SQLite's
//! page cache instead of a Postgres client).

use std::time::Duration;

use crate::deploy::Mode;
use crate::report::Row;
use crate::rss::rss_mib;
use crate::stats::Summary;

use super::{Ctx, run_batch};

const SCENARIO: &str = "Idle memory";
/// Single node: the runner's and the control plane's goals together (see the module comment).
pub const NODE_GOAL_MIB: f64 = 55.0;

pub async fn run(ctx: &mut Ctx) -> anyhow::Result<Vec<Row>> {
    ctx.deployment.restart_runner(8).await?;
    let runs = ctx.profile.idle_runs;
    let mut samples = vec![(0, sample(ctx).await)];
    for batch in [runs / 2, runs - runs / 2] {
        run_batch(ctx.api(), "trivial", batch, Duration::from_secs(60 + batch as u64 * 5)).await?;
        ctx.deployment.check_alive()?;
        let done = samples.last().map(|s| s.0).unwrap_or(0) + batch;
        samples.push((done, sample(ctx).await));
    }
    let mut rows = Vec::new();
    let single = ctx.deployment.mode == Mode::SingleNode;
    for (done, (runner, control_plane)) in &samples {
        let when = if *done == 0 { "after start".to_string() } else { format!("after {done} runs") };
        if single {
            rows.push(
                Row::new(SCENARIO, &format!("node (control plane + embedded runner) {when}"), "MiB")
                    .value(control_plane.map(Summary::single))
                    .goal("≤ 55 MiB (15 + 40)", |r| r.value.as_ref().map(|v| v.median <= NODE_GOAL_MIB)),
            );
            continue;
        }
        rows.push(
            Row::new(SCENARIO, &format!("runner {when}"), "MiB")
                .value(runner.map(Summary::single))
                .goal("≤ 15 MiB", |r| r.value.as_ref().map(|v| v.median <= 15.0)),
        );
        rows.push(
            Row::new(SCENARIO, &format!("control plane {when}"), "MiB")
                .value(control_plane.map(Summary::single))
                .goal("≤ 40 MiB", |r| r.value.as_ref().map(|v| v.median <= 40.0)),
        );
    }
    // "No growth": what the second half of the runs added (the first half includes warm-up:
    // connection pools, caches, allocator arenas).
    if let [_, (half, mid), (all, end)] = samples.as_slice() {
        let growth = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| Summary::single(b - a));
        let mut grew = |who: &str, a: Option<f64>, b: Option<f64>| {
            rows.push(
                Row::new(SCENARIO, &format!("{who} growth from {half} to {all} runs"), "MiB")
                    .value(growth(a, b))
                    .goal("no growth (≤ 1 MiB)", |r| r.value.as_ref().map(|v| v.median <= 1.0)),
            );
        };
        if single {
            grew("node", mid.1, end.1);
        } else {
            grew("runner", mid.0, end.0);
            grew("control plane", mid.1, end.1);
        }
    }
    Ok(rows)
}

/// (runner, control plane) VmRSS after the processes settled.
async fn sample(ctx: &Ctx) -> (Option<f64>, Option<f64>) {
    let settle = if ctx.profile.name == "quick" { Duration::from_secs(1) } else { Duration::from_secs(3) };
    tokio::time::sleep(settle).await;
    let runner = ctx.deployment.runner_pid().and_then(rss_mib);
    let control_plane = ctx.deployment.control_plane_pid().and_then(rss_mib);
    (runner, control_plane)
}
