//! Dispatch capacity without containers.
//!
//! The issue asks for a benchmark-only no-op executor mode in the runner; that mode does
//! not exist yet (see BENCHMARKS.md for the exact change proposed). Until it does, the
//! harness itself plays a runner over the real NATS protocol (`shared::protocol`): it
//! fetches offers from the pool's durable consumer, claims them on `ff.claim`, acks them and
//! reports a zero-output exit on `ff.exit`. So the figures cover control plane + NATS +
//! Postgres + S3 archive (of an empty log), and none of the runner's own code.
//!
//! * claims/s: `dispatch_runs` runs queued first, then claimed with 64 requests in flight.
//! * exit reports/s: the exits of those runs, 64 in flight.
//! * end-to-end runs/s: as many runs again, submitted (16 POSTs in flight) while the
//!   harness claims and reports them as they come.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use shared::protocol::{
    AttemptRef, ClaimReply, ClaimRequest, ExitOutcome, ExitReply, ExitReport, JobOffer, JobSpec, LogTotals,
};
use shared::subjects;
use tokio::sync::Semaphore;

use crate::api::Api;
use crate::report::Row;
use crate::stats::Summary;

use super::Ctx;

const SCENARIO: &str = "Dispatch capacity (harness as no-op runner)";
const RUNNER_ID: &str = "bench-noop-runner";
const IN_FLIGHT: usize = 64;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const PHASE_TIMEOUT: Duration = Duration::from_secs(300);

pub async fn run(ctx: &mut Ctx) -> anyhow::Result<Vec<Row>> {
    ctx.deployment.stop_runner();
    let n = ctx.profile.dispatch_runs;
    let nats = async_nats::connect(&ctx.deployment.nats_url).await.context("connecting to the bench NATS")?;
    let js = jetstream::new(nats.clone());
    let noop = NoopRunner { nats, consumer: pool_consumer(&js).await? };
    let api = ctx.api().clone();

    let started = Instant::now();
    submit(&api, n).await?;
    let submit_rate = n as f64 / started.elapsed().as_secs_f64();

    let started = Instant::now();
    let jobs = noop.claim(n).await?;
    let claim_rate = n as f64 / started.elapsed().as_secs_f64();

    let started = Instant::now();
    let rejected = noop.report_exits(jobs).await?;
    let exit_rate = n as f64 / started.elapsed().as_secs_f64();

    let started = Instant::now();
    let submitting = tokio::spawn(async move { submit(&api, n).await });
    let jobs = noop.claim(n).await?;
    let rejected_e2e = noop.report_exits(jobs).await?;
    submitting.await.context("the submit task panicked")??;
    let e2e_rate = n as f64 / started.elapsed().as_secs_f64();

    let not_success = ctx.api().list_runs("status=failed&limit=500").await?.len();
    ctx.deployment.check_alive()?;
    let note = format!("{n} runs per phase; {} exits rejected; {not_success} runs failed", rejected + rejected_e2e);
    Ok(vec![
        Row::new(SCENARIO, "claims/s (runs queued beforehand)", "claims/s")
            .value(Some(Summary::single(claim_rate)))
            .goal("≥ 5,000 claims/s", |r| r.value.as_ref().map(|v| v.median >= 5000.0))
            .note(note),
        Row::new(SCENARIO, "exit reports/s (empty log archived)", "exits/s").value(Some(Summary::single(exit_rate))),
        Row::new(SCENARIO, "submissions/s (POST …/run, 16 in flight)", "runs/s")
            .value(Some(Summary::single(submit_rate))),
        Row::new(SCENARIO, "end-to-end: submit → claim → exit accepted", "runs/s")
            .value(Some(Summary::single(e2e_rate))),
    ])
}

async fn submit(api: &Api, n: usize) -> anyhow::Result<()> {
    let results: Vec<anyhow::Result<_>> =
        futures::stream::iter(0..n).map(|_| api.create_run("trivial", &[])).buffer_unordered(16).collect().await;
    results.into_iter().try_for_each(|r| r.map(drop))
}

/// The pool's durable consumer, configured as the real runner configures it.
async fn pool_consumer(js: &jetstream::Context) -> anyhow::Result<consumer::PullConsumer> {
    let stream = js.get_stream(subjects::JOBS_STREAM).await.context("the jobs stream")?;
    let name = subjects::pool_consumer(subjects::DEFAULT_POOL);
    let config = consumer::pull::Config {
        durable_name: Some(name.clone()),
        filter_subject: subjects::job_offers_of_pool(subjects::DEFAULT_POOL),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: Duration::from_secs(30),
        max_ack_pending: 10_000,
        ..Default::default()
    };
    stream.get_or_create_consumer(&name, config).await.context("the pool consumer")
}

struct NoopRunner {
    nats: async_nats::Client,
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
                let nats = self.nats.clone();
                pending.push(tokio::spawn(async move {
                    let offer: JobOffer = serde_json::from_slice(&msg.payload).context("malformed offer")?;
                    let reply = claim(&nats, &offer).await;
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
                let nats = self.nats.clone();
                async move { exit(&nats, &job).await }
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

async fn claim(nats: &async_nats::Client, offer: &JobOffer) -> anyhow::Result<ClaimReply> {
    let request = ClaimRequest { run_id: offer.run_id, attempt: offer.attempt, runner_id: RUNNER_ID.into() };
    let reply = request_json(nats, subjects::CLAIM, &request).await?;
    serde_json::from_slice(&reply).context("malformed claim reply")
}

async fn exit(nats: &async_nats::Client, job: &JobSpec) -> anyhow::Result<ExitReply> {
    let report = ExitReport {
        attempt: AttemptRef { run_id: job.run_id, attempt: job.attempt, fencing_token: job.fencing_token },
        runner_id: RUNNER_ID.into(),
        outcome: ExitOutcome::Exited { exit_code: 0 },
        log: LogTotals::default(),
        timed_out: false,
        cancelled: false,
    };
    let reply = request_json(nats, subjects::EXIT, &report).await?;
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
