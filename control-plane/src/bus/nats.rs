//! The bus over NATS: streams, job offers, code bundles in the object store,
//! live log batches, and core-NATS notices (cancel, run finished).
//!
//! NATS only delivers; Postgres decides. Every stream and bucket is (re)created
//! idempotently, so a NATS server that lost its store heals on the next sweep.

use super::{Error, RawBatch, StreamBounds};
use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer, object_store, stream};
use bytes::Bytes;
use futures::StreamExt;
use shared::log_batch::{FENCING_TOKEN_HEADER, FIRST_LINE_HEADER};
use shared::nats_settings::NatsSettings;
use shared::protocol::{CancelNotice, CodeBundleRef, JobOffer};
use shared::subjects::Subjects;
use std::time::Duration;
use uuid::Uuid;

/// `have` with `wanted`'s limits (bytes, age, message size, discard policy), if any differ.
fn with_limits(have: &stream::Config, wanted: &stream::Config) -> Option<stream::Config> {
    let same = have.max_bytes == wanted.max_bytes
        && have.max_age == wanted.max_age
        && have.max_message_size == wanted.max_message_size
        && have.discard == wanted.discard;
    (!same).then(|| stream::Config {
        max_bytes: wanted.max_bytes,
        max_age: wanted.max_age,
        max_message_size: wanted.max_message_size,
        discard: wanted.discard,
        ..have.clone()
    })
}

/// NATS's errors leave this module as the seam's `Error::Broker`, boxed: callers
/// above the seam never see a NATS type.
fn nats<E: Into<async_nats::Error>>(context: &'static str) -> impl FnOnce(E) -> Error {
    move |e| Error::Broker { context, source: e.into() }
}

fn nats_err(context: &'static str) -> impl FnOnce(String) -> Error {
    move |e| Error::Broker { context, source: e.into() }
}

#[derive(Clone)]
pub struct NatsBus {
    url: String,
    subjects: Subjects,
    client: async_nats::Client,
    js: jetstream::Context,
    /// The code bucket's handle, kept once looked up: the lookup is a JetStream API round
    /// trip, and `ensure_bundle` runs on every claim. Only a shortcut: when a check through
    /// it fails, `ensure_bundle` takes the full path (look up or create, check, upload).
    code_handle: std::sync::Arc<std::sync::Mutex<Option<object_store::ObjectStore>>>,
    bounds: StreamBounds,
}

/// Largest offer message the jobs stream takes: an offer is a run id and an attempt
/// number in JSON (~70 bytes).
const OFFER_MAX_BYTES: i32 = 4096;

impl NatsBus {
    /// Connects with the credentials of `url` (the control plane is one of the NATS
    /// server's own users), over TLS as `nats` says.
    pub async fn connect(url: &str, settings: &NatsSettings, bounds: StreamBounds) -> Result<NatsBus, Error> {
        let mut options = with_url_credentials(async_nats::ConnectOptions::new(), url);
        if let Some(ca) = &settings.tls_ca {
            if !ca.is_file() {
                return Err(nats_err("NATS_TLS_CA")(format!("{} is not a readable file", ca.display())));
            }
            options = options.require_tls(true).add_root_certificates(ca.clone());
        }
        if let Some((cert, key)) = &settings.tls_client {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        let client = options
            .name("fastflow-control-plane")
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(5))
            .connect(url)
            .await
            .map_err(nats("connect"))?;
        let js = jetstream::new(client.clone());
        let bus = NatsBus {
            url: url.to_owned(),
            subjects: settings.subjects.clone(),
            client,
            js,
            code_handle: Default::default(),
            bounds,
        };
        bus.ensure_streams().await?;
        Ok(bus)
    }

    /// The deployment's NATS names.
    pub fn subjects(&self) -> &Subjects {
        &self.subjects
    }

    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    pub fn describe(&self) -> String {
        format!("nats jetstream at {}", shared::service_url::redact_url(&self.url))
    }

    /// Creates the jobs and logs streams and the code bucket if missing, and gives
    /// each its limits (updating one created with others: `get_or_create` does not).
    pub async fn ensure_streams(&self) -> Result<(), Error> {
        let b = self.bounds;
        self.bounded_stream(stream::Config {
            name: self.subjects.jobs_stream(),
            subjects: vec![self.subjects.jobs_stream_subjects()],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            duplicate_window: Duration::from_secs(120),
            max_bytes: b.jobs_max_bytes,
            // An offer aged out is offered again by the sweeper (`reoffer_stale`).
            max_age: b.jobs_max_age,
            max_message_size: OFFER_MAX_BYTES,
            // Past the bytes an offer is refused (the sweeper re-offers it later), not
            // an older one dropped.
            discard: stream::DiscardPolicy::New,
            ..Default::default()
        })
        .await?;
        self.bounded_stream(stream::Config {
            name: self.subjects.logs_stream(),
            subjects: vec![self.subjects.logs_stream_subjects()],
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            duplicate_window: Duration::from_secs(120),
            // Archived attempts are purged at once, late batches by the sweeper
            // (`runs::purge_late_logs`); the age only bounds leftovers.
            max_age: b.logs_max_age,
            max_bytes: b.logs_max_bytes,
            // The server's `max_payload` bounds a batch; the runner sizes them by it.
            max_message_size: -1,
            // A live log is the only copy until archived: past the bytes the runner's
            // publish fails (it retries, holding the job's output), nothing is dropped.
            discard: stream::DiscardPolicy::New,
            ..Default::default()
        })
        .await?;
        self.code_store().await?;
        self.bound_code_bucket().await?;
        Ok(())
    }

    /// Gets or creates the stream, then updates its limits if they differ from `wanted`'s.
    async fn bounded_stream(&self, wanted: stream::Config) -> Result<(), Error> {
        let stream = self.js.get_or_create_stream(wanted.clone()).await.map_err(nats("create stream"))?;
        if let Some(updated) = with_limits(&stream.cached_info().config, &wanted) {
            self.js.update_stream(updated).await.map_err(nats("update stream limits"))?;
            tracing::info!(stream = %wanted.name, max_bytes = wanted.max_bytes, max_age_secs = wanted.max_age.as_secs(),
                "stream limits updated");
        }
        Ok(())
    }

    /// The code bucket's stream (`OBJ_<bucket>`) with the configured limits.
    async fn bound_code_bucket(&self) -> Result<(), Error> {
        let name = self.subjects.code_stream();
        let stream = self.js.get_stream(&name).await.map_err(nats("get code bucket"))?;
        let have = &stream.cached_info().config;
        let wanted = stream::Config {
            max_bytes: self.bounds.code_max_bytes,
            max_age: self.bounds.code_max_age,
            max_message_size: have.max_message_size,
            // A bundle past the bytes is refused (the claim fails and is retried), not
            // an older one dropped while a runner may be fetching it.
            discard: stream::DiscardPolicy::New,
            ..have.clone()
        };
        if let Some(updated) = with_limits(have, &wanted) {
            self.js.update_stream(updated).await.map_err(nats("update code bucket limits"))?;
            tracing::info!(stream = %name, max_bytes = wanted.max_bytes, max_age_secs = wanted.max_age.as_secs(),
                "stream limits updated");
        }
        Ok(())
    }

    async fn code_store(&self) -> Result<object_store::ObjectStore, Error> {
        let store = match self.js.get_object_store(self.subjects.code_bucket()).await {
            Ok(store) => store,
            Err(_) => self
                .js
                .create_object_store(object_store::Config {
                    bucket: self.subjects.code_bucket(),
                    storage: stream::StorageType::File,
                    max_bytes: self.bounds.code_max_bytes,
                    max_age: self.bounds.code_max_age,
                    ..Default::default()
                })
                .await
                .map_err(nats("create code bucket"))?,
        };
        *self.code_handle.lock().unwrap_or_else(|e| e.into_inner()) = Some(store.clone());
        Ok(store)
    }

    /// Whether a stored bundle is far enough from the bucket's age limit. A bundle
    /// older than half of it is uploaded again, so one in use never ages out under a
    /// runner (`ensure_bundle`).
    fn fresh(&self, info: &object_store::ObjectInfo) -> bool {
        let Some(modified) = info.modified else { return true };
        let age = chrono::Utc::now().timestamp().saturating_sub(modified.unix_timestamp());
        u64::try_from(age).unwrap_or(0) < self.bounds.code_max_age.as_secs() / 2
    }

    /// Offers an attempt to the runners of a pool. The first offer is
    /// de-duplicated by NATS on `run_id:attempt`; a re-offer passes a `nonce` so
    /// the de-duplication window does not swallow it (extra offers are harmless:
    /// the claim succeeds once).
    pub async fn offer(&self, pool: &str, run_id: Uuid, attempt: i32, nonce: Option<&str>) -> Result<(), Error> {
        let payload = serde_json::to_vec(&JobOffer { run_id, attempt }).map_err(nats("encode offer"))?;
        let publish = jetstream::message::PublishMessage::build().payload(payload.into()).message_id(match nonce {
            None => shared::subjects::offer_msg_id(run_id, attempt),
            Some(nonce) => format!("{}:{nonce}", shared::subjects::offer_msg_id(run_id, attempt)),
        });
        self.js
            .send_publish(self.subjects.job_offer(pool, run_id), publish)
            .await
            .map_err(nats("publish offer"))?
            .await
            .map_err(nats("offer acknowledgement"))?;
        Ok(())
    }

    /// Whether the jobs stream still holds an offer for this run.
    pub async fn has_offer(&self, pool: &str, run_id: Uuid) -> Result<bool, Error> {
        use async_nats::jetstream::stream::LastRawMessageErrorKind;
        let stream = self.js.get_stream(self.subjects.jobs_stream()).await.map_err(nats("get jobs stream"))?;
        match stream.get_last_raw_message_by_subject(&self.subjects.job_offer(pool, run_id)).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(false),
            Err(e) => Err(nats("look up offer")(e)),
        }
    }

    /// Makes sure runners can fetch this bundle; `load` supplies the bytes
    /// (from Postgres) only when the object store lacks it.
    pub async fn ensure_bundle<F, Fut>(&self, code: &CodeBundleRef, load: F) -> Result<bool, Error>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Option<Vec<u8>>>,
    {
        let cached = self.code_handle.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(store) = cached
            && let Ok(info) = store.info(&code.digest).await
            && self.fresh(&info)
        {
            return Ok(true);
        }
        let store = self.code_store().await?;
        let stored = store.info(&code.digest).await.ok();
        if stored.as_ref().is_some_and(|info| self.fresh(info)) {
            return Ok(true);
        }
        let Some(data) = load().await else { return Ok(stored.is_some()) };
        store.put(code.digest.as_str(), &mut data.as_slice()).await.map_err(nats("upload code bundle"))?;
        Ok(true)
    }

    /// Tells the runner holding an attempt to stop it (best effort; heartbeats repeat it).
    pub async fn notify_cancel(&self, runner_id: &str, notice: &CancelNotice) -> Result<(), Error> {
        let payload = serde_json::to_vec(notice).map_err(nats("encode cancel"))?;
        self.client
            .publish(self.subjects.runner_cancel(runner_id), payload.into())
            .await
            .map_err(nats("publish cancel"))
    }

    /// Wakes every log stream following this run (best effort; they also poll).
    pub async fn notify_finished(&self, run_id: Uuid) {
        if let Err(e) = self.client.publish(self.subjects.run_finished(run_id), bytes::Bytes::new()).await {
            tracing::warn!(%run_id, error = %e, "could not publish run-finished event");
        }
    }

    pub async fn purge_log(&self, run_id: Uuid, attempt: i32) -> Result<(), Error> {
        let stream = self.js.get_stream(self.subjects.logs_stream()).await.map_err(nats("get logs stream"))?;
        stream
            .purge()
            .filter(self.subjects.log_subjects_of_attempt(run_id, attempt))
            .await
            .map_err(nats("purge log"))?;
        Ok(())
    }

    /// Purges the live log subjects of these (ended) attempts that hold a message: one
    /// listing of the stream's subjects, then one purge per subject found.
    pub async fn purge_logs_present(&self, attempts: &[(Uuid, i32)]) -> Result<usize, Error> {
        if attempts.is_empty() {
            return Ok(0);
        }
        let stream = self.js.get_stream(self.subjects.logs_stream()).await.map_err(nats("get logs stream"))?;
        // Subjects end in the publishing runner's id: what is kept is the attempt's part.
        let mut present = std::collections::HashSet::new();
        let mut listed =
            stream.info_with_subjects(self.subjects.logs_stream_subjects()).await.map_err(nats("list log subjects"))?;
        while let Some(subject) = listed.next().await {
            let subject = subject.map_err(nats("list log subjects"))?.0;
            if let Some((attempt_part, _runner)) = subject.rsplit_once('.') {
                present.insert(attempt_part.to_owned());
            }
        }
        let mut purged = 0;
        for &(run_id, attempt) in attempts {
            let filter = self.subjects.log_subjects_of_attempt(run_id, attempt);
            if present.contains(filter.trim_end_matches(".*")) {
                stream.purge().filter(filter).await.map_err(nats("purge log"))?;
                purged += 1;
            }
        }
        Ok(purged)
    }

    pub async fn health(&self) -> Result<(), Error> {
        tokio::time::timeout(Duration::from_secs(2), self.client.flush())
            .await
            .map_err(nats("flush"))?
            .map_err(nats("flush"))
    }

    pub async fn finished_events(&self, run_id: Uuid) -> Result<FinishedEvents, Error> {
        let subscriber =
            self.client.subscribe(self.subjects.run_finished(run_id)).await.map_err(nats("subscribe to run events"))?;
        Ok(FinishedEvents { subscriber })
    }

    pub async fn log_cursor(&self, run_id: Uuid, attempt: i32) -> Result<LogCursor, Error> {
        let stream = self.js.get_stream(self.subjects.logs_stream()).await.map_err(nats("get logs stream"))?;
        Ok(LogCursor {
            stream,
            subject: self.subjects.log_subjects_of_attempt(run_id, attempt),
            next_seq: 1,
            gets: 0,
            streaming: None,
        })
    }

    /// An ordered consumer from the start of the subject (ephemeral: the server
    /// drops it when the reader goes away).
    pub async fn follow_log(&self, run_id: Uuid, attempt: i32) -> Result<LogFollower, Error> {
        let stream = self.js.get_stream(self.subjects.logs_stream()).await.map_err(nats("get logs stream"))?;
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: self.subjects.log_subjects_of_attempt(run_id, attempt),
                deliver_policy: consumer::DeliverPolicy::All,
                max_batch: FOLLOW_BATCH,
                ..Default::default()
            })
            .await
            .map_err(nats("follow log"))?;
        Ok(LogFollower(consumer.messages().await.map_err(nats("follow log"))?))
    }
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

fn raw_batch(headers: Option<&HeaderMap>, payload: Bytes) -> RawBatch {
    let header = |name: &str| headers.and_then(|h| h.get(name)).map(|v| v.as_str().to_owned());
    RawBatch {
        first_line: header(FIRST_LINE_HEADER).and_then(|v| v.parse().ok()),
        token: header(FENCING_TOKEN_HEADER).and_then(|v| v.parse().ok()),
        payload,
    }
}

/// Messages an SSE follower's consumer asks for at once. The client asks again when half
/// are delivered, so up to 1.5 × this many batches (each ≤ 64 KiB) wait in the control
/// plane for a slow client: ~3 MiB per follower, where the client's default (500) allowed
/// ~48 MiB. A pull request is one round trip per 16 messages, well inside the 10 ms batch
/// window of a busy log.
const FOLLOW_BATCH: i64 = 32;

/// Messages a cursor reads one request each before it streams the rest through a
/// consumer: most logs are a batch or two, for which creating a consumer costs more
/// than it saves; a long log (a GiB is ~16,000 batches) is read with many messages in
/// flight instead of one round trip each.
const GETS_BEFORE_STREAMING: u32 = 8;
/// Messages a streaming cursor asks for at once (each at most a 64 KiB batch), which
/// bounds what the control plane buffers per archive.
const STREAMING_BATCH: i64 = 32;
/// How long a streaming cursor waits for a message the server said is pending before it
/// goes back to single reads from where it is (a consumer that stalls costs this, not the
/// archive: one benchmark archive of 1 GiB once took ~40 s longer than the others).
const STREAMING_PATIENCE: Duration = Duration::from_secs(2);

/// Run-finished events of one run (a core NATS subscription).
pub struct FinishedEvents {
    subscriber: async_nats::Subscriber,
}

impl FinishedEvents {
    /// Resolves when the run finished; never, once the subscription ended
    /// (callers also re-check the run).
    pub async fn next(&mut self) {
        if self.subscriber.next().await.is_none() {
            std::future::pending::<()>().await;
        }
    }
}

/// Reads a subject's messages in stream order: the first few with one `MSG.GET` each
/// (answered by the stream leader, so nothing stored is missed), the rest through an
/// ordered consumer (also served by the leader) up to the subject's last message when the
/// consumer was made; a later call reads on one message at a time, so it sees later ones.
pub struct LogCursor {
    stream: stream::Stream,
    subject: String,
    next_seq: u64,
    gets: u32,
    /// The consumer, and the subject's last sequence when it was created (where it stops).
    streaming: Option<(consumer::pull::Ordered, u64)>,
}

impl LogCursor {
    /// The next stored batch, or `None` once everything stored so far was read (a later
    /// call sees what was stored since).
    pub async fn next_batch(&mut self) -> Result<Option<RawBatch>, Error> {
        if self.streaming.is_none() && self.gets >= GETS_BEFORE_STREAMING {
            self.streaming = start_streaming(&self.stream, &self.subject, self.next_seq).await?;
            if self.streaming.is_none() {
                // Nothing to stream by the consumer's count: a single read decides (it is
                // answered by the leader from the store itself, so it is never behind).
                self.gets = 0;
            }
        }
        if let Some((messages, last_seq)) = &mut self.streaming {
            match next_streamed(messages, *last_seq, &mut self.next_seq).await? {
                Some(batch) => {
                    if batch.is_last {
                        // Back to single reads: a later call asks the server afresh.
                        self.streaming = None;
                        self.gets = 0;
                    }
                    return Ok(Some(batch.raw));
                }
                None => {
                    tracing::warn!(subject = %self.subject, next_seq = self.next_seq, "log consumer stalled; reading on one message at a time");
                    self.streaming = None;
                    self.gets = 0;
                }
            }
        }
        self.next_by_get().await
    }

    async fn next_by_get(&mut self) -> Result<Option<RawBatch>, Error> {
        use stream::LastRawMessageErrorKind;
        let msg = self
            .stream
            .raw_message_builder()
            .sequence(self.next_seq)
            .next_by_subject(self.subject.clone())
            .send()
            .await;
        let msg = match msg {
            Ok(msg) => msg,
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => return Ok(None),
            Err(e) => return Err(nats("read log")(e)),
        };
        self.next_seq = msg.sequence + 1;
        self.gets += 1;
        Ok(Some(raw_batch(Some(&msg.headers), msg.payload)))
    }
}

/// An ordered consumer of `subject` from `next_seq` with the subject's last sequence
/// now, or `None` when nothing is stored from there. (Free functions, not methods: the
/// cursor holds the consumer, which is not `Sync`, so a `&self` must not live across an
/// await.)
async fn start_streaming(
    stream: &stream::Stream,
    subject: &str,
    next_seq: u64,
) -> Result<Option<(consumer::pull::Ordered, u64)>, Error> {
    use stream::LastRawMessageErrorKind;
    // The end is read first, so the snapshot stops there without waiting: the consumer's
    // pending count alone was seen to stay above zero after the last message.
    let last_seq = match stream.raw_message_builder().last_by_subject(subject.to_owned()).send().await {
        Ok(msg) => msg.sequence,
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => return Ok(None),
        Err(e) => return Err(nats("read log")(e)),
    };
    if last_seq < next_seq {
        return Ok(None);
    }
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: subject.to_owned(),
            deliver_policy: consumer::DeliverPolicy::ByStartSequence { start_sequence: next_seq },
            max_batch: STREAMING_BATCH,
            ..Default::default()
        })
        .await
        .map_err(nats("stream log"))?;
    if consumer.cached_info().num_pending == 0 {
        return Ok(None);
    }
    Ok(Some((consumer.messages().await.map_err(nats("stream log"))?, last_seq)))
}

/// The next streamed message; `None` if none came within [`STREAMING_PATIENCE`] although
/// the server said some are pending.
async fn next_streamed(
    messages: &mut consumer::pull::Ordered,
    last_seq: u64,
    next_seq: &mut u64,
) -> Result<Option<Streamed>, Error> {
    let Ok(next) = tokio::time::timeout(STREAMING_PATIENCE, messages.next()).await else { return Ok(None) };
    let msg = match next {
        Some(Ok(msg)) => msg,
        Some(Err(e)) => return Err(nats("stream log")(e)),
        None => return Err(nats("stream log")("the consumer ended early")),
    };
    let info = msg.info().map_err(nats("stream log"))?;
    *next_seq = info.stream_sequence + 1;
    let is_last = info.pending == 0 || info.stream_sequence >= last_seq;
    Ok(Some(Streamed { raw: raw_batch(msg.headers.as_ref(), msg.payload.clone()), is_last }))
}

struct Streamed {
    raw: RawBatch,
    /// The end of the snapshot: the subject's last sequence when the consumer was made, or
    /// nothing more stored when the server sent it.
    is_last: bool,
}

pub struct LogFollower(consumer::pull::Ordered);

impl LogFollower {
    pub async fn next(&mut self) -> Option<Result<RawBatch, Error>> {
        match self.0.next().await? {
            Ok(msg) => Some(Ok(raw_batch(msg.headers.as_ref(), msg.payload.clone()))),
            Err(e) => Some(Err(nats("follow log")(e))),
        }
    }
}
