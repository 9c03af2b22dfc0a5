//! `/api/v1/runs/{id}/logs` (plain text) and `/logs/stream` (SSE).
//!
//! Any replica serves any run: a running attempt is followed in JetStream, a
//! finished one is read from its archive. The SSE event id is the line number,
//! so a client reconnecting with `Last-Event-ID` misses and repeats nothing.

use super::authn::Caller;
use super::error::Error;
use super::extract::{self, QueryMap, RunId};
use super::routing::ApiRouter;
use super::runs::RunResponse;
use super::stream_slots::StreamSlots;
use crate::bus::FinishedEvents;
use crate::context::Context;
use crate::logs::LogLine;
use crate::logs::archived::ArchiveReader;
use crate::logs::live::{self, SnapshotReader};
use crate::store::runs::Run;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use shared::RunStatus;
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How often a follower re-reads the run in case a finished event was missed.
const STATUS_POLL: Duration = Duration::from_secs(3);
/// How often a follower of a queued run reads it again: first after 50 ms, doubling to 500 ms.
const QUEUED_POLL_FIRST: Duration = Duration::from_millis(50);
const QUEUED_POLL_MAX: Duration = Duration::from_millis(500);

pub fn router() -> ApiRouter {
    ApiRouter::new().get("/api/v1/runs/{id}/logs", text).get("/api/v1/runs/{id}/logs/stream", stream)
}

async fn load(app: &Context, id: uuid::Uuid) -> Result<Run, Error> {
    let run = app.store.get_run(id).await?.ok_or_else(|| Error::not_found(format!("run {id} not found")))?;
    if let Some(at) = run.log_expired_at {
        return Err(Error::LogExpired {
            message: format!("the log of run {id} was deleted by the retention policy"),
            expired_at: at,
        });
    }
    Ok(run)
}

/// `?attempt=N` picks an earlier attempt's log; the default is the current one.
async fn text(State(app): State<Context>, RunId(id): RunId, QueryMap(query): QueryMap) -> Result<Response, Error> {
    let run = load(&app, id).await?;
    let attempt = match query.get("attempt") {
        None => run.attempt,
        Some(raw) => raw
            .parse::<i32>()
            .ok()
            .filter(|a| (1..=run.attempt).contains(a))
            .ok_or_else(|| Error::invalid("attempt", format!("attempt must be from 1 to {}", run.attempt)))?,
    };
    let log_key =
        if attempt == run.attempt { run.log_key.clone() } else { earlier_log_key(&app, run.id, attempt).await? };
    let body = match (&log_key, run.status) {
        _ if attempt < run.attempt && log_key.is_none() => Body::empty(),
        (Some(key), _) => {
            let reader = app.objects.get_stream(key, 0).await.map_err(Error::internal)?;
            Body::from_stream(futures::stream::try_unfold(reader, |mut r| async move {
                Ok::<_, crate::object_store::Error>(r.next_chunk().await?.map(|chunk| (chunk, r)))
            }))
        }
        (None, RunStatus::Queued) => Body::empty(),
        (None, _) => {
            let reader = SnapshotReader::open(&app.bus, run.id, run.attempt, run.fencing_token)
                .await
                .map_err(Error::internal)?;
            Body::from_stream(futures::stream::try_unfold(reader, |mut r| async move {
                let lines = r.next_lines().await?;
                Ok::<_, live::Error>(lines.map(|lines| (join(&lines), r)))
            }))
        }
    };
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response())
}

/// Where an earlier (finished) attempt's log was archived.
async fn earlier_log_key(
    app: &Context,
    run_id: uuid::Uuid,
    attempt: i32,
) -> Result<Option<String>, crate::store::Error> {
    Ok(app.store.attempts(run_id).await?.into_iter().find(|a| a.attempt == attempt).and_then(|a| a.log_key))
}

fn join(lines: &[LogLine]) -> Bytes {
    let mut out = Vec::with_capacity(lines.iter().map(|l| l.bytes.len()).sum());
    for line in lines {
        out.extend_from_slice(&line.bytes);
    }
    out.into()
}

async fn stream(
    State(app): State<Context>,
    State(slots): State<StreamSlots>,
    Caller(caller): Caller,
    RunId(id): RunId,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, Error> {
    let run = load(&app, id).await?;
    let (attempt, last) = extract::last_event_id(&headers)?;
    // Held by the follower task: freed when the client goes (or the stream ends).
    let slot = slots.take(caller.user_id)?;
    let (tx, rx) = mpsc::channel::<Event>(256);
    // Resolves when the client has gone (the response body, and the receiver with it,
    // dropped), even while a quiet job gives the follower nothing to send.
    let gone = tx.clone();
    let task_app = app.clone();
    // Ends on shutdown (the client reconnects to another replica with
    // `Last-Event-ID`), so the server's graceful shutdown is not held by it.
    app.spawn(async move {
        let _slot = slot;
        let app = task_app;
        let run_id = run.id;
        let shutdown = app.shutdown.clone();
        let limiter = app.config.log_stream_rate.map(RateLimiter::new);
        let mut follower = Follower { app, tx, attempt, next_line: last + 1, limiter, queued_pause: QUEUED_POLL_FIRST };
        let followed = tokio::select! {
            _ = shutdown.cancelled() => return,
            () = gone.closed() => return,
            followed = follower.follow(run) => followed,
        };
        if let Err(e) = followed {
            tracing::warn!(%run_id, error = %e, "log stream ended with an error");
            let data = serde_json::json!({ "message": e.to_string() }).to_string();
            let _ = follower.tx.send(Event::default().event("error").data(data)).await;
        }
    });
    let events = ReceiverStream::new(rx).map(Ok);
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive")))
}

#[derive(Debug, thiserror::Error)]
enum FollowError {
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    #[error(transparent)]
    Live(#[from] live::Error),
    #[error(transparent)]
    Archive(#[from] crate::logs::archived::Error),
    #[error("run disappeared")]
    Gone,
}

/// The client went away: stop quietly.
struct Disconnected;

/// Streams a run's attempts in order: finished ones from their archives, then
/// the current one live. Event ids are the line number for attempt 1 and
/// `<attempt>:<line>` after it, so `Last-Event-ID` resumes in the right attempt.
struct Follower {
    app: Context,
    tx: mpsc::Sender<Event>,
    attempt: i32,
    next_line: u64,
    limiter: Option<RateLimiter>,
    /// The next pause while the run is queued (`wait_queued`); reset once it is not.
    queued_pause: Duration,
}

/// At most `rate` lines a second to one client (bursts of up to one second's
/// worth): a fast job does not flood a slow browser; lines arrive later, none is lost.
struct RateLimiter {
    rate: f64,
    tokens: f64,
    refilled: tokio::time::Instant,
}

impl RateLimiter {
    fn new(rate: u32) -> RateLimiter {
        RateLimiter { rate: f64::from(rate), tokens: f64::from(rate), refilled: tokio::time::Instant::now() }
    }

    async fn take(&mut self) {
        let now = tokio::time::Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.refilled).as_secs_f64() * self.rate).min(self.rate);
        self.refilled = now;
        if self.tokens < 1.0 {
            let wait = Duration::from_secs_f64((1.0 - self.tokens) / self.rate);
            tokio::time::sleep(wait).await;
            self.tokens = 1.0;
            self.refilled = tokio::time::Instant::now();
        }
        self.tokens -= 1.0;
    }
}

impl Follower {
    async fn follow(&mut self, run: Run) -> Result<(), FollowError> {
        // Subscribe before re-reading the run, so a finish in between is not missed.
        let mut finished = self.app.bus.finished_events(run.id).await.map_err(live::Error::from)?;
        let mut run = self.reload(&run).await?;
        loop {
            if self.attempt < run.attempt {
                if self.earlier_attempt(&run).await.is_err() {
                    return Ok(());
                }
                continue;
            }
            if run.status != RunStatus::Queued {
                self.queued_pause = QUEUED_POLL_FIRST;
            }
            let step = match run.status {
                s if s.is_final() => return self.finish(&run).await,
                RunStatus::Queued => self.wait_queued(&mut finished).await,
                _ => self.follow_live(&run, &mut finished).await?,
            };
            if step.is_err() {
                return Ok(());
            }
            run = self.reload(&run).await?;
        }
    }

    /// Sends the rest of a finished earlier attempt, then an `attempt` event
    /// announcing the next one.
    async fn earlier_attempt(&mut self, run: &Run) -> Result<(), Disconnected> {
        let key = earlier_log_key(&self.app, run.id, self.attempt).await.ok().flatten();
        if let Some(key) = key {
            match ArchiveReader::open(&self.app.objects, &key, run.id, self.attempt, self.next_line).await {
                Ok(mut reader) => {
                    while let Ok(Some(line)) = reader.next_line().await {
                        self.send_lines(vec![line]).await?;
                    }
                }
                Err(e) => {
                    tracing::warn!(run_id = %run.id, attempt = self.attempt, error = %e, "earlier attempt's log unreadable")
                }
            }
        }
        self.attempt += 1;
        self.next_line = 1;
        let data = serde_json::json!({ "attempt": self.attempt }).to_string();
        self.tx.send(Event::default().event("attempt").data(data)).await.map_err(|_| Disconnected)
    }

    async fn reload(&self, run: &Run) -> Result<Run, FollowError> {
        self.app.store.get_run(run.id).await?.ok_or(FollowError::Gone)
    }

    /// Waits a little before the run is read again. Nothing announces a start, so the
    /// pause grows from 50 ms to 500 ms: a run claimed right after its trigger (the usual
    /// case) shows its first lines within ~50–100 ms, and a run that waits long costs
    /// two reads a second per follower.
    async fn wait_queued(&mut self, finished: &mut FinishedEvents) -> Result<(), Disconnected> {
        let pause = self.queued_pause;
        self.queued_pause = (pause * 2).min(QUEUED_POLL_MAX);
        tokio::select! {
            _ = finished.next() => Ok(()),
            _ = tokio::time::sleep(pause) => Ok(()),
            _ = self.tx.closed() => Err(Disconnected),
        }
    }

    /// Streams the running attempt until it ends (or its state changes).
    async fn follow_live(
        &mut self,
        run: &Run,
        finished: &mut FinishedEvents,
    ) -> Result<Result<(), Disconnected>, FollowError> {
        let mut batches = self.app.bus.follow_log(run.id, run.attempt).await.map_err(live::Error::from)?;
        let mut poll = tokio::time::interval(STATUS_POLL);
        poll.tick().await;
        loop {
            tokio::select! {
                batch = batches.next() => match batch {
                    Some(Ok(batch)) => {
                        let lines = live::decode_batch(&batch, run.fencing_token);
                        if self.send_lines(lines).await.is_err() {
                            return Ok(Err(Disconnected));
                        }
                    }
                    Some(Err(e)) => {
                        tracing::debug!(run_id = %run.id, error = %e, "live log follower interrupted; resuming");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        return Ok(Ok(()));
                    }
                    None => return Ok(Ok(())),
                },
                _ = finished.next() => return Ok(Ok(())),
                _ = poll.tick() => {
                    let now = self.reload(run).await?;
                    if now.status != RunStatus::Running || now.fencing_token != run.fencing_token {
                        return Ok(Ok(()));
                    }
                }
                _ = self.tx.closed() => return Ok(Err(Disconnected)),
            }
        }
    }

    /// Sends the rest of a final run's log from its archive, then `end`.
    async fn finish(&mut self, run: &Run) -> Result<(), FollowError> {
        if let Some(key) = &run.log_key {
            let mut reader = ArchiveReader::open(&self.app.objects, key, run.id, run.attempt, self.next_line).await?;
            while let Some(line) = reader.next_line().await? {
                if self.send_lines(vec![line]).await.is_err() {
                    return Ok(());
                }
            }
        } else if run.started_at.is_some() {
            // Final without an archive (its runner was lost and archiving failed): what NATS still has.
            let mut reader = SnapshotReader::open(&self.app.bus, run.id, run.attempt, run.fencing_token).await?;
            while let Some(lines) = reader.next_lines().await? {
                if self.send_lines(lines).await.is_err() {
                    return Ok(());
                }
            }
        }
        let data = serde_json::to_string(&RunResponse::from(run.clone())).unwrap_or_default();
        let _ = self.tx.send(Event::default().event("end").data(data)).await;
        Ok(())
    }

    async fn send_lines(&mut self, lines: Vec<LogLine>) -> Result<(), Disconnected> {
        for line in lines {
            if line.number < self.next_line {
                continue;
            }
            if let Some(limiter) = &mut self.limiter {
                limiter.take().await;
            }
            let id =
                if self.attempt == 1 { line.number.to_string() } else { format!("{}:{}", self.attempt, line.number) };
            let event = Event::default().event("log").id(id).data(line_json(&line));
            self.tx.send(event).await.map_err(|_| Disconnected)?;
            self.next_line = line.number + 1;
        }
        Ok(())
    }
}

fn line_json(line: &LogLine) -> String {
    let mut bytes: &[u8] = &line.bytes;
    if let Some(rest) = bytes.strip_suffix(b"\n") {
        bytes = rest.strip_suffix(b"\r").unwrap_or(rest);
    }
    let ts = chrono::DateTime::from_timestamp_millis(line.ts_ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    serde_json::json!({ "line": String::from_utf8_lossy(bytes), "stream": line.stream, "ts": ts }).to_string()
}
