//! The runner's link over NATS: offers from the pool's durable pull consumer on
//! the WorkQueue jobs stream, request/reply to the control-plane queue group,
//! log batches to the logs stream, code bundles from the object store.

use super::{ControlLink, LinkError, LogAck, Offer, OfferHandle};
use async_nats::jetstream::{self, consumer};
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use serde::Serialize;
use serde::de::DeserializeOwned;
use shared::log_batch::{FENCING_TOKEN_HEADER, FIRST_LINE_HEADER};
use shared::protocol::{
    AttemptRef, CancelNotice, ClaimBatchReply, ClaimBatchRequest, ClaimReply, CodeBundleRef, ExitReply, ExitReport,
    Heartbeat, HeartbeatReply, JobOffer,
};
use shared::subjects;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::sync::Mutex;

const FETCH_EXPIRY: Duration = Duration::from_secs(5);
const CLAIM_TIMEOUT: Duration = Duration::from_secs(10);
const EXIT_REPORT_TIMEOUT: Duration = Duration::from_secs(300);
/// Offers stay invisible to other runners this long while one decides.
const OFFER_ACK_WAIT: Duration = Duration::from_secs(30);

pub struct NatsLink {
    client: async_nats::Client,
    js: jetstream::Context,
    /// The pool's durable consumer, created on first use and after failures.
    consumer: Mutex<Option<consumer::PullConsumer>>,
}

/// async-nats ignores the user info of a URL: the user and password, or the token, of
/// `NATS_URL` are given to it as options.
fn with_url_credentials(options: async_nats::ConnectOptions, url: &str) -> async_nats::ConnectOptions {
    use shared::service_url::{Credentials, credentials};
    match credentials(url) {
        Some(Credentials::UserPassword { user, password }) => options.user_and_password(user, password),
        Some(Credentials::Token(token)) => options.token(token),
        None => options,
    }
}

impl NatsLink {
    pub async fn connect(url: &str, runner_id: &str) -> Result<NatsLink, LinkError> {
        let client = with_url_credentials(async_nats::ConnectOptions::new(), url)
            .name(format!("fastflow-runner-{runner_id}"))
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(5))
            .connect(url)
            .await
            .map_err(|e| LinkError::new("connect", e))?;
        let js = jetstream::new(client.clone());
        Ok(NatsLink { client, js, consumer: Mutex::new(None) })
    }

    async fn request<Req: Serialize + Sync, Rep: DeserializeOwned>(
        &self,
        context: &'static str,
        subject: &'static str,
        body: &Req,
        timeout: Duration,
    ) -> Result<Rep, LinkError> {
        let payload = serde_json::to_vec(body).map_err(|e| LinkError::new(context, e))?;
        let request = async_nats::Request::new().payload(payload.into()).timeout(Some(timeout));
        let reply = self.client.send_request(subject, request).await.map_err(|e| LinkError::new(context, e))?;
        serde_json::from_slice(&reply.payload).map_err(|e| LinkError::new(context, format!("unreadable reply: {e}")))
    }

    async fn pool_consumer(&self, pool: &str) -> Result<consumer::PullConsumer, async_nats::Error> {
        let mut cached = self.consumer.lock().await;
        if let Some(c) = cached.as_ref() {
            return Ok(c.clone());
        }
        let stream = self.js.get_stream(subjects::JOBS_STREAM).await?;
        let name = subjects::pool_consumer(pool);
        let created = stream
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
        let reply: ClaimBatchReply = self.request("claim", subjects::CLAIM_BATCH, &request, CLAIM_TIMEOUT).await?;
        if reply.replies.len() > offers.len() {
            return Err(LinkError::new("claim", "more replies than offers"));
        }
        Ok(reply.replies)
    }

    async fn heartbeat(&self, beat: &Heartbeat) -> Result<HeartbeatReply, LinkError> {
        self.request("heartbeat", subjects::HEARTBEAT, beat, super::HEARTBEAT_TIMEOUT).await
    }

    async fn report_exit(&self, report: &ExitReport) -> Result<ExitReply, LinkError> {
        self.request("exit report", subjects::EXIT, report, EXIT_REPORT_TIMEOUT).await
    }

    async fn cancel_notices(&self, runner_id: &str) -> Result<BoxStream<'static, CancelNotice>, LinkError> {
        let sub = self
            .client
            .subscribe(subjects::runner_cancel(runner_id))
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
        let store = self.js.get_object_store(subjects::CODE_BUCKET).await.map_err(|e| err(&e))?;
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
            .message_id(format!("{}:{}:{first_line}", at.run_id, at.attempt))
            .header(FIRST_LINE_HEADER, first_line.to_string().as_str())
            .header(FENCING_TOKEN_HEADER, at.fencing_token.to_string().as_str());
        let ack = self
            .js
            .send_publish(subjects::log_subject(at.run_id, at.attempt), publish)
            .await
            .map_err(|e| LinkError::new("publish log batch", e))?;
        Ok(Box::pin(async move { ack.await.map(|_| ()).map_err(|e| LinkError::new("log batch ack", e)) }))
    }

    /// Reads every batch the subject holds up to its last message now, keeping
    /// those of this attempt's fencing token.
    async fn published_log(
        &self,
        at: &AttemptRef,
    ) -> Result<BoxStream<'static, Result<(u64, Bytes), LinkError>>, LinkError> {
        use async_nats::jetstream::stream::LastRawMessageErrorKind;
        let err = |e: &dyn std::fmt::Display| LinkError::new("reading the published log", e);
        let subject = subjects::log_subject(at.run_id, at.attempt);
        let stream = self.js.get_stream(subjects::LOGS_STREAM).await.map_err(|e| err(&e))?;
        let last = match stream.get_last_raw_message_by_subject(&subject).await {
            Ok(msg) => msg.sequence,
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => {
                return Ok(futures::stream::empty().boxed());
            }
            Err(e) => return Err(err(&e)),
        };
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: subject,
                deliver_policy: consumer::DeliverPolicy::All,
                ..Default::default()
            })
            .await
            .map_err(|e| err(&e))?;
        let messages = consumer.messages().await.map_err(|e| err(&e))?;
        let token = at.fencing_token.to_string();
        // Ends after the message that was last when we started.
        let batches = futures::stream::unfold((messages, false), move |(mut messages, done)| {
            let token = token.clone();
            async move {
                if done {
                    return None;
                }
                loop {
                    let msg = match messages.next().await {
                        Some(Ok(msg)) => msg,
                        Some(Err(e)) => return Some((Err(err(&e)), (messages, true))),
                        None => {
                            let e = LinkError::new("reading the published log", "ended before its last message");
                            return Some((Err(e), (messages, true)));
                        }
                    };
                    let sequence = match msg.info() {
                        Ok(info) => info.stream_sequence,
                        Err(e) => return Some((Err(err(&e)), (messages, true))),
                    };
                    let header =
                        |name: &str| msg.headers.as_ref().and_then(|h| h.get(name)).map(|v| v.as_str().to_owned());
                    let is_last = sequence >= last;
                    if header(FENCING_TOKEN_HEADER).as_deref() == Some(token.as_str())
                        && let Some(first) = header(FIRST_LINE_HEADER).and_then(|v| v.parse::<u64>().ok())
                    {
                        return Some((Ok((first, msg.payload.clone())), (messages, is_last)));
                    }
                    if is_last {
                        return None;
                    }
                }
            }
        });
        Ok(batches.boxed())
    }

    async fn flush(&self) {
        let _ = self.client.flush().await;
    }
}
