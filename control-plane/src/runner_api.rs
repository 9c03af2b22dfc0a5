//! The NATS request/reply API runners talk to: claim, exit report, heartbeat.
//! Every replica subscribes in one queue group, so each request is handled once.
//! A thin adapter: decode, call `runs`, encode. Its twin for the single node's
//! embedded runner is `embedded_runner::link::LocalLink`, which makes the same calls.

use crate::bus::nats::NatsBus;
use crate::context::Context;
use crate::runs;
use futures::StreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use shared::protocol::{
    ClaimBatchReply, ClaimBatchRequest, ClaimReply, ClaimRequest, ExitReply, ExitReport, Heartbeat, HeartbeatReply,
};
use shared::subjects;
use std::future::Future;

/// Answers runners until the context shuts down. Requests in flight then are
/// tracked by the context, so shutdown waits for their replies.
pub async fn serve(ctx: Context, bus: NatsBus) -> anyhow::Result<()> {
    let shutdown = ctx.shutdown.clone();
    let client = bus.client().clone();
    let mut claims = client.queue_subscribe(subjects::CLAIM, subjects::CONTROL_PLANE_QUEUE.into()).await?;
    let mut claim_batches = client.queue_subscribe(subjects::CLAIM_BATCH, subjects::CONTROL_PLANE_QUEUE.into()).await?;
    let mut exits = client.queue_subscribe(subjects::EXIT, subjects::CONTROL_PLANE_QUEUE.into()).await?;
    let mut heartbeats = client.queue_subscribe(subjects::HEARTBEAT, subjects::CONTROL_PLANE_QUEUE.into()).await?;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            Some(msg) = claims.next() => spawn_reply(&ctx, &client, msg, handle_claim),
            Some(msg) = claim_batches.next() => {
                // A quarter of the server's limit stays free for the reply's framing.
                let max_reply = client.server_info().max_payload / 4 * 3;
                spawn_reply(&ctx, &client, msg, move |ctx, req| handle_claim_batch(ctx, req, max_reply))
            }
            Some(msg) = exits.next() => spawn_reply(&ctx, &client, msg, handle_exit),
            Some(msg) = heartbeats.next() => spawn_reply(&ctx, &client, msg, handle_heartbeat),
            else => return Ok(()),
        }
    }
}

/// Decodes a request, runs its handler in its own task and sends the reply.
fn spawn_reply<Req, Rep, F, Fut>(ctx: &Context, client: &async_nats::Client, msg: async_nats::Message, handler: F)
where
    Req: DeserializeOwned + Send + 'static,
    Rep: Serialize + Send,
    F: FnOnce(Context, Req) -> Fut + Send + 'static,
    Fut: Future<Output = Option<Rep>> + Send,
{
    let client = client.clone();
    let task_ctx = ctx.clone();
    ctx.spawn(async move {
        let ctx = task_ctx;
        let Some(reply_to) = msg.reply.clone() else { return };
        let request: Req = match serde_json::from_slice(&msg.payload) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(subject = %msg.subject, error = %e, "malformed runner request");
                return;
            }
        };
        // `None`: no answer, the runner times out and retries (transient failure).
        let Some(reply) = handler(ctx, request).await else { return };
        match serde_json::to_vec(&reply) {
            Ok(body) => {
                if let Err(e) = client.publish(reply_to, body.into()).await {
                    tracing::warn!(error = %e, "could not send reply to runner");
                }
            }
            Err(e) => tracing::error!(error = %e, "could not encode reply"),
        }
    });
}

async fn handle_claim(ctx: Context, req: ClaimRequest) -> Option<ClaimReply> {
    match runs::claim(&ctx, req.run_id, req.attempt, &req.runner_id).await {
        Ok(reply) => Some(reply),
        Err(e) => {
            tracing::warn!(run_id = %req.run_id, error = %e, "claim failed");
            None
        }
    }
}

async fn handle_claim_batch(ctx: Context, req: ClaimBatchRequest, max_reply_bytes: usize) -> Option<ClaimBatchReply> {
    match runs::claim_batch(&ctx, &req.runner_id, &req.offers, Some(max_reply_bytes)).await {
        Ok(replies) => Some(ClaimBatchReply { replies }),
        Err(e) => {
            tracing::warn!(runner_id = %req.runner_id, offers = req.offers.len(), error = %e, "claim batch failed");
            None
        }
    }
}

async fn handle_exit(ctx: Context, report: ExitReport) -> Option<ExitReply> {
    Some(runs::finish(&ctx, &report).await)
}

async fn handle_heartbeat(ctx: Context, hb: Heartbeat) -> Option<HeartbeatReply> {
    match runs::heartbeat(&ctx, &hb).await {
        Ok(reply) => Some(reply),
        Err(e) => {
            tracing::warn!(runner_id = %hb.runner_id, error = %e, "could not record heartbeat or renew leases");
            None
        }
    }
}
