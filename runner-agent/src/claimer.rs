//! The claim loop: with free slots, take as many offers for the runner's pool
//! as there are free slots (at most [`MAX_CLAIM_BATCH`]), ask the control plane
//! to claim them in one exchange, settle every offer either way, and execute
//! what was granted.

use crate::execution::Executor;
use crate::link::Offer;
use shared::protocol::{AttemptRef, ClaimReply, JobOffer, JobSpec};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Offers claimed in one exchange at most. A runner with many free slots (a backlog)
/// claims about twice as many a second with 256 as with 64 (4,500 against 2,300 on the
/// benchmark machine; BENCHMARKS.md, round 7): each exchange costs a fetch, a
/// request/reply round trip and a transaction nearly whatever its size. A reply that
/// would not fit in a NATS message is cut short by the control plane, and the offers it
/// did not decide come back at once.
pub const MAX_CLAIM_BATCH: usize = 256;

pub async fn run(executor: Executor, slots: Arc<Semaphore>, stop_claiming: CancellationToken) {
    let pool = executor.config.pool.clone();
    loop {
        let first = tokio::select! {
            _ = stop_claiming.cancelled() => return,
            permit = slots.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        // One permit per offer asked for, so every granted offer has its slot.
        let mut permits = vec![first];
        while permits.len() < MAX_CLAIM_BATCH {
            match slots.clone().try_acquire_owned() {
                Ok(p) => permits.push(p),
                Err(_) => break,
            }
        }
        let offers = tokio::select! {
            _ = stop_claiming.cancelled() => return,
            offers = executor.link.next_offers(&pool, permits.len()) => offers,
        };
        let offers = match offers {
            Ok(offers) => offers,
            Err(e) => {
                tracing::warn!(error = %e, "no offers available; retrying");
                drop(permits);
                pause(&stop_claiming, Duration::from_secs(1)).await;
                continue;
            }
        };
        let mut fresh = Vec::with_capacity(offers.len());
        for offer in offers {
            if executor.active.contains(offer.job.run_id) {
                // A redelivery of an attempt this runner already executes.
                offer.handle.ack().await;
            } else {
                fresh.push(offer);
            }
        }
        if !fresh.is_empty() {
            claim(&executor, fresh, permits).await;
        }
    }
}

/// Claims `offers` (one permit each) and starts what was granted.
async fn claim(executor: &Executor, offers: Vec<Offer>, mut permits: Vec<OwnedSemaphorePermit>) {
    let jobs: Vec<JobOffer> = offers.iter().map(|o| o.job.clone()).collect();
    let replies = match executor.link.claim_batch(&executor.config.runner_id, &jobs).await {
        Ok(replies) => replies,
        Err(e) => {
            // Nobody decided: let the offers come back (to us or another runner).
            tracing::warn!(offers = offers.len(), error = %e, "claim request failed");
            for offer in offers {
                offer.handle.retry_later(Duration::from_secs(1)).await;
            }
            return;
        }
    };
    let mut offers = offers.into_iter();
    for reply in replies {
        let Some(offer) = offers.next() else { break };
        match reply {
            ClaimReply::Granted { job } => {
                offer.handle.ack().await;
                match permits.pop() {
                    Some(permit) => start(executor, job, permit),
                    // Cannot happen (one permit per offer); the lease expiry retries the run.
                    None => tracing::error!(run_id = %job.run_id, "granted a claim without a free slot"),
                }
            }
            ClaimReply::Refused { reason } => {
                tracing::debug!(run_id = %offer.job.run_id, %reason, "claim refused");
                offer.handle.ack().await;
            }
        }
    }
    // Not decided (the reply would have been too large): offered again at once.
    for offer in offers {
        offer.handle.retry_later(Duration::ZERO).await;
    }
}

fn start(executor: &Executor, job: JobSpec, permit: OwnedSemaphorePermit) {
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

async fn pause(cancel: &CancellationToken, d: Duration) {
    tokio::select! {
        _ = cancel.cancelled() => {}
        _ = tokio::time::sleep(d) => {}
    }
}
