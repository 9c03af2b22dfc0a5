//! The runner's link over NATS: offers from the pool's durable pull consumer on
//! the WorkQueue jobs stream, request/reply to the control-plane queue group,
//! log batches to the logs stream, code bundles from the object store.

use super::{ControlLink, LinkError, LogAck, Offer, OfferHandle};
use crate::enrollment::Credentials;
use async_nats::jetstream::{self, consumer};
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use serde::Serialize;
use serde::de::DeserializeOwned;
use shared::log_batch::{FENCING_TOKEN_HEADER, FIRST_LINE_HEADER};
use shared::nats_settings::NatsSettings;
use shared::protocol::{
    AttemptRef, CancelNotice, ClaimBatchReply, ClaimBatchRequest, ClaimReply, CodeBundleRef, ExitReply, ExitReport,
    Heartbeat, HeartbeatReply, JobOffer,
};
use shared::subjects::{self, RunnerOp, Subjects};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::sync::Mutex;

const FETCH_EXPIRY: Duration = Duration::from_secs(5);
const CLAIM_TIMEOUT: Duration = Duration::from_secs(10);
const EXIT_REPORT_TIMEOUT: Duration = Duration::from_secs(300);
/// Wait before connecting again after NATS refused the connection (a revoked runner keeps
/// trying at this pace; it is refused each time).
const REFUSED_RETRY: Duration = Duration::from_secs(2);
/// Offers stay invisible to other runners this long while one decides.
const OFFER_ACK_WAIT: Duration = Duration::from_secs(30);

pub struct NatsLink {
    client: async_nats::Client,
    js: jetstream::Context,
    subjects: Subjects,
    runner_id: String,
    /// The pool's durable consumer, created on first use and after failures.
    consumer: Mutex<Option<consumer::PullConsumer>>,
}

/// Connect options for `user` (a runner id, or `enroll-<nonce>` while enrolling): TLS as
/// configured, and replies under the user's own inbox prefix, the only inbox the NATS
/// server lets this connection read.
pub fn connect_options(nats: &NatsSettings, user: &str) -> Result<async_nats::ConnectOptions, LinkError> {
    let mut options = async_nats::ConnectOptions::new().custom_inbox_prefix(nats.subjects.inbox_prefix(user));
    if let Some(ca) = &nats.tls_ca {
        if !ca.is_file() {
            return Err(LinkError::new("NATS_TLS_CA", format!("{} is not a readable file", ca.display())));
        }
        options = options.require_tls(true).add_root_certificates(ca.clone());
    }
    if let Some((cert, key)) = &nats.tls_client {
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    Ok(options)
}

impl NatsLink {
    /// Connects as the enrolled runner `creds` (see `enrollment`).
    pub async fn connect(url: &str, nats: &NatsSettings, creds: &Credentials) -> Result<NatsLink, LinkError> {
        let (refused_tx, mut refused) = tokio::sync::mpsc::unbounded_channel();
        let client = connect_options(nats, &creds.runner_id)?
            .user_and_password(creds.runner_id.clone(), creds.secret.clone())
            .name(format!("fastflow-runner-{}", creds.runner_id))
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(5))
            // Reconnect after the control planes: a restarted server asks them about this
            // runner (auth callout), and refuses it when none has subscribed again yet.
            .reconnect_delay_callback(|attempts| Duration::from_millis(2000 + 500 * (attempts.min(16) as u64)))
            .event_callback(move |event| {
                let refused_tx = refused_tx.clone();
                async move {
                    // Permission violations and auth errors show in the runner's log.
                    if let async_nats::Event::ServerError(e) = event {
                        tracing::warn!(error = %e, "NATS server error");
                        if matches!(e, async_nats::ServerError::AuthorizationViolation) {
                            let _ = refused_tx.send(());
                        }
                    }
                }
            })
            .connect(url)
            .await
            .map_err(|e| LinkError::new("connect", e))?;
        // A server that restarted may ask the control plane about this runner before the
        // control plane is back (auth callout): the connection is refused. async-nats
        // usually connects again by itself; where it stays disconnected, it is told to
        // (only then: a needless forced reconnect was seen to lose JetStream acks).
        let reconnecting = client.clone();
        tokio::spawn(async move {
            while refused.recv().await.is_some() {
                tokio::time::sleep(REFUSED_RETRY).await;
                while refused.try_recv().is_ok() {}
                if reconnecting.connection_state() == async_nats::connection::State::Connected {
                    continue;
                }
                tracing::info!("NATS refused this runner's connection; connecting again");
                if reconnecting.force_reconnect().await.is_err() {
                    return;
                }
            }
        });
        let js = jetstream::new(client.clone());
        Ok(NatsLink {
            client,
            js,
            subjects: nats.subjects.clone(),
            runner_id: creds.runner_id.clone(),
            consumer: Mutex::new(None),
        })
    }

    async fn request<Req: Serialize + Sync, Rep: DeserializeOwned>(
        &self,
        context: &'static str,
        op: RunnerOp,
        body: &Req,
        timeout: Duration,
    ) -> Result<Rep, LinkError> {
        let payload = serde_json::to_vec(body).map_err(|e| LinkError::new(context, e))?;
        let request = async_nats::Request::new().payload(payload.into()).timeout(Some(timeout));
        let subject = self.subjects.runner_request(&self.runner_id, op);
        let reply = self.client.send_request(subject, request).await.map_err(|e| LinkError::new(context, e))?;
        serde_json::from_slice(&reply.payload).map_err(|e| LinkError::new(context, format!("unreadable reply: {e}")))
    }

    async fn pool_consumer(&self, pool: &str) -> Result<consumer::PullConsumer, async_nats::Error> {
        let mut cached = self.consumer.lock().await;
        if let Some(c) = cached.as_ref() {
            return Ok(c.clone());
        }
        let stream = self.js.get_stream(self.subjects.jobs_stream()).await?;
        let name = subjects::pool_consumer(pool);
        let created = stream
            .get_or_create_consumer(
                &name,
                consumer::pull::Config {
                    durable_name: Some(name.clone()),
                    filter_subject: self.subjects.job_offers_of_pool(pool),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: OFFER_ACK_WAIT,
                    max_ack_pending: 10_000,
                    ..Default::default()
                },
            )
            .await?;
        Ok(cached.insert(created).clone())
    }
}

struct NatsOffer(jetstream::Message);

#[async_trait::async_trait]
impl OfferHandle for NatsOffer {
    async fn ack(self: Box<Self>) {
        let _ = self.0.ack().await;
    }

    async fn retry_later(self: Box<Self>, delay: Duration) {
        let delay = (!delay.is_zero()).then_some(delay);
        let _ = self.0.ack_with(jetstream::AckKind::Nak(delay)).await;
    }
}

#[async_trait::async_trait]
impl ControlLink for NatsLink {
    /// Offers are fetched only when asked (the claimer asks for as many as it
    /// has free slots), so no AckWait timer runs on an offer this runner cannot
    /// take yet. First what is waiting now (a no-wait fetch), else a long poll
    /// for one.
    async fn next_offers(&self, pool: &str, max: usize) -> Result<Vec<Offer>, LinkError> {
        let consumer = self.pool_consumer(pool).await.map_err(|e| LinkError::new("job stream", e))?;
        let mut messages = Vec::new();
        let mut failure = None;
        if max > 1 {
            match consumer.fetch().max_messages(max).messages().await {
                Ok(mut batch) => {
                    while let Some(msg) = batch.next().await {
                        match msg {
                            Ok(msg) => messages.push(msg),
                            Err(e) => {
                                failure = Some(e.to_string());
                                break;
                            }
                        }
                    }
                }
                Err(e) => failure = Some(e.to_string()),
            }
        }
        if messages.is_empty() && failure.is_none() {
            let polled = async {
                let mut batch = consumer.batch().max_messages(1).expires(FETCH_EXPIRY).messages().await?;
                batch.next().await.transpose()
            }
            .await;
            match polled {
                Ok(msg) => messages.extend(msg),
                Err(e) => failure = Some(e.to_string()),
            }
        }
        if let Some(e) = failure {
            // Re-create the consumer next time (the server may have lost it).
            *self.consumer.lock().await = None;
            // Offers already delivered are handled; the error shows on the next call.
            if messages.is_empty() {
                return Err(LinkError::new("fetching offers", e));
            }
        }
        let mut offers = Vec::with_capacity(messages.len());
        for msg in messages {
            match serde_json::from_slice::<JobOffer>(&msg.payload) {
                Ok(job) => offers.push(Offer { job, handle: Box::new(NatsOffer(msg)) }),
                Err(_) => {
                    tracing::warn!(subject = %msg.subject, "dropping a malformed offer");
                    let _ = msg.ack_with(jetstream::AckKind::Term).await;
                }
            }
        }
        Ok(offers)
    }

    async fn claim_batch(&self, runner_id: &str, offers: &[JobOffer]) -> Result<Vec<ClaimReply>, LinkError> {
        let request = ClaimBatchRequest { runner_id: runner_id.to_owned(), offers: offers.to_vec() };
        let reply: ClaimBatchReply = self.request("claim", RunnerOp::ClaimBatch, &request, CLAIM_TIMEOUT).await?;
        if reply.replies.len() > offers.len() {
            return Err(LinkError::new("claim", "more replies than offers"));
        }
        Ok(reply.replies)
    }

    async fn heartbeat(&self, beat: &Heartbeat) -> Result<HeartbeatReply, LinkError> {
        self.request("heartbeat", RunnerOp::Heartbeat, beat, super::HEARTBEAT_TIMEOUT).await
    }

    async fn report_exit(&self, report: &ExitReport) -> Result<ExitReply, LinkError> {
        self.request("exit report", RunnerOp::Exit, report, EXIT_REPORT_TIMEOUT).await
    }

    async fn cancel_notices(&self, runner_id: &str) -> Result<BoxStream<'static, CancelNotice>, LinkError> {
        let sub = self
            .client
            .subscribe(self.subjects.runner_cancel(runner_id))
            .await
            .map_err(|e| LinkError::new("cancel subscription", e))?;
        Ok(sub
            .filter_map(|msg| async move {
                match serde_json::from_slice::<CancelNotice>(&msg.payload) {
                    Ok(notice) => Some(notice),
                    Err(e) => {
                        tracing::warn!(error = %e, "malformed cancel notice");
                        None
                    }
                }
            })
            .boxed())
    }

    async fn fetch_bundle(&self, code: &CodeBundleRef, max_bytes: u64) -> Result<Vec<u8>, LinkError> {
        let err = |e: &dyn std::fmt::Display| LinkError::new("code bundle", e);
        let store = self.js.get_object_store(self.subjects.code_bucket()).await.map_err(|e| err(&e))?;
        let object = store.get(&code.digest).await.map_err(|e| err(&e))?;
        let mut data = Vec::with_capacity(code.size.min(max_bytes) as usize);
        object.take(max_bytes + 1).read_to_end(&mut data).await.map_err(|e| err(&e))?;
        Ok(data)
    }

    fn max_log_payload(&self) -> usize {
        self.client.server_info().max_payload
    }

    async fn publish_log(&self, at: &AttemptRef, first_line: u64, payload: Bytes) -> Result<LogAck, LinkError> {
        let publish = jetstream::message::PublishMessage::build()
            .payload(payload)
            .message_id(subjects::log_batch_msg_id(at.run_id, at.attempt, at.fencing_token, first_line))
            .header(FIRST_LINE_HEADER, first_line.to_string().as_str())
            .header(FENCING_TOKEN_HEADER, at.fencing_token.to_string().as_str());
        let ack = self
            .js
            .send_publish(self.subjects.log_subject(at.run_id, at.attempt, &self.runner_id), publish)
            .await
            .map_err(|e| LinkError::new("publish log batch", e))?;
        Ok(Box::pin(async move { ack.await.map(|_| ()).map_err(|e| LinkError::new("log batch ack", e)) }))
    }

    /// Reads every batch this runner's subject of the attempt holds now, keeping those
    /// of this attempt's fencing token. An ordered consumer of the runner's own subject
    /// (the only one it may read): it counts what is pending when created, and that
    /// many messages are read.
    async fn published_log(
        &self,
        at: &AttemptRef,
    ) -> Result<BoxStream<'static, Result<(u64, Bytes), LinkError>>, LinkError> {
        let err = |e: &dyn std::fmt::Display| LinkError::new("reading the published log", e);
        let subject = self.subjects.log_subject(at.run_id, at.attempt, &self.runner_id);
        let stream = self.js.get_stream(self.subjects.logs_stream()).await.map_err(|e| err(&e))?;
        // A named consumer with this one filter: the server lets the runner create
        // consumers only on its own log subjects (the name and filter are in the API
        // subject); it goes away by itself a minute after its last use.
        let consumer = stream
            .create_consumer(consumer::pull::Config {
                name: Some(format!("resume-{}", uuid::Uuid::new_v4().simple())),
                filter_subject: subject,
                deliver_policy: consumer::DeliverPolicy::All,
                ack_policy: consumer::AckPolicy::None,
                inactive_threshold: Duration::from_secs(60),
                ..Default::default()
            })
            .await
            .map_err(|e| err(&e))?;
        let pending = consumer.cached_info().num_pending;
        if pending == 0 {
            return Ok(futures::stream::empty().boxed());
        }
        let messages = consumer.messages().await.map_err(|e| err(&e))?;
        let token = at.fencing_token.to_string();
        // Ends after the messages that were pending when we started.
        let batches = futures::stream::unfold((messages, pending), move |(mut messages, left)| {
            let token = token.clone();
            async move {
                let mut left = left;
                while left > 0 {
                    let msg = match messages.next().await {
                        Some(Ok(msg)) => msg,
                        Some(Err(e)) => return Some((Err(err(&e)), (messages, 0))),
                        None => {
                            let e = LinkError::new("reading the published log", "ended before its last message");
                            return Some((Err(e), (messages, 0)));
                        }
                    };
                    left -= 1;
                    let header =
                        |name: &str| msg.headers.as_ref().and_then(|h| h.get(name)).map(|v| v.as_str().to_owned());
                    if header(FENCING_TOKEN_HEADER).as_deref() == Some(token.as_str())
                        && let Some(first) = header(FIRST_LINE_HEADER).and_then(|v| v.parse::<u64>().ok())
                    {
                        return Some((Ok((first, msg.payload.clone())), (messages, left)));
                    }
                }
                None
            }
        });
        Ok(batches.boxed())
    }

    async fn flush(&self) {
        let _ = self.client.flush().await;
    }
}
