//! The claim loop: with a free slot, fetch one offer from the pool's durable
//! pull consumer, ask the control plane to claim it, ack the offer either way,
//! and execute what was granted.

use crate::execution::Executor;
use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use shared::protocol::{AttemptRef, ClaimReply, ClaimRequest, JobOffer};
use shared::subjects;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

const FETCH_EXPIRY: Duration = Duration::from_secs(5);
const CLAIM_TIMEOUT: Duration = Duration::from_secs(10);
/// Offers stay invisible to other runners this long while one decides.
const OFFER_ACK_WAIT: Duration = Duration::from_secs(30);

pub async fn run(executor: Executor, slots: Arc<Semaphore>, stop_claiming: CancellationToken) {
    let pool = executor.config.pool.clone();
    let mut consumer = None;
    loop {
        let permit = tokio::select! {
            _ = stop_claiming.cancelled() => return,
            permit = slots.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let pull = match &consumer {
            Some(c) => c,
            None => match pool_consumer(&executor.js, &pool).await {
                Ok(c) => consumer.insert(c),
                Err(e) => {
                    tracing::warn!(error = %e, "job stream not available yet; retrying");
                    drop(permit);
                    pause(&stop_claiming, Duration::from_secs(1)).await;
                    continue;
                }
            },
        };
        let offer = tokio::select! {
            _ = stop_claiming.cancelled() => return,
            offer = next_offer(pull) => offer,
        };
        let msg = match offer {
            Ok(Some(msg)) => msg,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "fetching offers failed; reconnecting to the job stream");
                consumer = None;
                pause(&stop_claiming, Duration::from_secs(1)).await;
                continue;
            }
        };
        let Ok(offer) = serde_json::from_slice::<JobOffer>(&msg.payload) else {
            tracing::warn!(subject = %msg.subject, "dropping a malformed offer");
            let _ = msg.ack_with(jetstream::AckKind::Term).await;
            continue;
        };
        if executor.active.contains(offer.run_id) {
            // A redelivery of an attempt this runner already executes.
            let _ = msg.ack().await;
            continue;
        }
        match claim(&executor, &offer).await {
            Ok(ClaimReply::Granted { job }) => {
                let _ = msg.ack().await;
                let at = AttemptRef { run_id: job.run_id, attempt: job.attempt, fencing_token: job.fencing_token };
                let stop = executor.active.insert(at);
                let span = tracing::info_span!("run", run_id = %job.run_id, attempt = job.attempt, pipeline = %job.pipeline_name);
                let executor = executor.clone();
                tokio::spawn(
                    async move {
                        executor.execute(job, stop).await;
                        drop(permit);
                    }
                    .instrument(span),
                );
            }
            Ok(ClaimReply::Refused { reason }) => {
                tracing::debug!(run_id = %offer.run_id, %reason, "claim refused");
                let _ = msg.ack().await;
            }
            Err(e) => {
                // Nobody decided: let the offer come back (to us or another runner).
                tracing::warn!(run_id = %offer.run_id, error = %e, "claim request failed");
                let _ = msg.ack_with(jetstream::AckKind::Nak(Some(Duration::from_secs(1)))).await;
            }
        }
    }
}

async fn pool_consumer(js: &jetstream::Context, pool: &str) -> Result<consumer::PullConsumer, async_nats::Error> {
    let stream = js.get_stream(subjects::JOBS_STREAM).await?;
    let name = subjects::pool_consumer(pool);
    let consumer = stream
        .get_or_create_consumer(
            &name,
            consumer::pull::Config {
                durable_name: Some(name.clone()),
                filter_subject: subjects::job_offers_of_pool(pool),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: OFFER_ACK_WAIT,
                max_ack_pending: 10_000,
                ..Default::default()
            },
        )
        .await?;
    Ok(consumer)
}

/// One offer, fetched only now that a slot is free (no prefetching, so no
/// AckWait timer runs on an offer this runner cannot take yet).
async fn next_offer(consumer: &consumer::PullConsumer) -> Result<Option<jetstream::Message>, async_nats::Error> {
    let mut batch = consumer.batch().max_messages(1).expires(FETCH_EXPIRY).messages().await?;
    match batch.next().await {
        Some(Ok(msg)) => Ok(Some(msg)),
        Some(Err(e)) => Err(e),
        None => Ok(None),
    }
}

async fn claim(executor: &Executor, offer: &JobOffer) -> Result<ClaimReply, async_nats::Error> {
    let request =
        ClaimRequest { run_id: offer.run_id, attempt: offer.attempt, runner_id: executor.config.runner_id.clone() };
    let request = async_nats::Request::new().payload(serde_json::to_vec(&request)?.into()).timeout(Some(CLAIM_TIMEOUT));
    let reply = executor.nats.send_request(subjects::CLAIM, request).await?;
    Ok(serde_json::from_slice(&reply.payload)?)
}

async fn pause(cancel: &CancellationToken, d: Duration) {
    tokio::select! {
        _ = cancel.cancelled() => {}
        _ = tokio::time::sleep(d) => {}
    }
}
