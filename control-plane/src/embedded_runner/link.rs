//! The embedded runner's link to the control plane: the same claim, heartbeat
//! and exit handling the NATS runner API (`runner_api`) runs, called directly,
//! with offers, cancel notices and live logs going through the in-process bus.

use crate::bus::local::LocalBus;
use crate::context::Context;
use crate::runs;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use runner_agent::link::{ControlLink, LinkError, LogAck, Offer, OfferHandle};
use shared::protocol::{
    AttemptRef, CancelNotice, ClaimReply, CodeBundleRef, ExitReply, ExitReport, Heartbeat, HeartbeatReply, JobOffer,
};
use std::time::Duration;

/// Largest log batch the embedded runner sends (the same as NATS' usual limit).
const MAX_LOG_PAYLOAD: usize = 8 * 1024 * 1024;

/// The embedded runner's link: the same claim, heartbeat and exit handling the
/// NATS runner API runs, called directly.
pub struct LocalLink {
    ctx: Context,
    bus: LocalBus,
}

impl LocalLink {
    pub fn new(ctx: Context, bus: LocalBus) -> LocalLink {
        LocalLink { ctx, bus }
    }
}

struct LocalOffer {
    bus: LocalBus,
    pool: String,
    job: JobOffer,
}

#[async_trait::async_trait]
impl OfferHandle for LocalOffer {
    async fn ack(self: Box<Self>) {
        self.bus.settle(&self.job);
    }

    async fn retry_later(self: Box<Self>, delay: Duration) {
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            self.bus.requeue(&self.pool, self.job);
        });
    }
}

#[async_trait::async_trait]
impl ControlLink for LocalLink {
    async fn next_offers(&self, pool: &str, max: usize) -> Result<Vec<Offer>, LinkError> {
        let jobs = self.bus.next_offers(pool, max).await;
        Ok(jobs
            .into_iter()
            .map(|job| Offer {
                job: job.clone(),
                handle: Box::new(LocalOffer { bus: self.bus.clone(), pool: pool.to_owned(), job }),
            })
            .collect())
    }

    async fn claim_batch(&self, runner_id: &str, offers: &[JobOffer]) -> Result<Vec<ClaimReply>, LinkError> {
        runs::claim_batch(&self.ctx, runner_id, None, offers, None).await.map_err(|e| LinkError::new("claim", e))
    }

    async fn heartbeat(&self, beat: &Heartbeat) -> Result<HeartbeatReply, LinkError> {
        runs::heartbeat(&self.ctx, beat).await.map_err(|e| LinkError::new("heartbeat", e))
    }

    async fn report_exit(&self, report: &ExitReport) -> Result<ExitReply, LinkError> {
        Ok(runs::finish(&self.ctx, report).await)
    }

    async fn cancel_notices(&self, runner_id: &str) -> Result<BoxStream<'static, CancelNotice>, LinkError> {
        let runner_id = runner_id.to_owned();
        let notices = tokio_stream::wrappers::BroadcastStream::new(self.bus.cancel_notices());
        Ok(notices
            .filter_map(move |item| {
                let runner_id = runner_id.clone();
                async move {
                    match item {
                        Ok((to, notice)) if to == runner_id => Some(notice),
                        // Missed notices are repeated by heartbeat replies.
                        _ => None,
                    }
                }
            })
            .boxed())
    }

    async fn fetch_bundle(&self, code: &CodeBundleRef, _max_bytes: u64) -> Result<Vec<u8>, LinkError> {
        match self.ctx.store.load_bundle(&code.digest).await {
            Ok(Some(data)) => Ok(data),
            Ok(None) => Err(LinkError::new("code bundle", "not in the store")),
            Err(e) => Err(LinkError::new("code bundle", e)),
        }
    }

    fn max_log_payload(&self) -> usize {
        MAX_LOG_PAYLOAD
    }

    async fn publish_log(&self, at: &AttemptRef, first_line: u64, payload: Bytes) -> Result<LogAck, LinkError> {
        self.bus.append(at, first_line, &payload).map_err(|e| LinkError::new("log spool", e))?;
        Ok(Box::pin(std::future::ready(Ok(()))))
    }

    async fn published_log(
        &self,
        at: &AttemptRef,
    ) -> Result<BoxStream<'static, Result<(u64, Bytes), LinkError>>, LinkError> {
        let cursor = self.bus.log_cursor(at.run_id, at.attempt).await.map_err(|e| LinkError::new("log spool", e))?;
        let token = at.fencing_token;
        // Streamed batch by batch: a resumed log may be large.
        let batches = futures::stream::unfold(cursor, move |mut cursor| async move {
            loop {
                match cursor.next_batch().await {
                    Ok(Some(batch)) => {
                        if batch.token == Some(token)
                            && let Some(first) = batch.first_line
                        {
                            return Some((Ok((first, batch.payload)), cursor));
                        }
                    }
                    Ok(None) => return None,
                    Err(e) => return Some((Err(LinkError::new("log spool", e)), cursor)),
                }
            }
        });
        Ok(batches.boxed())
    }
}
