//! Dispatch capacity without containers: the real product path with the runner in the
//! benchmark-only no-op executor mode (`RUNNER_BENCH_NOOP_EXECUTOR=1`, `RUNNER_CONCURRENCY`
//! = the runs of a phase, 256–10,000): offer → claim → one system log line through the log pump → exit report → archive →
//! final status, with no Docker at all.
//!
//! * Distributed (`runner-agent` process): `dispatch_runs` runs are submitted while no
//!   runner runs, then a no-op runner is started. claims/s = runs over the spread of their
//!   `started_at` (stamped by the control plane at the claim); the drain rate is runs over
//!   the time from starting the runner to the last run final.
//! * Both: with the no-op runner up, `dispatch_runs` more runs are submitted (64 POSTs in
//!   flight); end-to-end runs/s = runs over first POST → last run final; claims/s from the
//!   `started_at` spread again (here claims compete with the submissions for the CPU and,
//!   on the single node, for SQLite's one writer). The single node cannot queue runs with
//!   its runner stopped (its offers live in the process, and a restart re-offers at most
//!   500 queued runs per sweep), so it has only this phase.
//! * Distributed, extra: the harness itself plays the runner over the NATS protocol
//!   (`shared::protocol`), enrolled as a runner of its own with the deployment's
//!   registration token and connected with its credentials, as `runner-agent` is: fetch
//!   offers from the pool's consumer, claim on `ff.r.<runner>.claim` (64 in flight), ack,
//!   report a zero-line exit on `ff.r.<runner>.exit`. That is the control plane + NATS +
//!   Postgres + S3 without the runner's claim loop.
//!
//! Each repetition (`dispatch_reps`) runs every phase once, in the order above, so noise
//! hits all of them; the rows show median [min–max] over the repetitions.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use shared::protocol::{
    AttemptRef, ClaimReply, ClaimRequest, ExitOutcome, ExitReply, ExitReport, JobOffer, JobSpec, LogTotals,
};
use shared::subjects::{self, RunnerOp, Subjects};
use tokio::sync::Semaphore;

use crate::api::{Api, Run};
use crate::deploy::{HarnessRunner, Mode, RunnerSettings};
use crate::report::Row;
use crate::stats::Summary;

use super::{Ctx, QueuedPoll, wait_idle};

const SCENARIO: &str = "Dispatch capacity (no-op executor)";
const HARNESS_SCENARIO: &str = "Dispatch capacity (harness as no-op runner)";
const PIPELINE: &str = "dispatch";
/// No-op slots: at least one per run of a phase (the runner accepts up to 10,000 in no-op
/// mode), so the claim rate is measured apart from the exit path.
const MIN_NOOP_SLOTS: usize = 256;
const MAX_NOOP_SLOTS: usize = 10_000;
const SUBMIT_IN_FLIGHT: usize = 64;
const IN_FLIGHT: usize = 64;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const PHASE_TIMEOUT: Duration = Duration::from_secs(300);
const GOAL: f64 = 5000.0;

pub async fn run(ctx: &mut Ctx) -> anyhow::Result<Vec<Row>> {
    let n = ctx.profile.dispatch_runs;
    let reps = ctx.profile.dispatch_reps;
    // The no-op runner: RUNNER_CONCURRENCY = one slot per run of a phase, RUNNER_BENCH_NOOP_EXECUTOR=1.
    let noop = RunnerSettings { concurrency: n.clamp(MIN_NOOP_SLOTS, MAX_NOOP_SLOTS), noop: true };
    let distributed = ctx.deployment.mode == Mode::Distributed;
    let (mut queued, mut live, mut harness) = (Queued::default(), Live::default(), Harness::default());
    if !distributed {
        ctx.deployment.restart_runner_with(noop).await?;
    }
    for _ in 0..reps {
        if distributed {
            queued_phase(ctx, n, noop, &mut queued).await?;
        }
        live_phase(ctx, n, &mut live).await?;
        if distributed {
            harness_as_runner(ctx, n, &mut harness).await?;
        }
    }

    let mut rows = Vec::new();
    let goal = |row: Row| row.goal("≥ 5,000 claims/s", |r| r.value.as_ref().map(|v| v.median >= GOAL));
    if distributed {
        let note = format!("{n} runs per repetition, queued before the runner started");
        rows.push(
            goal(
                Row::new(SCENARIO, "claims/s, runs queued beforehand (started_at spread)", "claims/s")
                    .value(Summary::of(&queued.claims)),
            )
            .note(note.clone()),
        );
        rows.push(
            Row::new(SCENARIO, "runs final/s, runs queued beforehand (finished_at spread)", "runs/s")
                .value(Summary::of(&queued.finals)),
        );
        rows.push(
            Row::new(SCENARIO, "runs final/s, runs queued beforehand (runner start → last final)", "runs/s")
                .value(Summary::of(&queued.drain))
                .note(format!("{note}; {} runs did not succeed", queued.not_success)),
        );
        rows.push(
            Row::new(SCENARIO, "submissions/s without a runner (POST …/run, 64 in flight)", "runs/s")
                .value(Summary::of(&queued.submit)),
        );
    }
    let claims = Row::new(SCENARIO, "claims/s while submitting (started_at spread)", "claims/s")
        .value(Summary::of(&live.claims));
    // The goal row is the first phase measured: queued beforehand where there is one.
    rows.push(if distributed { claims } else { goal(claims) });
    rows.push(
        Row::new(SCENARIO, "end-to-end runs/s: submit → claim → no-op → exit → final", "runs/s")
            .value(Summary::of(&live.e2e))
            .note(format!("{n} runs per repetition; {} runs did not succeed", live.not_success)),
    );
    rows.push(
        Row::new(SCENARIO, "submissions/s while the runner claims (64 in flight)", "runs/s")
            .value(Summary::of(&live.submit)),
    );
    if distributed {
        rows.push(
            Row::new(HARNESS_SCENARIO, "claims/s (runs queued beforehand, 64 claims in flight)", "claims/s")
                .value(Summary::of(&harness.claims))
                .note(format!("{n} runs per repetition; {} exits rejected", harness.rejected)),
        );
        rows.push(
            Row::new(HARNESS_SCENARIO, "exit reports/s (one empty log archived each, 64 in flight)", "exits/s")
                .value(Summary::of(&harness.exits)),
        );
    }
    Ok(rows)
}

/// Per-repetition figures of the runs-queued-beforehand phase (distributed only).
#[derive(Default)]
struct Queued {
    claims: Vec<f64>,
    finals: Vec<f64>,
    drain: Vec<f64>,
    submit: Vec<f64>,
    not_success: usize,
}

/// Per-repetition figures of the submit-while-the-runner-claims phase.
#[derive(Default)]
struct Live {
    claims: Vec<f64>,
    e2e: Vec<f64>,
    submit: Vec<f64>,
    not_success: usize,
}

/// Per-repetition figures of the harness playing the runner (distributed only).
#[derive(Default)]
struct Harness {
    claims: Vec<f64>,
    exits: Vec<f64>,
    rejected: usize,
}

/// `n` runs submitted with no runner, then a no-op runner started and the backlog drained.
async fn queued_phase(ctx: &mut Ctx, n: usize, noop: RunnerSettings, out: &mut Queued) -> anyhow::Result<()> {
    ctx.deployment.stop_runner();
    let started = Instant::now();
    let ids = submit(ctx.api(), n).await?;
    out.submit.push(n as f64 / started.elapsed().as_secs_f64());
    let started = Instant::now();
    ctx.deployment.restart_runner_with(noop).await?;
    wait_idle(ctx.api(), started, PHASE_TIMEOUT, QueuedPoll::NoOp).await.context("the queued runs")?;
    out.drain.push(n as f64 / started.elapsed().as_secs_f64());
    let runs = runs_of(ctx.api(), &ids).await?;
    out.not_success += runs.iter().filter(|r| r.status != "success").count();
    out.claims.extend(spread_rate(runs.iter().map(|r| r.started_at)));
    out.finals.extend(spread_rate(runs.iter().map(|r| r.finished_at)));
    Ok(())
}

/// `n` runs submitted (64 in flight) while the no-op runner is up.
async fn live_phase(ctx: &mut Ctx, n: usize, out: &mut Live) -> anyhow::Result<()> {
    let started = Instant::now();
    let ids = submit(ctx.api(), n).await?;
    out.submit.push(n as f64 / started.elapsed().as_secs_f64());
    wait_idle(ctx.api(), started, PHASE_TIMEOUT, QueuedPoll::NoOp).await.context("the end-to-end runs")?;
    out.e2e.push(n as f64 / started.elapsed().as_secs_f64());
    let runs = runs_of(ctx.api(), &ids).await?;
    out.not_success += runs.iter().filter(|r| r.status != "success").count();
    out.claims.extend(spread_rate(runs.iter().map(|r| r.started_at)));
    ctx.deployment.check_alive()
}

/// Runs over the time between the first and the last of their timestamps.
fn spread_rate(times: impl Iterator<Item = Option<chrono::DateTime<chrono::Utc>>>) -> Option<f64> {
    let times: Vec<_> = times.flatten().collect();
    let (first, last) = (times.iter().min()?, times.iter().max()?);
    let seconds = (*last - *first).num_microseconds()? as f64 / 1e6;
    (times.len() > 1 && seconds > 0.0).then(|| (times.len() - 1) as f64 / seconds)
}

/// The runs with these ids (all of them must be found).
async fn runs_of(api: &Api, ids: &[String]) -> anyhow::Result<Vec<Run>> {
    let wanted: HashSet<&str> = ids.iter().map(String::as_str).collect();
    let runs: Vec<Run> = api
        .list_all_runs(&format!("pipeline={PIPELINE}"))
        .await?
        .into_iter()
        .filter(|r| wanted.contains(r.id.as_str()))
        .collect();
    if runs.len() != ids.len() {
        bail!("listed {} of the {} runs submitted", runs.len(), ids.len());
    }
    Ok(runs)
}

async fn submit(api: &Api, n: usize) -> anyhow::Result<Vec<String>> {
    let results: Vec<anyhow::Result<Run>> = futures::stream::iter(0..n)
        .map(|_| api.create_run(PIPELINE, &[]))
        .buffer_unordered(SUBMIT_IN_FLIGHT)
        .collect()
        .await;
    results.into_iter().map(|r| r.map(|run| run.id)).collect()
}

/// The harness plays the runner (control plane + NATS + Postgres + S3 only), enrolled as
/// a new runner of the default pool. Leaves the runner stopped.
async fn harness_as_runner(ctx: &mut Ctx, n: usize, out: &mut Harness) -> anyhow::Result<()> {
    ctx.deployment.stop_runner();
    let runner = ctx.deployment.enroll_harness_runner().await?;
    let js = jetstream::new(runner.client.clone());
    let consumer = pool_consumer(&js, &runner.subjects, &runner.pool).await?;
    let noop = NoopRunner { link: Arc::new(Link::from(runner)), consumer };
    let api = ctx.api().clone();

    submit(&api, n).await?;
    let started = Instant::now();
    let jobs = noop.claim(n).await?;
    out.claims.push(n as f64 / started.elapsed().as_secs_f64());

    let started = Instant::now();
    out.rejected += noop.report_exits(jobs).await?;
    out.exits.push(n as f64 / started.elapsed().as_secs_f64());
    // Offers of this pool stay with the durable consumer: the next runner reads them.
    let _ = noop.link.nats.clone().drain().await;
    ctx.deployment.check_alive()
}

/// The pool's durable consumer, configured as the real runner configures it
/// (runner-agent's `link/nats.rs`; the NATS server lets a runner create exactly this one).
async fn pool_consumer(
    js: &jetstream::Context,
    subjects: &Subjects,
    pool: &str,
) -> anyhow::Result<consumer::PullConsumer> {
    let stream = js.get_stream(subjects.jobs_stream()).await.context("the jobs stream")?;
    let name = subjects::pool_consumer(pool);
    let config = consumer::pull::Config {
        durable_name: Some(name.clone()),
        filter_subject: subjects.job_offers_of_pool(pool),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: Duration::from_secs(30),
        max_ack_pending: 10_000,
        ..Default::default()
    };
    stream.get_or_create_consumer(&name, config).await.context("the pool consumer")
}

/// The harness's NATS connection as an enrolled runner, and where its requests go.
struct Link {
    nats: async_nats::Client,
    runner_id: String,
    claim_subject: String,
    exit_subject: String,
}

impl From<HarnessRunner> for Link {
    fn from(runner: HarnessRunner) -> Self {
        Self {
            claim_subject: runner.subjects.runner_request(&runner.runner_id, RunnerOp::Claim),
            exit_subject: runner.subjects.runner_request(&runner.runner_id, RunnerOp::Exit),
            nats: runner.client,
            runner_id: runner.runner_id,
        }
    }
}

struct NoopRunner {
    link: Arc<Link>,
    consumer: consumer::PullConsumer,
}

impl NoopRunner {
    /// Fetches offers and claims them (`IN_FLIGHT` claims at once) until `n` were granted.
    async fn claim(&self, n: usize) -> anyhow::Result<Vec<JobSpec>> {
        let started = Instant::now();
        let slots = Arc::new(Semaphore::new(IN_FLIGHT));
        let mut pending = Vec::new();
        let mut offers = 0;
        while offers < n {
            if started.elapsed() > PHASE_TIMEOUT {
                bail!("only {offers} of {n} offers arrived within {PHASE_TIMEOUT:?}");
            }
            let mut batch =
                self.consumer.fetch().max_messages(n - offers).expires(Duration::from_millis(500)).messages().await?;
            while let Some(msg) = batch.next().await {
                let msg = msg.map_err(|e| anyhow::anyhow!("fetching an offer: {e}"))?;
                offers += 1;
                let permit = slots.clone().acquire_owned().await.context("semaphore closed")?;
                let link = self.link.clone();
                pending.push(tokio::spawn(async move {
                    let offer: JobOffer = serde_json::from_slice(&msg.payload).context("malformed offer")?;
                    let reply = claim(&link, &offer).await;
                    let _ = msg.ack().await;
                    drop(permit);
                    reply
                }));
            }
        }
        let mut jobs = Vec::with_capacity(n);
        for task in pending {
            match task.await.context("a claim task panicked")?? {
                ClaimReply::Granted { job } => jobs.push(job),
                ClaimReply::Refused { reason } => bail!("claim refused: {reason}"),
            }
        }
        Ok(jobs)
    }

    /// Reports a zero-output exit for every job; returns how many were rejected.
    async fn report_exits(&self, jobs: Vec<JobSpec>) -> anyhow::Result<usize> {
        let replies: Vec<anyhow::Result<ExitReply>> = futures::stream::iter(jobs)
            .map(|job| {
                let link = self.link.clone();
                async move { exit(&link, &job).await }
            })
            .buffer_unordered(IN_FLIGHT)
            .collect()
            .await;
        let mut rejected = 0;
        for reply in replies {
            match reply? {
                ExitReply::Accepted => {}
                ExitReply::Rejected { .. } => rejected += 1,
                ExitReply::RetryLater { reason } => bail!("exit report not accepted: {reason}"),
            }
        }
        Ok(rejected)
    }
}

/// One claim on the runner's own subject (the control plane takes the runner id from it,
/// not from the body).
async fn claim(link: &Link, offer: &JobOffer) -> anyhow::Result<ClaimReply> {
    let request = ClaimRequest { run_id: offer.run_id, attempt: offer.attempt, runner_id: link.runner_id.clone() };
    let reply = request_json(&link.nats, &link.claim_subject, &request).await?;
    serde_json::from_slice(&reply).context("malformed claim reply")
}

/// A zero-output exit report, from the runner holding the attempt.
async fn exit(link: &Link, job: &JobSpec) -> anyhow::Result<ExitReply> {
    let report = ExitReport {
        attempt: AttemptRef { run_id: job.run_id, attempt: job.attempt, fencing_token: job.fencing_token },
        runner_id: link.runner_id.clone(),
        outcome: ExitOutcome::Exited { exit_code: 0 },
        log: LogTotals::default(),
        timed_out: false,
        cancelled: false,
    };
    let reply = request_json(&link.nats, &link.exit_subject, &report).await?;
    serde_json::from_slice(&reply).context("malformed exit reply")
}

async fn request_json<T: serde::Serialize>(
    nats: &async_nats::Client,
    subject: &str,
    body: &T,
) -> anyhow::Result<bytes::Bytes> {
    let payload = serde_json::to_vec(body)?;
    let request = async_nats::Request::new().payload(payload.into()).timeout(Some(REQUEST_TIMEOUT));
    let reply =
        nats.send_request(subject.to_string(), request).await.with_context(|| format!("request on {subject}"))?;
    Ok(reply.payload)
}
