//! The NATS request/reply API runners talk to: claim, exit report, heartbeat.
//! Every replica subscribes in one queue group, so each request is handled once.
//! The single node's embedded runner calls the same handlers through
//! `bus::local::LocalLink`.

use crate::app::App;
use crate::bus::nats::NatsBus;
use crate::runs;
use futures::StreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use shared::protocol::{
    CancelNotice, ClaimBatchReply, ClaimBatchRequest, ClaimReply, ClaimRequest, ExitReply, ExitReport, Heartbeat,
    HeartbeatReply,
};
use shared::subjects;
use std::future::Future;
use tokio_util::sync::CancellationToken;

pub async fn serve(app: App, bus: NatsBus, shutdown: CancellationToken) -> anyhow::Result<()> {
    let client = bus.client().clone();
    let mut claims = client.queue_subscribe(subjects::CLAIM, subjects::CONTROL_PLANE_QUEUE.into()).await?;
    let mut claim_batches = client.queue_subscribe(subjects::CLAIM_BATCH, subjects::CONTROL_PLANE_QUEUE.into()).await?;
    let mut exits = client.queue_subscribe(subjects::EXIT, subjects::CONTROL_PLANE_QUEUE.into()).await?;
    let mut heartbeats = client.queue_subscribe(subjects::HEARTBEAT, subjects::CONTROL_PLANE_QUEUE.into()).await?;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            Some(msg) = claims.next() => spawn_reply(&app, &client, msg, handle_claim),
            Some(msg) = claim_batches.next() => {
                // A quarter of the server's limit stays free for the reply's framing.
                let max_reply = client.server_info().max_payload / 4 * 3;
                spawn_reply(&app, &client, msg, move |app, req| handle_claim_batch(app, req, max_reply))
            }
            Some(msg) = exits.next() => spawn_reply(&app, &client, msg, handle_exit),
            Some(msg) = heartbeats.next() => spawn_reply(&app, &client, msg, heartbeat),
            else => return Ok(()),
        }
    }
}

/// Decodes a request, runs its handler in its own task and sends the reply.
fn spawn_reply<Req, Rep, F, Fut>(app: &App, client: &async_nats::Client, msg: async_nats::Message, handler: F)
where
    Req: DeserializeOwned + Send + 'static,
    Rep: Serialize + Send,
    F: FnOnce(App, Req) -> Fut + Send + 'static,
    Fut: Future<Output = Option<Rep>> + Send,
{
    let app = app.clone();
    let client = client.clone();
    tokio::spawn(async move {
        let Some(reply_to) = msg.reply.clone() else { return };
        let request: Req = match serde_json::from_slice(&msg.payload) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(subject = %msg.subject, error = %e, "malformed runner request");
                return;
            }
        };
        // `None`: no answer, the runner times out and retries (transient failure).
        let Some(reply) = handler(app, request).await else { return };
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

async fn handle_claim(app: App, req: ClaimRequest) -> Option<ClaimReply> {
    match runs::claim(&app, req.run_id, req.attempt, &req.runner_id).await {
        Ok(reply) => Some(reply),
        Err(e) => {
            tracing::warn!(run_id = %req.run_id, error = %e, "claim failed");
            None
        }
    }
}

async fn handle_claim_batch(app: App, req: ClaimBatchRequest, max_reply_bytes: usize) -> Option<ClaimBatchReply> {
    match runs::claim_batch(&app, &req.runner_id, &req.offers, Some(max_reply_bytes)).await {
        Ok(replies) => Some(ClaimBatchReply { replies }),
        Err(e) => {
            tracing::warn!(runner_id = %req.runner_id, offers = req.offers.len(), error = %e, "claim batch failed");
            None
        }
    }
}

async fn handle_exit(app: App, report: ExitReport) -> Option<ExitReply> {
    Some(runs::finish(&app, &report).await)
}

/// Records the heartbeat and renews the runner's leases; the reply carries
/// cancel notices and the attempts it no longer holds. `None`: not recorded.
pub(crate) async fn heartbeat(app: App, hb: Heartbeat) -> Option<HeartbeatReply> {
    if let Err(e) = app.store.record_heartbeat(&hb).await {
        tracing::warn!(runner_id = %hb.runner_id, error = %e, "could not record heartbeat");
        return None;
    }
    let renewed = match app.store.renew_leases(&hb.runner_id, &hb.running, app.config.lease).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(runner_id = %hb.runner_id, error = %e, "could not renew leases");
            return None;
        }
    };
    if hb.starting {
        match runs::end_unheld_on_start(&app, &hb.runner_id, &hb.running).await {
            Ok(0) => {}
            Ok(ended) => {
                tracing::info!(runner_id = %hb.runner_id, ended, "ended attempts the restarted runner had no container for")
            }
            Err(e) => {
                tracing::warn!(runner_id = %hb.runner_id, error = %e, "could not end attempts of a restarted runner")
            }
        }
    }
    let mut reply = HeartbeatReply::default();
    for held in &hb.running {
        match renewed.iter().find(|r| &r.attempt == held) {
            Some(state) if state.cancel_requested => {
                reply.cancel.push(CancelNotice { attempt: held.clone(), force: state.cancel_force })
            }
            Some(_) => {}
            None => reply.stale.push(held.clone()),
        }
    }
    Some(reply)
}
