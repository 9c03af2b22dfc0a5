//! `bench`: Fast-Flow's benchmark harness (issue 5). See BENCHMARKS.md.
//!
//! For each configuration (distributed: own nats-server, Postgres database, S3 bucket, the
//! release `control-plane` and `runner-agent` binaries; single-node: one `control-plane`
//! with SQLite, log files and its embedded runner) starts a private deployment, runs each
//! scenario against it and against its bare-Docker floor where there is one, then prints a
//! Markdown table and writes JSON to `bench/results/`. Everything stays on 127.0.0.1.
//!
//!     bench [--quick] [--reps N] [--only latency,throughput,...] [--configs distributed,single-node] [--out DIR] [--keep]
//!     bench table [--write BENCHMARKS.md]   (the status table from bench/results, see `status`)

mod api;
mod deploy;
mod digest;
mod floor;
mod report;
mod rss;
mod scenarios;
mod sse;
mod stats;
mod status;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use deploy::{Deployment, DevEnv, Mode};
use floor::Floor;
use report::{Machine, Report, Row};
use scenarios::{Ctx, Profile};

/// Scenario names in run order: memory first (fresh processes), the 100k-run seed last.
const SCENARIOS: &[&str] =
    &["idle_memory", "latency", "throughput", "log_latency", "log_throughput", "sse_fanout", "dispatch", "api_read"];

struct Args {
    profile: Profile,
    only: Option<Vec<String>>,
    configs: Vec<Mode>,
    out: PathBuf,
    keep: bool,
}

/// The rows of one scenario in one configuration.
struct Measured {
    scenario: &'static str,
    mode: Mode,
    rows: Vec<Row>,
}

/// Runs the selected scenarios in order against one deployment, each bounded by
/// [`scenario_timeout`]; a failed scenario becomes a row naming the error and the others
/// still run.
async fn run_scenarios(ctx: &mut Ctx, args: &Args, clock: Instant, out: &mut Vec<Measured>, failed: &mut bool) {
    let mode = ctx.deployment.mode;
    for &name in SCENARIOS {
        if args.only.as_ref().is_some_and(|only| !only.iter().any(|n| n == name)) {
            continue;
        }
        eprintln!("bench: {name}, {} ({:.0} s so far)", mode.name(), clock.elapsed().as_secs_f64());
        let limit = scenario_timeout(&ctx.profile, name);
        let result = tokio::time::timeout(limit, run_scenario(ctx, name)).await;
        let mut rows = match result.unwrap_or_else(|_| Err(anyhow::anyhow!("did not finish within {limit:?}"))) {
            Ok(rows) => rows,
            Err(e) => {
                eprintln!("bench: {name} ({}) failed: {e:#}", mode.name());
                *failed = true;
                vec![Row::failed(name, &e)]
            }
        };
        for row in &mut rows {
            row.configuration = mode.name().into();
        }
        out.push(Measured { scenario: name, mode, rows });
    }
}

/// One deployment per configuration, all selected scenarios against each. The log
/// throughput floor (the slowest floor) is measured once and shared by both configurations.
async fn run_configs(args: &Args, dev: &DevEnv, clock: Instant, out: &mut Vec<Measured>, failed: &mut bool) {
    let mut log_floor = None;
    for &mode in &args.configs {
        eprintln!("bench: starting a private {} deployment", mode.name());
        let deployment = match Deployment::start(dev.clone(), mode, 4).await {
            Ok(deployment) => deployment,
            Err(e) => {
                eprintln!("bench: the {} deployment did not start: {e:#}", mode.name());
                *failed = true;
                let mut row = Row::failed("deployment", &e);
                row.configuration = mode.name().into();
                out.push(Measured { scenario: "deployment", mode, rows: vec![row] });
                continue;
            }
        };
        let floor = match Floor::connect(&deployment.dir.join("pipelines/trivial")).await {
            Ok(floor) => floor,
            Err(e) => {
                eprintln!("bench: no floor: {e:#}");
                *failed = true;
                deployment.shutdown(true).await;
                return;
            }
        };
        let mut ctx = Ctx { profile: args.profile.clone(), deployment, floor, log_floor: log_floor.take() };
        let before = out.len();
        let mut stop = false;
        tokio::select! {
            () = run_scenarios(&mut ctx, args, clock, out, failed) => {}
            () = interrupted() => {
                eprintln!("bench: interrupted; cleaning up");
                *failed = true;
                stop = true;
            }
        }
        let scenario_failed = out[before..].iter().any(|m| m.rows.iter().any(|r| r.metric == "(not measured)"));
        log_floor = ctx.log_floor.take();
        ctx.deployment.shutdown(args.keep || scenario_failed || stop).await;
        if stop {
            return;
        }
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

/// Upper bound of one scenario, so a hung run cannot hang the benchmark: per repetition,
/// since three repetitions of throughput (about 17 min per configuration) would not fit
/// one repetition's bound.
fn scenario_timeout(profile: &Profile, scenario: &str) -> Duration {
    let per_repetition = if profile.name == "quick" { Duration::from_secs(60) } else { Duration::from_secs(20 * 60) };
    per_repetition * profile.reps(scenario) as u32
}

const USAGE: &str = "bench [--quick] [--reps N] [--only SCENARIOS] [--configs distributed,single-node] \
[--out DIR] [--keep] [--throughput-runs N] [--idle-runs N] [--log-mib N] [--dispatch-runs N]

  --quick              CI smoke run: tiny sizes, 1 repetition (latency 2), 60 s per scenario
  --reps N             repetitions of every repeated scenario (latency, throughput, log_latency,
                       log_throughput, dispatch, api_read); full profile: 3 (log_throughput 2)
  --only A,B           only these scenarios
  --configs A,B        distributed, single-node or both (default both)
  --throughput-runs N  runs per throughput repetition (full 200)
  --idle-runs N        runs of idle_memory (full 1000)
  --log-mib N          MiB printed per log_throughput repetition (full 1024)
  --dispatch-runs N    runs per dispatch phase (full 2000; more gives a longer window to profile)
  --out DIR            where the JSON goes (default bench/results)
  --keep               keep the deployment's directory under /tmp/fastflow-bench

bench table [--results DIR] [--known FILE] [--write BENCHMARKS.md]
  prints the status table (latest result per goal and configuration) from bench/results,
  or writes it between the status-table markers of the given file; no services needed
";

/// Size overrides from the command line, applied after the profile is chosen so that
/// `--reps 2 --quick` and `--quick --reps 2` mean the same.
#[derive(Default)]
struct Overrides {
    reps: Option<usize>,
    throughput_runs: Option<usize>,
    idle_runs: Option<usize>,
    log_mib: Option<u64>,
    dispatch_runs: Option<usize>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        profile: Profile::full(),
        only: None,
        configs: Mode::ALL.to_vec(),
        out: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("results"),
        keep: false,
    };
    let mut overrides = Overrides::default();
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--quick" => args.profile = Profile::quick(),
            "--keep" => args.keep = true,
            // Size overrides, for a shorter run on a busy machine (the report shows the sizes).
            "--reps" => overrides.reps = Some(number(it.next(), "--reps")?),
            "--throughput-runs" => overrides.throughput_runs = Some(number(it.next(), "--throughput-runs")?),
            "--idle-runs" => overrides.idle_runs = Some(number(it.next(), "--idle-runs")?),
            "--log-mib" => overrides.log_mib = Some(number(it.next(), "--log-mib")?),
            "--dispatch-runs" => overrides.dispatch_runs = Some(number(it.next(), "--dispatch-runs")?),
            "--only" => {
                let list = it.next().context("--only needs a comma-separated list of scenarios")?;
                let names: Vec<String> = list.split(',').map(str::to_string).collect();
                if let Some(bad) = names.iter().find(|n| !SCENARIOS.contains(&n.as_str())) {
                    bail!("unknown scenario {bad}; known: {}", SCENARIOS.join(", "));
                }
                args.only = Some(names);
            }
            "--configs" => {
                let list = it.next().context("--configs needs distributed, single-node or both")?;
                args.configs = list
                    .split(',')
                    .map(|n| Mode::parse(n).with_context(|| format!("unknown configuration {n}")))
                    .collect::<anyhow::Result<_>>()?;
            }
            "--out" => args.out = PathBuf::from(it.next().context("--out needs a directory")?),
            "-h" | "--help" => {
                println!("{USAGE}\nScenarios (in run order): {}", SCENARIOS.join(", "));
                std::process::exit(0);
            }
            other => bail!("unknown argument {other} (try --help)"),
        }
    }
    if let Some(reps) = overrides.reps {
        args.profile.set_reps(reps);
    }
    if let Some(runs) = overrides.throughput_runs {
        args.profile.throughput_runs = runs;
    }
    if let Some(runs) = overrides.idle_runs {
        args.profile.idle_runs = runs;
    }
    if let Some(mib) = overrides.log_mib {
        args.profile.log_bytes = mib << 20;
    }
    if let Some(runs) = overrides.dispatch_runs {
        args.profile.dispatch_runs = runs;
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

/// A positive whole number (0 would mean an empty scenario, or no repetition at all).
fn number<T: std::str::FromStr + Default + PartialEq>(value: Option<String>, flag: &str) -> anyhow::Result<T> {
    value
        .and_then(|v| v.parse().ok())
        .filter(|n| *n != T::default())
        .with_context(|| format!("{flag} needs a positive number"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Both rustls providers are linked; NATS TLS (the harness playing a runner) uses the
    // process default.
    let _ = rustls::crypto::ring::default_provider().install_default();
    if std::env::args().nth(1).as_deref() == Some("table") {
        return status::cli(std::env::args().skip(2));
    }
    let args = parse_args()?;
    let dev = DevEnv::from_env()?;
    let started_at = chrono::Utc::now().to_rfc3339();
    let machine = Machine::probe();
    let commit = report::git_commit();
    let clock = Instant::now();
    eprintln!("bench: {} profile", args.profile.name);

    let mut measured = Vec::new();
    let mut failed = false;
    run_configs(&args, &dev, clock, &mut measured, &mut failed).await;
    let rows = ordered_rows(measured);

    let duration_seconds = clock.elapsed().as_secs_f64();
    let report = Report {
        started_at,
        profile: args.profile.name,
        sizes: format!("{:?}", args.profile),
        commit,
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

/// Rows grouped by scenario (in run order), each scenario's configurations side by side.
fn ordered_rows(mut measured: Vec<Measured>) -> Vec<Row> {
    let rank = |name: &str| SCENARIOS.iter().position(|s| *s == name).unwrap_or(usize::MAX);
    let config_rank = |mode: Mode| Mode::ALL.iter().position(|m| *m == mode).unwrap_or(usize::MAX);
    measured.sort_by_key(|m| (rank(m.scenario), config_rank(m.mode)));
    measured.into_iter().flat_map(|m| m.rows).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_must_be_positive() {
        assert_eq!(number::<usize>(Some("3".into()), "--reps").ok(), Some(3));
        assert!(number::<usize>(Some("0".into()), "--reps").is_err());
        assert!(number::<usize>(Some("x".into()), "--reps").is_err());
        assert!(number::<usize>(None, "--reps").is_err());
    }

    #[test]
    fn timeout_scales_with_repetitions() {
        let mut profile = Profile::quick();
        profile.set_reps(2);
        assert_eq!(scenario_timeout(&profile, "throughput"), Duration::from_secs(120));
        assert_eq!(scenario_timeout(&profile, "sse_fanout"), Duration::from_secs(60));
    }
}
