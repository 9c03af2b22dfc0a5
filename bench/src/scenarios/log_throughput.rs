//! Log throughput: one run printing `log_bytes` (1 GiB in the full profile).
//!
//! Fast-Flow: POST → `end` event (the archive is complete by then); the archive in S3 is
//! hashed and compared with the expected bytes; the runner's and control plane's VmRSS
//! are sampled throughout. Floor: the same container through the Docker API with its
//! output drained from the attach stream (what `docker logs -f | cat` does), also hashed.

use std::time::Instant;

use anyhow::bail;

use crate::digest::repeated_line;
use crate::report::Row;
use crate::rss::PeakSampler;
use crate::stats::Summary;

use super::Ctx;
use crate::deploy::s3;

const SCENARIO: &str = "Log throughput";
const LINE: &str = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
const MIB: f64 = 1024.0 * 1024.0;

pub async fn run(ctx: &mut Ctx) -> anyhow::Result<Vec<Row>> {
    ctx.deployment.restart_runner(4).await?;
    let bytes = ctx.profile.log_bytes;
    let expected = repeated_line(LINE, bytes);
    let mib = bytes as f64 / MIB;

    let runner_rss = PeakSampler::start(ctx.deployment.runner_pid());
    let control_plane_rss = PeakSampler::start(ctx.deployment.control_plane_pid());
    let started = Instant::now();
    let run = ctx.api().create_run("bigprint", &[("BYTES", bytes.to_string())]).await?;
    let done = ctx.api().wait_end(&run.id).await?;
    let elapsed = started.elapsed();
    let runner_peak = runner_rss.stop();
    let control_plane_peak = control_plane_rss.stop();
    ctx.deployment.check_alive()?;
    done.expect_success()?;

    let archive =
        s3::digest(&s3::client(&ctx.deployment.dev), &ctx.deployment.bucket, &format!("runs/{}/1.log", run.id)).await?;
    let archive_ok = archive == expected;

    let floor = ctx
        .floor
        .run(&["sh", "-c", &format!("yes {LINE} | head -c \"$BYTES\"")], &[("BYTES", bytes.to_string())])
        .await?;
    if floor.output != expected {
        bail!("the floor container printed {:?}, expected {:?}", floor.output, expected);
    }
    let product_rate = mib / elapsed.as_secs_f64();
    let floor_rate = mib / floor.elapsed.as_secs_f64();
    let size = format!("{mib:.0} MiB");
    Ok(vec![
        Row::new(SCENARIO, &format!("{size}, trigger → archived & final"), "MiB/s")
            .value(Some(Summary::single(product_rate)))
            .floor(Some(Summary::single(floor_rate)))
            .goal("≥ 100 MiB/s", |r| r.value.as_ref().map(|v| v.median >= 100.0)),
        Row::new(SCENARIO, "runner peak RSS", "MiB")
            .value(Some(Summary::single(runner_peak)))
            .goal("≤ 64 MiB", |r| r.value.as_ref().map(|v| v.median <= 64.0)),
        Row::new(SCENARIO, "control plane peak RSS", "MiB").value(Some(Summary::single(control_plane_peak))),
        Row::new(SCENARIO, "archive sha256 = printed bytes", "").goal("equal", |_| Some(archive_ok)).note(format!(
            "archive {} bytes sha256 {}…; expected {}…",
            archive.len,
            &archive.sha256[..12],
            &expected.sha256[..12]
        )),
    ])
}
