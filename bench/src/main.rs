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
use std::time::Instant;

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
                println!("bench [--quick] [--only {}] [--out DIR] [--keep]", SCENARIOS.join(","));
                std::process::exit(0);
            }
            other => bail!("unknown argument {other} (try --help)"),
        }
    }
    Ok(args)
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
    for &name in SCENARIOS {
        if args.only.as_ref().is_some_and(|only| !only.iter().any(|n| n == name)) {
            continue;
        }
        eprintln!("bench: {name} ({:.0} s so far)", clock.elapsed().as_secs_f64());
        let scenario_rows = match name {
            "idle_memory" => scenarios::idle_memory::run(&mut ctx).await,
            "latency" => scenarios::latency::run(&mut ctx).await,
            "throughput" => scenarios::throughput::run(&mut ctx).await,
            "log_latency" => scenarios::log_latency::run(&mut ctx).await,
            "log_throughput" => scenarios::log_throughput::run(&mut ctx).await,
            "sse_fanout" => scenarios::sse_fanout::run(&mut ctx).await,
            "dispatch" => scenarios::dispatch::run(&mut ctx).await,
            "api_read" => scenarios::api_read::run(&mut ctx).await,
            _ => continue,
        };
        match scenario_rows {
            Ok(scenario_rows) => rows.extend(scenario_rows),
            Err(e) => {
                eprintln!("bench: {name} failed: {e:#}");
                failed = true;
                rows.push(Row::failed(name, &e));
            }
        }
        rows.push(Row::single_node(name));
    }
    ctx.deployment.shutdown(args.keep || failed).await;

    let duration_seconds = clock.elapsed().as_secs_f64();
    let report = Report { started_at, profile: args.profile.name, machine, duration_seconds, rows: &rows };
    println!("{}", report::markdown(&rows));
    let path = report::write_json(&args.out, args.profile.name, &report)?;
    eprintln!("bench: done in {duration_seconds:.0} s; JSON in {}", path.display());
    if failed {
        bail!("some scenarios failed (see the table)");
    }
    Ok(())
}
