//! The claim loop: with free slots, take as many offers for the runner's pool
//! as there are free slots (at most [`MAX_CLAIM_BATCH`]), ask the control plane
//! to claim them in one exchange, settle every offer either way, and execute
//! what was granted. Up to [`CLAIMS_IN_FLIGHT`] exchanges overlap, so the next
//! fetch does not wait for the previous exchange's reply.

use crate::execution::Executor;
use crate::link::Offer;
use shared::protocol::{AttemptRef, ClaimReply, JobOffer, JobSpec};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

/// Offers claimed in one exchange at most. A runner with many free slots (a backlog)
/// claims about twice as many a second with 256 as with 64 (4,500 against 2,300 on the
/// benchmark machine; BENCHMARKS.md, round 7): each exchange costs a fetch, a
/// request/reply round trip and a transaction nearly whatever its size. A reply that
/// would not fit in a NATS message is cut short by the control plane, and the offers it
/// did not decide come back at once.
pub const MAX_CLAIM_BATCH: usize = 256;

/// Claim exchanges a runner has open at once. With one, the runner waited for each
/// reply before it fetched again; with two, a backlog's next fetch and request overlap
/// the control plane's transaction for the previous one (BENCHMARKS.md, round 8).
pub const CLAIMS_IN_FLIGHT: usize = 2;

/// The claim loop as a service: takes a slot per attempt it starts (the caller waits
/// for all of them to drain).
pub struct Claimer {
    executor: Executor,
    slots: Arc<Semaphore>,
}

impl Claimer {
    pub fn new(executor: Executor, slots: Arc<Semaphore>) -> Self {
        Self { executor, slots }
    }

    /// Claims until `cancel`; returns once the exchanges it opened are settled (so a
    /// granted attempt is started, and holds its slot, before the caller drains).
    pub async fn run(self, cancel: CancellationToken) {
        let mut exchanges = JoinSet::new();
        claim_until_stopped(&self.executor, &self.slots, &cancel, &mut exchanges).await;
        while exchanges.join_next().await.is_some() {}
    }
}

async fn claim_until_stopped(
    executor: &Executor,
    slots: &Arc<Semaphore>,
    stop_claiming: &CancellationToken,
    exchanges: &mut JoinSet<()>,
) {
    let pool = executor.config().pool.clone();
    loop {
        while exchanges.try_join_next().is_some() {}
        if exchanges.len() >= CLAIMS_IN_FLIGHT {
            tokio::select! {
                _ = stop_claiming.cancelled() => return,
                _ = exchanges.join_next() => {}
            }
            continue;
        }
        if !executor.fence().is_live() {
            // Past the fence (or before the first renewal) a claimed job could not
            // run safely: wait until a heartbeat renews the leases.
            tokio::select! {
                _ = stop_claiming.cancelled() => return,
                () = executor.fence().live() => {}
            }
        }
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
            offers = executor.link().next_offers(&pool, permits.len()) => offers,
        };
        let offers = match offers {
            Ok(offers) => offers,
            Err(e) => {
                tracing::warn!(error = %e, "no offers available; retrying");
                drop(permits);
                pause(stop_claiming, Duration::from_secs(1)).await;
                continue;
            }
        };
        let held = executor.attempts().held(offers.iter().map(|o| o.job.run_id).collect()).await;
        let mut fresh = Vec::with_capacity(offers.len());
        for offer in offers {
            if held.contains(&offer.job.run_id) {
                // A redelivery of an attempt this runner already executes.
                offer.handle.ack().await;
            } else {
                fresh.push(offer);
            }
        }
        if !fresh.is_empty() {
            let executor = executor.clone();
            exchanges.spawn(async move { claim(&executor, fresh, permits).await });
        }
    }
}

/// Claims `offers` (one permit each) and starts what was granted.
async fn claim(executor: &Executor, offers: Vec<Offer>, mut permits: Vec<OwnedSemaphorePermit>) {
    let jobs: Vec<JobOffer> = offers.iter().map(|o| o.job.clone()).collect();
    let replies = match executor.link().claim_batch(&executor.config().runner_id, &jobs).await {
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
    for (offer, verdict) in offers.into_iter().zip(verdicts(&jobs, replies)) {
        match verdict {
            Verdict::Start(job) => {
                offer.handle.ack().await;
                match permits.pop() {
                    Some(permit) => start(executor, *job, permit).await,
                    // Cannot happen (one permit per offer); the lease expiry retries the run.
                    None => tracing::error!(run_id = %job.run_id, "granted a claim without a free slot"),
                }
            }
            Verdict::Refused(reason) => {
                tracing::debug!(run_id = %offer.job.run_id, %reason, "claim refused");
                offer.handle.ack().await;
            }
            Verdict::Unasked { run_id, attempt } => {
                // Not what this runner asked for at that place: never started. The offer
                // there was not answered, so it comes back (the claim decides it again).
                tracing::warn!(%run_id, attempt, offered_run_id = %offer.job.run_id, offered_attempt = offer.job.attempt,
                    "claim reply grants a job this runner did not ask for at that place; not starting it");
                offer.handle.retry_later(Duration::from_secs(1)).await;
            }
            // Not decided (the reply would have been too large): offered again at once.
            Verdict::Undecided => offer.handle.retry_later(Duration::ZERO).await,
        }
    }
}

/// What to do with one offer of an exchange, from the reply at its place.
#[derive(Debug)]
enum Verdict {
    Start(Box<JobSpec>),
    Refused(String),
    /// A grant of another attempt than the one offered there (or a second grant of
    /// one already granted in this reply): the runner trusts nothing it did not ask for.
    Unasked {
        run_id: Uuid,
        attempt: i32,
    },
    /// The reply ended before this offer.
    Undecided,
}

/// One verdict per offer, in order: a `Granted` reply is started only when its job is
/// the attempt offered at that place, and only once per reply.
fn verdicts(offers: &[JobOffer], replies: Vec<ClaimReply>) -> Vec<Verdict> {
    let mut granted = HashSet::new();
    let mut replies = replies.into_iter();
    offers
        .iter()
        .map(|offer| match replies.next() {
            None => Verdict::Undecided,
            Some(ClaimReply::Refused { reason }) => Verdict::Refused(reason),
            Some(ClaimReply::Granted { job }) => {
                let asked = job.run_id == offer.run_id && job.attempt == offer.attempt;
                if asked && granted.insert(job.run_id) {
                    Verdict::Start(Box::new(job))
                } else {
                    Verdict::Unasked { run_id: job.run_id, attempt: job.attempt }
                }
            }
        })
        .collect()
}

async fn start(executor: &Executor, job: JobSpec, permit: OwnedSemaphorePermit) {
    let at = AttemptRef { run_id: job.run_id, attempt: job.attempt, fencing_token: job.fencing_token };
    let Some(stop) = executor.attempts().register(at).await else {
        // Granted twice (a redelivery claimed by two exchanges at once): one copy runs.
        tracing::warn!(run_id = %job.run_id, "already executing this run; not starting it again");
        return;
    };
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attempts::Attempts;
    use crate::config::Config;
    use crate::docker::Docker;
    use crate::link::{ControlLink, LinkError, LogAck, OfferHandle};
    use bytes::Bytes;
    use futures::stream::BoxStream;
    use shared::protocol::{CancelNotice, CodeBundleRef, ExitReply, ExitReport, Heartbeat, HeartbeatReply, JobOffer};
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::sync::Notify;

    /// A link with an endless backlog whose claim exchanges stay open until released,
    /// refusing every offer (so nothing is executed).
    #[derive(Default)]
    struct HeldClaims {
        open: AtomicUsize,
        most_open: AtomicUsize,
        exchanges: AtomicUsize,
        release: Notify,
        released: Mutex<bool>,
        acked: AtomicUsize,
        retried: AtomicUsize,
        /// Grant every offer, but with the run's next attempt.
        grant_next_attempt: bool,
    }

    struct Ack(Arc<HeldClaims>);

    #[async_trait::async_trait]
    impl OfferHandle for Ack {
        async fn ack(self: Box<Self>) {
            self.0.acked.fetch_add(1, Ordering::SeqCst);
        }
        async fn retry_later(self: Box<Self>, _delay: Duration) {
            self.0.retried.fetch_add(1, Ordering::SeqCst);
        }
    }

    struct Link(Arc<HeldClaims>);

    fn unused<T>(what: &'static str) -> Result<T, LinkError> {
        Err(LinkError::new(what, "not used by this test"))
    }

    #[async_trait::async_trait]
    impl ControlLink for Link {
        async fn next_offers(&self, _pool: &str, max: usize) -> Result<Vec<Offer>, LinkError> {
            Ok((0..max)
                .map(|_| Offer {
                    job: JobOffer { run_id: uuid::Uuid::new_v4(), attempt: 1 },
                    handle: Box::new(Ack(self.0.clone())),
                })
                .collect())
        }
        async fn claim_batch(&self, _runner_id: &str, offers: &[JobOffer]) -> Result<Vec<ClaimReply>, LinkError> {
            let held = &self.0;
            held.exchanges.fetch_add(1, Ordering::SeqCst);
            let open = held.open.fetch_add(1, Ordering::SeqCst) + 1;
            held.most_open.fetch_max(open, Ordering::SeqCst);
            loop {
                let released = held.release.notified();
                if *held.released.lock().map_err(|_| LinkError::new("test", "poisoned"))? {
                    break;
                }
                released.await;
            }
            held.open.fetch_sub(1, Ordering::SeqCst);
            if held.grant_next_attempt {
                return Ok(offers.iter().map(|o| ClaimReply::Granted { job: job(o.run_id, o.attempt + 1) }).collect());
            }
            Ok(offers.iter().map(|_| ClaimReply::Refused { reason: "test".into() }).collect())
        }
        async fn heartbeat(&self, _beat: &Heartbeat) -> Result<HeartbeatReply, LinkError> {
            unused("heartbeat")
        }
        async fn report_exit(&self, _report: &ExitReport) -> Result<ExitReply, LinkError> {
            unused("exit report")
        }
        async fn cancel_notices(&self, _runner_id: &str) -> Result<BoxStream<'static, CancelNotice>, LinkError> {
            unused("cancel notices")
        }
        async fn fetch_bundle(&self, _code: &CodeBundleRef, _max_bytes: u64) -> Result<Vec<u8>, LinkError> {
            unused("code bundle")
        }
        fn max_log_payload(&self) -> usize {
            1024
        }
        async fn publish_log(&self, _at: &AttemptRef, _first_line: u64, _payload: Bytes) -> Result<LogAck, LinkError> {
            unused("log")
        }
        async fn published_log(
            &self,
            _at: &AttemptRef,
        ) -> Result<BoxStream<'static, Result<(u64, Bytes), LinkError>>, LinkError> {
            unused("published log")
        }
    }

    fn job(run_id: Uuid, attempt: i32) -> JobSpec {
        JobSpec {
            run_id,
            attempt,
            fencing_token: 1,
            pipeline_name: "p".into(),
            image: "busybox".into(),
            command: vec!["true".into()],
            env: Default::default(),
            code: None,
            mount_uv_cache: false,
            timeout_seconds: None,
            resources: Default::default(),
            log_max_bytes: None,
            network: Default::default(),
        }
    }

    fn offer(attempt: i32) -> JobOffer {
        JobOffer { run_id: Uuid::new_v4(), attempt }
    }

    fn granted(o: &JobOffer) -> ClaimReply {
        ClaimReply::Granted { job: job(o.run_id, o.attempt) }
    }

    fn summary(verdicts: &[Verdict]) -> Vec<&'static str> {
        verdicts
            .iter()
            .map(|v| match v {
                Verdict::Start(_) => "start",
                Verdict::Refused(_) => "refused",
                Verdict::Unasked { .. } => "unasked",
                Verdict::Undecided => "undecided",
            })
            .collect()
    }

    #[test]
    fn only_a_grant_of_the_attempt_offered_at_that_place_is_started() {
        let offers = [offer(1), offer(2), offer(1), offer(1), offer(1)];
        let stranger = offer(1);
        let replies = vec![
            granted(&offers[0]),
            // The right run, another attempt.
            ClaimReply::Granted { job: job(offers[1].run_id, 1) },
            // A run this runner never offered.
            granted(&stranger),
            // The first offer again: a duplicate, and not this place's offer.
            granted(&offers[0]),
            ClaimReply::Refused { reason: "claimed".into() },
        ];
        let decided = verdicts(&offers, replies);
        assert_eq!(summary(&decided), ["start", "unasked", "unasked", "unasked", "refused"]);
        match &decided[2] {
            Verdict::Unasked { run_id, .. } => {
                assert_eq!(*run_id, stranger.run_id, "the warning names the granted run")
            }
            other => panic!("{other:?}"),
        }
        // A short reply leaves the rest undecided; extra replies are ignored.
        assert_eq!(summary(&verdicts(&offers[..2], vec![granted(&offers[0])])), ["start", "undecided"]);
        let extra = vec![granted(&offers[0]), granted(&offers[1])];
        assert_eq!(summary(&verdicts(&offers[..1], extra)), ["start"]);
        // The same attempt offered twice (a re-offer fetched beside the first) and granted
        // twice starts once.
        let twice = [offers[0].clone(), offers[0].clone()];
        let both = vec![granted(&offers[0]), granted(&offers[0])];
        assert_eq!(summary(&verdicts(&twice, both)), ["start", "unasked"]);
    }

    /// Through the claim loop: grants that do not match the offers are not started, and
    /// their offers come back.
    #[tokio::test]
    async fn grants_of_jobs_not_offered_at_their_place_are_not_started() {
        let held = Arc::new(HeldClaims { grant_next_attempt: true, released: Mutex::new(true), ..Default::default() });
        let link: Arc<dyn ControlLink> = Arc::new(Link(held.clone()));
        let config = Arc::new(Config::from_source(&|_| None).expect("default config"));
        let docker = Docker::unconnected().expect("a Docker client");
        let attempts = Attempts::new();
        let handle = attempts.handle();
        let fence = crate::fence::Fence::new(config.fence_settings(), None);
        fence.renewed(tokio::time::Instant::now(), Duration::from_secs(3600)).expect("a safe lease");
        let executor = Executor::new(config, docker, link, attempts.handle(), fence);
        let registry = CancellationToken::new();
        tokio::spawn(attempts.run(registry.clone()));
        let _registry = registry.drop_guard();
        let slots = Arc::new(Semaphore::new(4));
        let stop = CancellationToken::new();
        let claiming = tokio::spawn(Claimer::new(executor, slots.clone()).run(stop.clone()));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while held.retried.load(Ordering::SeqCst) < 8 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), claiming).await.expect("the loop returned").expect("no panic");
        assert!(held.retried.load(Ordering::SeqCst) >= 8, "the offers of mismatched grants come back");
        assert_eq!(held.acked.load(Ordering::SeqCst), 0, "no mismatched grant settled its offer");
        assert_eq!(handle.count().await, 0, "nothing was started");
        assert_eq!(slots.available_permits(), 4, "every slot is free again");
    }

    #[tokio::test]
    async fn exchanges_overlap_up_to_the_limit_and_are_settled_before_the_loop_returns() {
        let held = Arc::new(HeldClaims::default());
        let link: Arc<dyn ControlLink> = Arc::new(Link(held.clone()));
        let config = Arc::new(Config::from_source(&|_| None).expect("default config"));
        let docker = Docker::unconnected().expect("a Docker client");
        let attempts = Attempts::new();
        let fence = crate::fence::Fence::new(config.fence_settings(), None);
        fence.renewed(tokio::time::Instant::now(), Duration::from_secs(3600)).expect("a safe lease");
        let executor = Executor::new(config, docker, link, attempts.handle(), fence);
        let registry = CancellationToken::new();
        tokio::spawn(attempts.run(registry.clone()));
        let _registry = registry.drop_guard();
        // Slots for one more full exchange than may be open.
        let all = MAX_CLAIM_BATCH * (CLAIMS_IN_FLIGHT + 1);
        let slots = Arc::new(Semaphore::new(all));
        let stop = CancellationToken::new();
        let claiming = tokio::spawn(Claimer::new(executor, slots.clone()).run(stop.clone()));

        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while held.open.load(Ordering::SeqCst) < CLAIMS_IN_FLIGHT && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(held.open.load(Ordering::SeqCst), CLAIMS_IN_FLIGHT, "the second exchange waited for the first");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(held.most_open.load(Ordering::SeqCst), CLAIMS_IN_FLIGHT, "never more than the limit open");

        // Stopping does not end the loop while its exchanges are open ...
        stop.cancel();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!claiming.is_finished(), "returned with exchanges still open");
        // ... and once they are answered, every offer is settled and every slot is free.
        *held.released.lock().expect("lock") = true;
        held.release.notify_waiters();
        tokio::time::timeout(Duration::from_secs(10), claiming).await.expect("the loop returned").expect("no panic");
        let exchanges = held.exchanges.load(Ordering::SeqCst);
        assert_eq!(
            held.acked.load(Ordering::SeqCst),
            exchanges * MAX_CLAIM_BATCH,
            "every offer of every exchange acked"
        );
        assert_eq!(slots.available_permits(), all, "refused offers give their slots back");
    }
}
