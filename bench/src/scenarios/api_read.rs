//! API read latency: `GET /api/v1/runs?limit=50` with `api_seed_runs` runs stored, each
//! request authenticated with the harness's API token (`Authorization: Bearer`), at a
//! fixed arrival rate (open loop: each request's latency counts from the moment it was
//! due, so a slow server cannot hide its queueing by slowing the client down).
//!
//! The runs are seeded with one SQL statement (copies of a real run's row), which is how
//! 100k runs get into the database in seconds rather than hours: `generate_series` on
//! Postgres; on the single node a recursive CTE run on its SQLite file while the node is
//! stopped (SIGTERM), then the node is started again.
//!
//! Seeded once; the load is repeated `api_reps` times (each repetition waits for all its
//! requests, so the next starts with no backlog).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sqlx::Connection;
use tokio::sync::Semaphore;

use crate::report::Row;
use crate::stats::{Summary, percentile};

use super::Ctx;
use crate::deploy::Mode;

const SCENARIO: &str = "API read latency";
const MAX_IN_FLIGHT: usize = 512;
const PATH: &str = "/api/v1/runs?limit=50";
const SEED_SQL: &str = "insert into runs (id, pipeline_name, status, attempt, trigger, params, spec, runner_id, \
     exit_code, log_size_bytes, created_at, started_at, finished_at) \
     select gen_random_uuid(), 'trivial', 'success', 1, 'api', '{}'::jsonb, \
            (select spec from runs order by created_at limit 1), 'seed', 0, 0, \
            now() - make_interval(secs => 3600 + i::double precision / 100), \
            now() - make_interval(secs => 3600 + i::double precision / 100), \
            now() - make_interval(secs => 3600 + i::double precision / 100) \
     from generate_series(1, $1::bigint) as i";
/// The same on SQLite: ids are valid hyphenated UUIDs (`…-8000-<i in hex>`), timestamps
/// INTEGER unix microseconds (`?2` = now), one row every 10 ms going back from an hour ago.
const SEED_SQLITE: &str = "insert into runs (id, pipeline_name, pool, status, attempt, trigger, params, spec, \
     runner_id, exit_code, log_size_bytes, created_at, started_at, finished_at) \
     with recursive seq(i) as (select 1 union all select i + 1 from seq where i < ?1) \
     select printf('00000000-0000-7000-8000-%012x', i), 'trivial', 'default', 'success', 1, 'api', '{}', \
            (select spec from runs order by created_at limit 1), 'seed', 0, 0, \
            ?2 - 3600000000 - i * 10000, ?2 - 3600000000 - i * 10000, ?2 - 3600000000 - i * 10000 \
     from seq";

pub async fn run(ctx: &mut Ctx) -> anyhow::Result<Vec<Row>> {
    ctx.deployment.restart_runner(4).await?;
    // A real run first, so the seeded rows carry a real frozen spec.
    let run = ctx.api().create_run("trivial", &[]).await?;
    ctx.api().wait_end(&run.id).await?.expect_success()?;
    let seed = ctx.profile.api_seed_runs;
    let seeding = Instant::now();
    match ctx.deployment.mode {
        Mode::Distributed => {
            let services = ctx.deployment.services.as_ref().context("no database")?;
            let mut db = services.db.connect().await?;
            sqlx::query(SEED_SQL).bind(seed as i64).execute(&mut db).await.context("seeding runs")?;
            sqlx::query("analyze runs").execute(&mut db).await.context("analyze runs")?;
        }
        Mode::SingleNode => {
            ctx.deployment.stop_node().await;
            let url = format!("sqlite://{}", ctx.deployment.sqlite_path().display());
            let mut db = sqlx::SqliteConnection::connect(&url).await.with_context(|| format!("opening {url}"))?;
            let now_us = chrono::Utc::now().timestamp_micros();
            sqlx::query(SEED_SQLITE).bind(seed as i64).bind(now_us).execute(&mut db).await.context("seeding runs")?;
            sqlx::query("analyze").execute(&mut db).await.context("analyze")?;
            db.close().await.context("closing the SQLite file")?;
            ctx.deployment.restart_runner(4).await?;
        }
    }
    let seed_seconds = seeding.elapsed().as_secs_f64();
    check_authenticated(ctx).await?;

    let rate = ctx.profile.api_rate;
    let total = (rate * ctx.profile.api_seconds) as usize;
    let (mut p50, mut p99, mut achieved) = (vec![], vec![], vec![]);
    let mut errors = 0usize;
    for _ in 0..ctx.profile.api_reps {
        let load = open_loop(ctx, rate, total).await?;
        p50.extend(percentile(&load.latencies, 50.0));
        p99.extend(percentile(&load.latencies, 99.0));
        achieved.push(total as f64 / load.elapsed_seconds);
        errors += load.errors;
        ctx.deployment.check_alive()?;
    }
    let load = format!(
        "{total} requests at {rate}/s per repetition, with a bearer token, {seed} runs stored \
         (seeded in {seed_seconds:.1} s), {errors} errors in all"
    );
    Ok(vec![
        Row::new(SCENARIO, "p50", "ms").value(Summary::of(&p50)).note(load.clone()),
        Row::new(SCENARIO, "p99", "ms")
            .value(Summary::of(&p99))
            .goal("≤ 10 ms", |r| r.value.as_ref().map(|v| v.median <= 10.0))
            .note(load),
        Row::new(SCENARIO, "achieved rate", "req/s").value(Summary::of(&achieved)),
    ])
}

/// The measured path is the authenticated one: the same request without the token is
/// refused (401), with it answered (200).
async fn check_authenticated(ctx: &Ctx) -> anyhow::Result<()> {
    let api = ctx.api();
    if !api.has_token() {
        bail!("the harness's client has no API token");
    }
    let anonymous = api.without_token()?.get_status(PATH).await.context("GET without a token")?;
    let with_token = api.get_status(PATH).await.context("GET with the token")?;
    if (anonymous, with_token) != (401, 200) {
        bail!("GET {PATH}: HTTP {anonymous} without a token and {with_token} with it; expected 401 and 200");
    }
    Ok(())
}

/// One repetition of the load.
struct Load {
    latencies: Vec<f64>,
    errors: usize,
    elapsed_seconds: f64,
}

/// `total` requests, one due every 1/`rate` s whatever the server does (≤ 512 in flight).
async fn open_loop(ctx: &Ctx, rate: u32, total: usize) -> anyhow::Result<Load> {
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
            let result = api.get_status(PATH).await;
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
    Ok(Load { latencies, errors, elapsed_seconds: started.elapsed().as_secs_f64() })
}
