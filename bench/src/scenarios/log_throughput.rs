//! Log throughput: one run printing `log_bytes` (1 GiB in the full profile).
//!
//! Fast-Flow: POST → the run is final (polled every 50 ms; the archive is complete by then,
//! it is written before the final status); the archive (the S3
//! object, or the single node's file under LOGS_DIR) is hashed and compared with the
//! expected bytes; the runner's and control plane's (or the node's) VmRSS are sampled
//! throughout. Floor: the same container through the Docker API with its output drained
//! from the attach stream (what `docker logs -f | cat` does), also hashed. Two floors: the
//! same container as the product's (the runner's default `local` log driver), which the
//! ratio is taken against, and the engine's default driver (`json-file` unless the engine
//! is configured otherwise: what a plain `docker run` gets), shown in its own row. Both
//! are measured once per benchmark run and shared by both configurations (they are the
//! slowest floors).
//!
//! The product run is repeated `log_throughput_reps` times (median [min–max] MiB/s); the
//! peak RSS goals are checked against the largest repetition, and every repetition's
//! archive must match. The floor is not repeated: one more GiB through the engine per
//! repetition and configuration would add about a minute each to the full run.

use std::time::{Duration, Instant};

use anyhow::bail;

use crate::digest::{Digest, repeated_line};
use crate::report::Row;
use crate::rss::PeakSampler;
use crate::stats::Summary;

use super::Ctx;
use crate::deploy::Mode;
use runner_agent::docker::LogDriver;

const SCENARIO: &str = "Log throughput";
const LINE: &str = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
const MIB: f64 = 1024.0 * 1024.0;
/// Single node: the runner's 64 MiB plus the control plane's 40 MiB idle budget.
const NODE_PEAK_GOAL_MIB: f64 = 104.0;

pub async fn run(ctx: &mut Ctx) -> anyhow::Result<Vec<Row>> {
    ctx.deployment.restart_runner(4).await?;
    let bytes = ctx.profile.log_bytes;
    let reps = ctx.profile.log_throughput_reps;
    let expected = repeated_line(LINE, bytes);
    let mib = bytes as f64 / MIB;

    let (mut rates, mut runner_peaks, mut control_plane_peaks) = (vec![], vec![], vec![]);
    let mut mismatches = Vec::new();
    let mut last_archive = None;
    for _ in 0..reps {
        let one = product_run(ctx, bytes).await?;
        rates.push(mib / one.elapsed.as_secs_f64());
        runner_peaks.push(one.runner_peak);
        control_plane_peaks.push(one.control_plane_peak);
        if one.archive != expected {
            mismatches.push(format!(
                "run {}: {} bytes sha256 {}…",
                one.run_id,
                one.archive.len,
                short(&one.archive.sha256)
            ));
        }
        last_archive = Some(one.archive);
    }

    let floors = match ctx.log_floor {
        Some(floors) if floors.bytes == bytes => floors,
        _ => {
            let floors = Floors {
                bytes,
                same_container: floor_run(ctx, LogDriver::Local, bytes, &expected).await?,
                engine_default: floor_run(ctx, LogDriver::EngineDefault, bytes, &expected).await?,
            };
            ctx.log_floor = Some(floors);
            floors
        }
    };
    let floor_rate = mib / floors.same_container.as_secs_f64();
    let engine_default_rate = mib / floors.engine_default.as_secs_f64();
    let size = format!("{mib:.0} MiB");
    // A budget holds only if every repetition stayed within it.
    let max_within = |limit: f64| move |r: &Row| r.value.as_ref().map(|v| v.max <= limit);
    let mut rows = vec![
        Row::new(SCENARIO, &format!("{size}, trigger → archived & final"), "MiB/s")
            .value(Summary::of(&rates))
            .floor(Some(Summary::single(floor_rate)))
            .goal("≥ 100 MiB/s", |r| r.value.as_ref().map(|v| v.median >= 100.0))
            .note(format!(
                "{size} per repetition; floor: the same container (`local` log driver), measured once per benchmark run"
            )),
        Row::new(SCENARIO, &format!("{size}, floor with the engine's default log driver"), "MiB/s")
            .value(Some(Summary::single(engine_default_rate)))
            .note("a plain `docker run` (json-file unless the engine is configured otherwise); for comparison"),
    ];
    if ctx.deployment.mode == Mode::SingleNode {
        rows.push(
            Row::new(SCENARIO, "node (control plane + embedded runner) peak RSS", "MiB")
                .value(Summary::of(&control_plane_peaks))
                .goal("≤ 104 MiB (64 + 40)", max_within(NODE_PEAK_GOAL_MIB))
                .note("goal checked against the largest repetition"),
        );
    } else {
        rows.push(
            Row::new(SCENARIO, "runner peak RSS", "MiB")
                .value(Summary::of(&runner_peaks))
                .goal("≤ 64 MiB", max_within(64.0))
                .note("goal checked against the largest repetition"),
        );
        rows.push(Row::new(SCENARIO, "control plane peak RSS", "MiB").value(Summary::of(&control_plane_peaks)));
    }
    let archive_note = match (mismatches.is_empty(), &last_archive) {
        (true, Some(archive)) => format!(
            "{reps} of {reps} archives equal: {} bytes sha256 {}…; expected {}…",
            archive.len,
            short(&archive.sha256),
            short(&expected.sha256)
        ),
        _ => format!(
            "{} of {reps} archives differ (expected {} bytes sha256 {}…): {}",
            mismatches.len(),
            expected.len,
            short(&expected.sha256),
            mismatches.join("; ")
        ),
    };
    rows.push(
        Row::new(SCENARIO, "archive sha256 = printed bytes", "")
            .goal("equal", |_| Some(mismatches.is_empty()))
            .note(archive_note),
    );
    Ok(rows)
}

/// One product repetition: the run, its peaks and its archive's digest.
struct ProductRun {
    run_id: String,
    elapsed: Duration,
    runner_peak: f64,
    control_plane_peak: f64,
    archive: Digest,
}

async fn product_run(ctx: &mut Ctx, bytes: u64) -> anyhow::Result<ProductRun> {
    let runner_rss = PeakSampler::start(ctx.deployment.runner_pid());
    let control_plane_rss = PeakSampler::start(ctx.deployment.control_plane_pid());
    let started = Instant::now();
    let run = ctx.api().create_run("bigprint", &[("BYTES", bytes.to_string())]).await?;
    // Polled, not followed over SSE: a follower would have every line replayed to it as a
    // JSON event (17 million for 1 GiB), and encoding and parsing those would take the CPU
    // from the path being measured. The SSE path has its own scenarios.
    let done = ctx.api().wait_final(&run.id, Duration::from_millis(50)).await?;
    let elapsed = started.elapsed();
    let runner_peak = runner_rss.stop();
    let control_plane_peak = control_plane_rss.stop();
    ctx.deployment.check_alive()?;
    done.expect_success()?;
    let archive = ctx.deployment.archive_digest(&run.id, 1).await?;
    Ok(ProductRun { run_id: run.id, elapsed, runner_peak, control_plane_peak, archive })
}

/// The first 12 hex digits of a digest (`get`: never panics on a short string).
fn short(sha256: &str) -> &str {
    sha256.get(..12).unwrap_or(sha256)
}

/// How long the floor containers took to print `bytes`.
#[derive(Clone, Copy, Debug)]
pub struct Floors {
    bytes: u64,
    /// The same container as the product's, with the runner's default log driver.
    same_container: Duration,
    /// With the engine's configured default log driver.
    engine_default: Duration,
}

/// The same bytes printed by a container driven through the Docker API, drained and hashed.
async fn floor_run(ctx: &Ctx, log_driver: LogDriver, bytes: u64, expected: &Digest) -> anyhow::Result<Duration> {
    let floor = ctx
        .floor
        .run_logging_to(
            log_driver,
            &["sh", "-c", &format!("yes {LINE} | head -c \"$BYTES\"")],
            &[("BYTES", bytes.to_string())],
        )
        .await?;
    if floor.output != *expected {
        bail!("the floor container printed {:?}, expected {:?}", floor.output, expected);
    }
    Ok(floor.elapsed)
}
