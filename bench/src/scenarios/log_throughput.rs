//! Log throughput: one run printing `log_bytes` (1 GiB in the full profile).
//!
//! Fast-Flow: POST → the run is final (polled every 50 ms; the archive is complete by then,
//! it is written before the final status); the archive (the S3
//! object, or the single node's file under LOGS_DIR) is hashed and compared with the
//! expected bytes; the runner's and control plane's (or the node's) VmRSS are sampled
//! throughout. Floor: the same container through the Docker API with its output drained
//! from the attach stream (what `docker logs -f | cat` does), also hashed; measured once
//! per benchmark run and shared by both configurations (it is the slowest floor).

use std::time::{Duration, Instant};

use anyhow::bail;

use crate::digest::repeated_line;
use crate::report::Row;
use crate::rss::PeakSampler;
use crate::stats::Summary;

use super::Ctx;
use crate::deploy::Mode;

const SCENARIO: &str = "Log throughput";
const LINE: &str = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
const MIB: f64 = 1024.0 * 1024.0;
/// Single node: the runner's 64 MiB plus the control plane's 40 MiB idle budget.
const NODE_PEAK_GOAL_MIB: f64 = 104.0;

pub async fn run(ctx: &mut Ctx) -> anyhow::Result<Vec<Row>> {
    ctx.deployment.restart_runner(4).await?;
    let bytes = ctx.profile.log_bytes;
    let expected = repeated_line(LINE, bytes);
    let mib = bytes as f64 / MIB;

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
    let archive_ok = archive == expected;

    let floor_elapsed = match ctx.log_floor {
        Some((floor_bytes, elapsed)) if floor_bytes == bytes => elapsed,
        _ => {
            let elapsed = floor_run(ctx, bytes, &expected).await?;
            ctx.log_floor = Some((bytes, elapsed));
            elapsed
        }
    };
    let product_rate = mib / elapsed.as_secs_f64();
    let floor_rate = mib / floor_elapsed.as_secs_f64();
    let size = format!("{mib:.0} MiB");
    let mut rows = vec![
        Row::new(SCENARIO, &format!("{size}, trigger → archived & final"), "MiB/s")
            .value(Some(Summary::single(product_rate)))
            .floor(Some(Summary::single(floor_rate)))
            .goal("≥ 100 MiB/s", |r| r.value.as_ref().map(|v| v.median >= 100.0)),
    ];
    if ctx.deployment.mode == Mode::SingleNode {
        rows.push(
            Row::new(SCENARIO, "node (control plane + embedded runner) peak RSS", "MiB")
                .value(Some(Summary::single(control_plane_peak)))
                .goal("≤ 104 MiB (64 + 40)", |r| r.value.as_ref().map(|v| v.median <= NODE_PEAK_GOAL_MIB)),
        );
    } else {
        rows.push(
            Row::new(SCENARIO, "runner peak RSS", "MiB")
                .value(Some(Summary::single(runner_peak)))
                .goal("≤ 64 MiB", |r| r.value.as_ref().map(|v| v.median <= 64.0)),
        );
        rows.push(Row::new(SCENARIO, "control plane peak RSS", "MiB").value(Some(Summary::single(control_plane_peak))));
    }
    rows.push(Row::new(SCENARIO, "archive sha256 = printed bytes", "").goal("equal", |_| Some(archive_ok)).note(
        format!(
            "archive {} bytes sha256 {}…; expected {}…",
            archive.len,
            &archive.sha256[..12],
            &expected.sha256[..12]
        ),
    ));
    Ok(rows)
}

/// The same bytes printed by a container driven through the Docker API, drained and hashed.
async fn floor_run(ctx: &Ctx, bytes: u64, expected: &crate::digest::Digest) -> anyhow::Result<Duration> {
    let floor = ctx
        .floor
        .run(&["sh", "-c", &format!("yes {LINE} | head -c \"$BYTES\"")], &[("BYTES", bytes.to_string())])
        .await?;
    if floor.output != *expected {
        bail!("the floor container printed {:?}, expected {:?}", floor.output, expected);
    }
    Ok(floor.elapsed)
}
