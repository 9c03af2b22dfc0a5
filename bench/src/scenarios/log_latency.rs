//! Live log latency: print in the container → SSE client receives the line.
//!
//! The `lograte` pipeline (Python, worker image) prints `<unix ns> <seq>` lines at a fixed
//! rate after a 0.5 s pause, so the client is subscribed before the first line. The
//! container shares the host's clock; latency = receive time − printed time.
//!
//! A second measurement drops the pause: the client follows from the moment it
//! triggered the run (as a user who opens a run's log right away) and the job prints its
//! first line as soon as it starts; that line's latency includes how soon the control
//! plane notices the queued run has started.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use serde::Deserialize;

use crate::report::Row;
use crate::stats::{Summary, percentile};

use super::Ctx;

const SCENARIO: &str = "Live log latency";
/// `lograte`'s pause before its first line (seconds), so the client is subscribed.
const START_DELAY: &str = "0.5";

#[derive(Deserialize)]
struct LogData {
    line: String,
    stream: String,
}

pub async fn run(ctx: &mut Ctx) -> anyhow::Result<Vec<Row>> {
    ctx.deployment.restart_runner(4).await?;
    // Unmeasured: the first Python run pays for the worker image's cold start.
    one_run(ctx, 10, 1, START_DELAY).await?;
    let mut rows = Vec::new();
    for &(rate, seconds) in &ctx.profile.log_rates.clone() {
        let (mut p50, mut p99, mut max) = (vec![], vec![], vec![]);
        for _ in 0..ctx.profile.log_latency_reps {
            let latencies = one_run(ctx, rate, seconds, START_DELAY).await?;
            p50.extend(percentile(&latencies, 50.0));
            p99.extend(percentile(&latencies, 99.0));
            max.extend(percentile(&latencies, 100.0));
        }
        let lines = format!("{} lines per repetition", rate * seconds);
        rows.push(
            Row::new(SCENARIO, &format!("p50 at {rate} lines/s"), "ms").value(Summary::of(&p50)).note(lines.clone()),
        );
        rows.push(
            Row::new(SCENARIO, &format!("p99 at {rate} lines/s"), "ms")
                .value(Summary::of(&p99))
                .goal("≤ 50 ms", |r| r.value.as_ref().map(|v| v.median <= 50.0))
                .note(lines),
        );
        rows.push(Row::new(SCENARIO, &format!("max at {rate} lines/s"), "ms").value(Summary::of(&max)));
    }
    let mut first = Vec::with_capacity(ctx.profile.first_line_runs);
    for _ in 0..ctx.profile.first_line_runs {
        first.extend(one_run(ctx, 10, 1, "0").await?.first().copied());
    }
    rows.push(
        Row::new(SCENARIO, "first line, printed at start, followed from the trigger", "ms")
            .value(Summary::of(&first))
            .note(format!("median [min–max] over {} runs (one value each)", first.len())),
    );
    ctx.deployment.check_alive()?;
    Ok(rows)
}

/// Latencies (ms) of every line of one run; fails unless all lines arrived in order.
async fn one_run(ctx: &Ctx, rate: u32, seconds: u32, start_delay: &str) -> anyhow::Result<Vec<f64>> {
    let params =
        [("RATE", rate.to_string()), ("DURATION", seconds.to_string()), ("START_DELAY", start_delay.to_owned())];
    let run = ctx.api().create_run("lograte", &params).await?;
    let mut stream = ctx.api().stream_logs(&run.id).await?;
    let expected = u64::from(rate) * u64::from(seconds);
    let mut latencies = Vec::with_capacity(expected as usize);
    while let Some(event) = stream.next_event().await? {
        let now_ns = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default();
        match event.event.as_str() {
            "log" => {
                let data: LogData = serde_json::from_str(&event.data).context("log event data")?;
                if data.stream != "stdout" {
                    continue;
                }
                let (ts, seq) = data.line.trim_end().split_once(' ').context("line without a timestamp")?;
                let ts: u128 = ts.parse().context("line timestamp")?;
                let seq: u64 = seq.parse().context("line number")?;
                if seq != latencies.len() as u64 {
                    bail!("run {}: got line {seq}, expected {}", run.id, latencies.len());
                }
                latencies.push(now_ns.saturating_sub(ts) as f64 / 1e6);
            }
            "end" => break,
            _ => {}
        }
    }
    ctx.api().get_run(&run.id).await?.expect_success()?;
    if latencies.len() as u64 != expected {
        bail!("run {}: {} of {expected} lines arrived", run.id, latencies.len());
    }
    Ok(latencies)
}
