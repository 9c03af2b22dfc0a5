//! SSE fan-out: `fanout_clients` clients follow one busy run (`fanout_lines` lines in
//! bursts of 100 every 100 ms); every client must receive every line in order, then `end`.

use std::time::Instant;

use anyhow::{Context, bail};
use serde::Deserialize;

use crate::api::Api;
use crate::report::Row;
use crate::rss::{PeakSampler, rss_mib};
use crate::stats::{Summary, percentile};

use super::Ctx;

const SCENARIO: &str = "SSE fan-out";

#[derive(Deserialize)]
struct LogData {
    line: String,
    stream: String,
}

pub async fn run(ctx: &mut Ctx) -> anyhow::Result<Vec<Row>> {
    ctx.deployment.restart_runner(4).await?;
    let (clients, lines) = (ctx.profile.fanout_clients, ctx.profile.fanout_lines);
    let before = ctx.deployment.control_plane_pid().and_then(rss_mib);
    let peak = PeakSampler::start(ctx.deployment.control_plane_pid());
    let started = Instant::now();
    let run = ctx.api().create_run("fanout", &[("LINES", lines.to_string())]).await?;
    let followers: Vec<_> = (0..clients)
        .map(|_| {
            let api = ctx.api().clone();
            let id = run.id.clone();
            tokio::spawn(async move { follow(&api, &id, lines).await.map(|()| started.elapsed().as_secs_f64()) })
        })
        .collect();
    let mut finish_times = Vec::with_capacity(clients);
    let mut failures = Vec::new();
    for follower in followers {
        match follower.await.context("a follower task panicked")? {
            Ok(t) => finish_times.push(t),
            Err(e) => failures.push(format!("{e:#}")),
        }
    }
    let peak = peak.stop();
    ctx.deployment.check_alive()?;
    ctx.api().get_run(&run.id).await?.expect_success()?;
    let complete = finish_times.len();
    let who = ctx.deployment.server_label();
    let note = match failures.first() {
        None => format!("{lines} lines each"),
        Some(first) => format!("{} failed; first: {first}", failures.len()),
    };
    Ok(vec![
        Row::new(SCENARIO, &format!("clients with all {lines} lines + end"), "clients")
            .value(Some(Summary::single(complete as f64)))
            .goal(&format!("all {clients}"), |r| r.value.as_ref().map(|v| v.median as usize == clients))
            .note(note),
        Row::new(SCENARIO, &format!("{who} RSS before"), "MiB").value(before.map(Summary::single)),
        Row::new(SCENARIO, &format!("{who} peak RSS"), "MiB").value(Some(Summary::single(peak))).note("goal: bounded"),
        Row::new(SCENARIO, "trigger → last client got end", "s")
            .value(percentile(&finish_times, 100.0).map(Summary::single)),
    ])
}

/// Follows the stream; fails unless lines 0..lines arrive in order, then `end`.
async fn follow(api: &Api, run_id: &str, lines: u32) -> anyhow::Result<()> {
    let mut stream = api.stream_logs(run_id).await?;
    let mut next = 0u32;
    while let Some(event) = stream.next_event().await? {
        match event.event.as_str() {
            "log" => {
                let data: LogData = serde_json::from_str(&event.data).context("log event data")?;
                if data.stream != "stdout" {
                    continue;
                }
                let expected = format!("line {next}");
                if data.line.trim_end() != expected {
                    bail!("got {:?}, expected {expected:?}", data.line);
                }
                next += 1;
            }
            "end" if next == lines => return Ok(()),
            "end" => bail!("end after {next} of {lines} lines"),
            _ => {}
        }
    }
    bail!("stream closed after {next} of {lines} lines without end")
}
