//! The claim loop: with a free slot, take one offer for the runner's pool, ask
//! the control plane to claim it, settle the offer either way, and execute
//! what was granted.

use crate::execution::Executor;
use shared::protocol::{AttemptRef, ClaimReply, ClaimRequest};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub async fn run(executor: Executor, slots: Arc<Semaphore>, stop_claiming: CancellationToken) {
    let pool = executor.config.pool.clone();
    loop {
        let permit = tokio::select! {
            _ = stop_claiming.cancelled() => return,
            permit = slots.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let offer = tokio::select! {
            _ = stop_claiming.cancelled() => return,
            offer = executor.link.next_offer(&pool) => offer,
        };
        let offer = match offer {
            Ok(Some(offer)) => offer,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "no offers available; retrying");
                drop(permit);
                pause(&stop_claiming, Duration::from_secs(1)).await;
                continue;
            }
        };
        let job = offer.job;
        if executor.active.contains(job.run_id) {
            // A redelivery of an attempt this runner already executes.
            offer.handle.ack().await;
            continue;
        }
        let request =
            ClaimRequest { run_id: job.run_id, attempt: job.attempt, runner_id: executor.config.runner_id.clone() };
        match executor.link.claim(&request).await {
            Ok(ClaimReply::Granted { job }) => {
                offer.handle.ack().await;
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
                tracing::debug!(run_id = %job.run_id, %reason, "claim refused");
                offer.handle.ack().await;
            }
            Err(e) => {
                // Nobody decided: let the offer come back (to us or another runner).
                tracing::warn!(run_id = %job.run_id, error = %e, "claim request failed");
                offer.handle.retry_later(Duration::from_secs(1)).await;
            }
        }
    }
}

async fn pause(cancel: &CancellationToken, d: Duration) {
    tokio::select! {
        _ = cancel.cancelled() => {}
        _ = tokio::time::sleep(d) => {}
    }
}
