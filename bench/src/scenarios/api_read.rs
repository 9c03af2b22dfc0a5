//! API read latency: `GET /api/v1/runs?limit=50` with `api_seed_runs` runs stored, at a
//! fixed arrival rate (open loop: each request's latency counts from the moment it was
//! due, so a slow server cannot hide its queueing by slowing the client down).
//!
//! The runs are seeded with one SQL statement (copies of a real run's row), which is how
//! 100k runs get into the database in seconds rather than hours.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::Semaphore;

use crate::report::Row;
use crate::stats::{Summary, percentile};

use super::Ctx;

const SCENARIO: &str = "API read latency";
const MAX_IN_FLIGHT: usize = 512;
const SEED_SQL: &str = "insert into runs (id, pipeline_name, status, attempt, trigger, params, spec, runner_id, \
     exit_code, log_size_bytes, created_at, started_at, finished_at) \
     select gen_random_uuid(), 'trivial', 'success', 1, 'api', '{}'::jsonb, \
            (select spec from runs order by created_at limit 1), 'seed', 0, 0, \
            now() - make_interval(secs => 3600 + i::double precision / 100), \
            now() - make_interval(secs => 3600 + i::double precision / 100), \
            now() - make_interval(secs => 3600 + i::double precision / 100) \
     from generate_series(1, $1::bigint) as i";

pub async fn run(ctx: &mut Ctx) -> anyhow::Result<Vec<Row>> {
    ctx.deployment.restart_runner(4).await?;
    // A real run first, so the seeded rows carry a real frozen spec.
    let run = ctx.api().create_run("trivial", &[]).await?;
    ctx.api().wait_end(&run.id).await?.expect_success()?;
    let seed = ctx.profile.api_seed_runs;
    let mut db = ctx.deployment.db.connect().await?;
    sqlx::query(SEED_SQL).bind(seed as i64).execute(&mut db).await.context("seeding runs")?;
    sqlx::query("analyze runs").execute(&mut db).await.context("analyze runs")?;

    let rate = ctx.profile.api_rate;
    let total = (rate * ctx.profile.api_seconds) as usize;
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let started = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate));
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        let due = started + interval * i as u32;
        tokio::time::sleep_until(due.into()).await;
        let api = ctx.api().clone();
        let slots = slots.clone();
        tasks.push(tokio::spawn(async move {
            let _slot = slots.acquire_owned().await;
            let result = api.get_status("/api/v1/runs?limit=50").await;
            (due.elapsed().as_secs_f64() * 1000.0, matches!(result, Ok(200)))
        }));
    }
    let mut latencies = Vec::with_capacity(total);
    let mut errors = 0usize;
    for task in tasks {
        let (latency, ok) = task.await.context("a request task panicked")?;
        latencies.push(latency);
        errors += usize::from(!ok);
    }
    let elapsed = started.elapsed().as_secs_f64();
    ctx.deployment.check_alive()?;
    let load = format!("{total} requests at {rate}/s, {seed} runs stored, {errors} errors");
    Ok(vec![
        Row::new(SCENARIO, "p50", "ms").value(percentile(&latencies, 50.0).map(Summary::single)).note(load.clone()),
        Row::new(SCENARIO, "p99", "ms")
            .value(percentile(&latencies, 99.0).map(Summary::single))
            .goal("≤ 10 ms", |r| r.value.as_ref().map(|v| v.median <= 10.0))
            .note(load),
        Row::new(SCENARIO, "achieved rate", "req/s").value(Some(Summary::single(total as f64 / elapsed))),
    ])
}
