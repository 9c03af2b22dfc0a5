//! `bench`: Fast-Flow's benchmark harness (issue 5). See BENCHMARKS.md.
//!
//! Starts a private deployment (own nats-server, Postgres database, S3 bucket; the
//! release `control-plane` and `runner-agent` binaries), runs each scenario against it and
//! against its bare-Docker floor where there is one, prints a Markdown table and writes
//! JSON to `bench/results/`. Everything stays on 127.0.0.1.
//!
//!     bench [--quick] [--only latency,throughput,...] [--out DIR] [--keep]

mod api;
mod deploy;
mod digest;
mod floor;
mod report;
mod rss;
mod scenarios;
mod sse;
mod stats;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use deploy::{Deployment, DevEnv};
use floor::Floor;
use report::{Machine, Report, Row};
use scenarios::{Ctx, Profile};

/// Scenario names in run order: memory first (fresh processes), the 100k-run seed last.
const SCENARIOS: &[&str] =
    &["idle_memory", "latency", "throughput", "log_latency", "log_throughput", "sse_fanout", "dispatch", "api_read"];

struct Args {
    profile: Profile,
    only: Option<Vec<String>>,
    out: PathBuf,
    keep: bool,
}

/// Runs the selected scenarios in order, each bounded by [`scenario_timeout`]; a failed
/// scenario becomes a row naming the error and the others still run.
async fn run_scenarios(ctx: &mut Ctx, args: &Args, rows: &mut Vec<Row>, failed: &mut bool) {
    let clock = Instant::now();
    for &name in SCENARIOS {
        if args.only.as_ref().is_some_and(|only| !only.iter().any(|n| n == name)) {
            continue;
        }
        eprintln!("bench: {name} ({:.0} s so far)", clock.elapsed().as_secs_f64());
        let limit = scenario_timeout(&ctx.profile);
        let result = tokio::time::timeout(limit, run_scenario(ctx, name)).await;
        match result.unwrap_or_else(|_| Err(anyhow::anyhow!("did not finish within {limit:?}"))) {
            Ok(scenario_rows) => rows.extend(scenario_rows),
            Err(e) => {
                eprintln!("bench: {name} failed: {e:#}");
                *failed = true;
                rows.push(Row::failed(name, &e));
            }
        }
        rows.push(Row::single_node(name));
    }
}

async fn run_scenario(ctx: &mut Ctx, name: &str) -> anyhow::Result<Vec<Row>> {
    match name {
        "idle_memory" => scenarios::idle_memory::run(ctx).await,
        "latency" => scenarios::latency::run(ctx).await,
        "throughput" => scenarios::throughput::run(ctx).await,
        "log_latency" => scenarios::log_latency::run(ctx).await,
        "log_throughput" => scenarios::log_throughput::run(ctx).await,
        "sse_fanout" => scenarios::sse_fanout::run(ctx).await,
        "dispatch" => scenarios::dispatch::run(ctx).await,
        "api_read" => scenarios::api_read::run(ctx).await,
        other => bail!("unknown scenario {other}"),
    }
}

/// Upper bound of one scenario, so a hung run cannot hang the benchmark.
fn scenario_timeout(profile: &Profile) -> Duration {
    if profile.name == "quick" { Duration::from_secs(60) } else { Duration::from_secs(20 * 60) }
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        profile: Profile::full(),
        only: None,
        out: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("results"),
        keep: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--quick" => args.profile = Profile::quick(),
            "--keep" => args.keep = true,
            // Size overrides, for a shorter run on a busy machine (the report shows the sizes).
            "--throughput-runs" => args.profile.throughput_runs = number(it.next(), "--throughput-runs")?,
            "--idle-runs" => args.profile.idle_runs = number(it.next(), "--idle-runs")?,
            "--log-mib" => args.profile.log_bytes = number::<u64>(it.next(), "--log-mib")? << 20,
            "--only" => {
                let list = it.next().context("--only needs a comma-separated list of scenarios")?;
                let names: Vec<String> = list.split(',').map(str::to_string).collect();
                if let Some(bad) = names.iter().find(|n| !SCENARIOS.contains(&n.as_str())) {
                    bail!("unknown scenario {bad}; known: {}", SCENARIOS.join(", "));
                }
                args.only = Some(names);
            }
            "--out" => args.out = PathBuf::from(it.next().context("--out needs a directory")?),
            "-h" | "--help" => {
                println!(
                    "bench [--quick] [--only {}] [--out DIR] [--keep] [--throughput-runs N] [--idle-runs N] [--log-mib N]",
                    SCENARIOS.join(",")
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other} (try --help)"),
        }
    }
    Ok(args)
}

/// SIGINT or SIGTERM (e.g. from `timeout`): stop and clean up, so no product process,
/// database or bucket is left behind.
async fn interrupted() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

fn number<T: std::str::FromStr>(value: Option<String>, flag: &str) -> anyhow::Result<T> {
    value.and_then(|v| v.parse().ok()).with_context(|| format!("{flag} needs a positive number"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let dev = DevEnv::from_env()?;
    let started_at = chrono::Utc::now().to_rfc3339();
    let machine = Machine::probe();
    let clock = Instant::now();
    eprintln!("bench: {} profile; starting a private deployment", args.profile.name);

    let deployment = Deployment::start(dev, 4).await?;
    let floor = match Floor::connect(&deployment.dir.join("pipelines/trivial")).await {
        Ok(floor) => floor,
        Err(e) => {
            deployment.shutdown(args.keep).await;
            return Err(e);
        }
    };
    let mut ctx = Ctx { profile: args.profile.clone(), deployment, floor };
    let mut rows = Vec::new();
    let mut failed = false;
    tokio::select! {
        () = run_scenarios(&mut ctx, &args, &mut rows, &mut failed) => {}
        () = interrupted() => {
            eprintln!("bench: interrupted; cleaning up");
            failed = true;
        }
    }
    ctx.deployment.shutdown(args.keep || failed).await;

    let duration_seconds = clock.elapsed().as_secs_f64();
    let report = Report {
        started_at,
        profile: args.profile.name,
        sizes: format!("{:?}", args.profile),
        machine,
        duration_seconds,
        rows: &rows,
    };
    println!("{}", report::markdown(&rows));
    let path = report::write_json(&args.out, args.profile.name, &report)?;
    eprintln!("bench: done in {duration_seconds:.0} s; JSON in {}", path.display());
    if failed {
        bail!("some scenarios failed (see the table)");
    }
    Ok(())
}
