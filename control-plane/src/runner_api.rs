//! The NATS request/reply API runners talk to: enrollment, claim, exit report,
//! heartbeat. Every replica subscribes in one queue group, so each request is
//! handled once. A thin adapter: check the sender, decode, call `runs`, encode. Its
//! twin for the single node's embedded runner is `embedded_runner::link::LocalLink`,
//! which makes the same calls.
//!
//! The sender of a request is the runner id in its subject (`ff.r.<runner>.<op>`),
//! which the NATS server lets only that runner publish on (see
//! `runner_identity::permissions`); ids and pools written in the bodies are replaced by
//! the enrolled ones. A request from a runner that is not enrolled (or revoked), with
//! a reply subject outside the sender's own inbox, or with a malformed body, is
//! dropped and logged with the sender's id.

use crate::bus::nats::NatsBus;
use crate::context::Context;
use crate::runner_identity::{self, cache::Identities};
use crate::runs;
use crate::store::runner_identity::Enrollment;
use futures::StreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use shared::protocol::{
    ClaimBatchReply, ClaimBatchRequest, ClaimReply, ClaimRequest, EnrollReply, EnrollRequest, ExitReply, ExitReport,
    Heartbeat, HeartbeatReply,
};
use shared::subjects::{self, RunnerOp, Subjects};
use std::future::Future;
use std::sync::Arc;

/// Answers runners until the context shuts down. Requests in flight then are
/// tracked by the context, so shutdown waits for their replies.
pub async fn serve(ctx: Context, bus: NatsBus) -> anyhow::Result<()> {
    let shutdown = ctx.shutdown.clone();
    let client = bus.client().clone();
    let names = bus.subjects().clone();
    let queue = || subjects::CONTROL_PLANE_QUEUE.to_owned();
    let mut claims = client.queue_subscribe(names.runner_requests(RunnerOp::Claim), queue()).await?;
    let mut claim_batches = client.queue_subscribe(names.runner_requests(RunnerOp::ClaimBatch), queue()).await?;
    let mut exits = client.queue_subscribe(names.runner_requests(RunnerOp::Exit), queue()).await?;
    let mut heartbeats = client.queue_subscribe(names.runner_requests(RunnerOp::Heartbeat), queue()).await?;
    let mut enrollments = client.queue_subscribe(names.enroll(), queue()).await?;
    let api = Api { ctx: ctx.clone(), client: client.clone(), subjects: names, identities: Arc::default() };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            Some(msg) = claims.next() => api.spawn(msg, handle_claim),
            Some(msg) = claim_batches.next() => {
                // A quarter of the server's limit stays free for the reply's framing.
                let max_reply = client.server_info().max_payload / 4 * 3;
                api.spawn(msg, move |ctx, runner, req| handle_claim_batch(ctx, runner, req, max_reply))
            }
            Some(msg) = exits.next() => api.spawn(msg, handle_exit),
            Some(msg) = heartbeats.next() => api.spawn(msg, handle_heartbeat),
            Some(msg) = enrollments.next() => api.spawn_enroll(msg),
            else => return Ok(()),
        }
    }
}

#[derive(Clone)]
struct Api {
    ctx: Context,
    client: async_nats::Client,
    subjects: Subjects,
    identities: Arc<Identities>,
}

impl Api {
    /// Checks the sender, decodes the request, runs its handler in its own task and
    /// sends the reply.
    fn spawn<Req, Rep, F, Fut>(&self, msg: async_nats::Message, handler: F)
    where
        Req: DeserializeOwned + Send + 'static,
        Rep: Serialize + Send + Sync,
        F: FnOnce(Context, Enrollment, Req) -> Fut + Send + 'static,
        Fut: Future<Output = Option<Rep>> + Send,
    {
        let api = self.clone();
        self.ctx.spawn(async move {
            let Some(runner_id) = api.subjects.runner_of_request(&msg.subject) else { return };
            let Some(reply_to) = msg.reply.clone() else { return };
            if !reply_to.starts_with(&format!("{}.", api.subjects.inbox_prefix(runner_id))) {
                tracing::warn!(runner_id, subject = %msg.subject, reply_to = %reply_to, "request refused: reply subject outside the sender's inbox");
                return;
            }
            let runner = match api.identities.active(&api.ctx.store, runner_id).await {
                Ok(Some(runner)) => runner,
                Ok(None) => {
                    tracing::warn!(runner_id, subject = %msg.subject, "request refused: the runner is not enrolled or was revoked");
                    return;
                }
                Err(e) => {
                    // No answer: the runner times out and retries.
                    tracing::warn!(runner_id, error = %e, "cannot check the runner's enrollment");
                    return;
                }
            };
            let request: Req = match serde_json::from_slice(&msg.payload) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(runner_id, subject = %msg.subject, error = %e, "malformed runner request refused");
                    return;
                }
            };
            // `None`: no answer, the runner times out and retries (transient failure).
            let Some(reply) = handler(api.ctx.clone(), runner, request).await else { return };
            api.reply(reply_to, &reply).await;
        });
    }

    fn spawn_enroll(&self, msg: async_nats::Message) {
        let api = self.clone();
        self.ctx.spawn(async move {
            let Some(reply_to) = msg.reply.clone() else { return };
            let request: EnrollRequest = match serde_json::from_slice(&msg.payload) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "malformed enrollment request refused");
                    return;
                }
            };
            let reply = match runner_identity::enroll(
                &api.ctx.store,
                &request.token,
                &request.runner_id,
                request.pool.as_deref(),
            )
            .await
            {
                Ok(enrolled) => EnrollReply::Enrolled {
                    runner_id: enrolled.enrollment.runner_id,
                    pool: enrolled.enrollment.pool,
                    secret: enrolled.secret.into_inner(),
                },
                Err(runner_identity::Error::Store(e)) => {
                    tracing::warn!(runner_id = %request.runner_id, error = %e, "enrollment failed");
                    EnrollReply::Refused { reason: "the control plane cannot reach its database; try again".into() }
                }
                Err(e) => {
                    tracing::warn!(runner_id = %request.runner_id, reason = %e, "enrollment refused");
                    EnrollReply::Refused { reason: e.to_string() }
                }
            };
            api.reply(reply_to, &reply).await;
        });
    }

    async fn reply<Rep: Serialize + Sync>(&self, reply_to: async_nats::Subject, reply: &Rep) {
        match serde_json::to_vec(reply) {
            Ok(body) => {
                if let Err(e) = self.client.publish(reply_to, body.into()).await {
                    tracing::warn!(error = %e, "could not send reply to runner");
                }
            }
            Err(e) => tracing::error!(error = %e, "could not encode reply"),
        }
    }
}

async fn handle_claim(ctx: Context, runner: Enrollment, req: ClaimRequest) -> Option<ClaimReply> {
    match runs::claim(&ctx, req.run_id, req.attempt, &runner.runner_id, Some(&runner.pool)).await {
        Ok(reply) => Some(reply),
        Err(e) => {
            tracing::warn!(run_id = %req.run_id, error = %e, "claim failed");
            None
        }
    }
}

async fn handle_claim_batch(
    ctx: Context,
    runner: Enrollment,
    req: ClaimBatchRequest,
    max_reply_bytes: usize,
) -> Option<ClaimBatchReply> {
    match runs::claim_batch(&ctx, &runner.runner_id, Some(&runner.pool), &req.offers, Some(max_reply_bytes)).await {
        Ok(replies) => Some(ClaimBatchReply { replies }),
        Err(e) => {
            tracing::warn!(runner_id = %runner.runner_id, offers = req.offers.len(), error = %e, "claim batch failed");
            None
        }
    }
}

async fn handle_exit(ctx: Context, runner: Enrollment, mut report: ExitReport) -> Option<ExitReply> {
    report.runner_id = runner.runner_id;
    Some(runs::finish(&ctx, &report).await)
}

async fn handle_heartbeat(ctx: Context, runner: Enrollment, mut hb: Heartbeat) -> Option<HeartbeatReply> {
    hb.runner_id = runner.runner_id;
    hb.pool = runner.pool;
    match runs::heartbeat(&ctx, &hb).await {
        Ok(reply) => Some(reply),
        Err(e) => {
            tracing::warn!(runner_id = %hb.runner_id, error = %e, "could not record heartbeat or renew leases");
            None
        }
    }
}
