//! Runs and their status transitions. Every transition is one statement guarded
//! by the state it expects (`where status = …`), so concurrent replicas and
//! stale runners can never move a run backwards or twice. The SQL is in the
//! backends (`postgres/`, `sqlite/`), the policy they share in `policy.rs`;
//! these methods say what each one guarantees, on both.

pub use super::policy::{Trigger, WaitingReason};
use super::{Error, Store, dispatch};
use chrono::{DateTime, Utc};
use serde::Serialize;
use shared::protocol::AttemptRef;
use shared::{FailureReason, RunStatus};
use std::time::Duration;
use uuid::Uuid;

/// A run as stored; serialises to the public JSON shape.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Run {
    pub id: Uuid,
    pub pipeline_name: String,
    /// The runner pool the run goes to.
    pub pool: String,
    pub status: RunStatus,
    pub attempt: i32,
    pub trigger: Trigger,
    /// Who triggered the run (`user:<name>`, `token:<name>`, later `schedule:…`,
    /// `webhook:…`); `None` for runs from before authentication.
    pub triggered_by: Option<String>,
    pub params: serde_json::Value,
    pub runner_id: Option<String>,
    pub exit_code: Option<i64>,
    pub failure_reason: Option<FailureReason>,
    pub error_message: Option<String>,
    pub cancel_requested_at: Option<DateTime<Utc>>,
    /// Why a queued run has not started yet (e.g. a concurrency limit).
    pub waiting_reason: Option<WaitingReason>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub log_size_bytes: i64,
    /// When the retention sweeper deleted the archived log.
    pub log_expired_at: Option<DateTime<Utc>>,
    #[serde(skip)]
    pub spec: serde_json::Value,
    #[serde(skip)]
    pub fencing_token: i64,
    #[serde(skip)]
    pub cancel_force: bool,
    #[serde(skip)]
    pub log_key: Option<String>,
}

impl Run {
    pub fn attempt_ref(&self) -> AttemptRef {
        AttemptRef { run_id: self.id, attempt: self.attempt, fencing_token: self.fencing_token }
    }
}

pub struct NewRun<'a> {
    pub id: Uuid,
    pub pipeline_name: &'a str,
    pub pool: &'a str,
    pub params: serde_json::Value,
    pub spec: serde_json::Value,
    /// The job template's timeout, in its own column so that SQL never reads the
    /// template's JSON (overdue runs).
    pub timeout_seconds: Option<i64>,
    /// Who triggered it (see [`Run::triggered_by`]).
    pub triggered_by: Option<&'a str>,
}

#[derive(Debug, Default)]
pub struct RunFilter {
    pub pipeline: Option<String>,
    pub status: Option<RunStatus>,
    /// Keyset position: runs strictly older than this (created_at, id).
    pub before: Option<(DateTime<Utc>, Uuid)>,
    pub limit: i64,
}

/// How an attempt ended, as decided from the runner's report.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub status: RunStatus,
    pub reason: Option<FailureReason>,
    pub exit_code: Option<i64>,
    pub error_message: Option<String>,
}

/// Where an attempt's archived log lives.
#[derive(Debug, Clone)]
pub struct ArchivedLog {
    pub key: String,
    pub size: i64,
}

pub struct Claim<'a> {
    pub run_id: Uuid,
    pub attempt: i32,
    pub runner_id: &'a str,
    pub pipeline_name: &'a str,
    pub lease: Duration,
    pub max_running: Option<i64>,
    pub max_running_of_pipeline: Option<i64>,
}

impl Claim<'_> {
    /// A concurrency limit applies, so the claim must see an exact count of running runs.
    pub fn is_limited(&self) -> bool {
        self.max_running.is_some() || self.max_running_of_pipeline.is_some()
    }
}

pub enum ClaimResult {
    Granted(Box<Run>),
    /// A concurrency limit is reached; the run stays queued with this reason.
    Waiting(WaitingReason),
    /// The attempt is no longer queued.
    Gone,
}

/// An ended attempt in the order `ended_attempts` lists them (end time, run, attempt);
/// the last one listed is where the next listing continues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndedAttempt {
    pub run_id: Uuid,
    pub attempt: i32,
    pub finished_at: DateTime<Utc>,
}

/// One finished attempt, as listed in a run's `attempts`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttemptRecord {
    pub attempt: i32,
    /// Final when recorded; the API also shows the current attempt, queued or running.
    pub status: RunStatus,
    pub failure_reason: Option<FailureReason>,
    pub exit_code: Option<i64>,
    pub error_message: Option<String>,
    pub runner_id: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    #[serde(skip)]
    pub log_key: Option<String>,
    pub log_size_bytes: i64,
}

/// A lease renewal's answer for one attempt.
pub struct LeaseState {
    pub attempt: AttemptRef,
    pub cancel_requested: bool,
    pub cancel_force: bool,
}

impl Store {
    pub async fn insert_run(&self, new: NewRun<'_>) -> Result<Run, Error> {
        dispatch!(self.insert_run(new))
    }

    pub async fn get_run(&self, id: Uuid) -> Result<Option<Run>, Error> {
        dispatch!(self.get_run(id))
    }

    /// Newest first, keyset-paginated on (created_at, id). The runs' `spec` is not
    /// loaded (`null`): a listing never needs the job template.
    pub async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<Run>, Error> {
        dispatch!(self.list_runs(filter))
    }

    /// These runs (any order; unknown ids are left out).
    pub async fn get_runs(&self, ids: &[Uuid]) -> Result<Vec<Run>, Error> {
        dispatch!(self.get_runs(ids))
    }

    /// Claims, in one transaction (one commit), results in their order. A claim
    /// succeeds for exactly one caller while the attempt is queued, not backing
    /// off, and the concurrency limits leave room (`policy.rs`), handing out a
    /// fresh fencing token and a lease. Claims under a limit are serialised
    /// (Postgres: a transaction-scoped advisory lock; SQLite: the single writer
    /// connection) so two replicas cannot both take the last free slot.
    pub async fn claim_batch(&self, claims: &[Claim<'_>]) -> Result<Vec<ClaimResult>, Error> {
        dispatch!(self.claim_batch(claims))
    }

    /// Runs executing or waiting now, overall and of one pipeline.
    pub async fn count_active(&self, pipeline_name: &str) -> Result<(i64, i64), Error> {
        dispatch!(self.count_active(pipeline_name))
    }

    /// Queued runs held back by a concurrency limit, oldest first.
    pub async fn waiting_runs(&self, limit: i64) -> Result<Vec<(Uuid, i32, String)>, Error> {
        dispatch!(self.waiting_runs(limit))
    }

    /// Extends the leases of the attempts a runner still holds; attempts it no
    /// longer holds are simply absent from the answer.
    pub async fn renew_leases(
        &self,
        runner_id: &str,
        held: &[AttemptRef],
        lease: Duration,
    ) -> Result<Vec<LeaseState>, Error> {
        if held.is_empty() {
            return Ok(Vec::new());
        }
        dispatch!(self.renew_leases(runner_id, held, lease))
    }

    /// Ends a running attempt held with this token: records it in
    /// `run_attempts`, then either finalises the run or, with `retry_after`,
    /// queues the next attempt to start no earlier than that. All of it happens
    /// atomically, or nothing at all (stale token, not running).
    pub async fn end_attempt(
        &self,
        at: &AttemptRef,
        outcome: &Outcome,
        log: Option<&ArchivedLog>,
        retry_after: Option<Duration>,
    ) -> Result<Option<Run>, Error> {
        dispatch!(self.end_attempt(at, outcome, log, retry_after))
    }

    /// The finished attempts of a run, oldest first.
    pub async fn attempts(&self, run_id: Uuid) -> Result<Vec<AttemptRecord>, Error> {
        dispatch!(self.attempts(run_id))
    }

    /// Cancels a run that no runner holds yet; it will never start.
    pub async fn cancel_queued(&self, id: Uuid) -> Result<Option<Run>, Error> {
        dispatch!(self.cancel_queued(id))
    }

    /// Marks a running run for cancellation; its runner stops it and reports.
    pub async fn request_cancel(&self, id: Uuid, force: bool) -> Result<Option<Run>, Error> {
        dispatch!(self.request_cancel(id, force))
    }

    /// Queued runs created before `older_than` ago and not in a retry
    /// back-off: candidates for a re-offer.
    pub async fn stale_queued(&self, older_than: Duration, limit: i64) -> Result<Vec<(Uuid, i32, String)>, Error> {
        dispatch!(self.stale_queued(older_than, limit))
    }

    /// Running attempts that outlived their timeout by more than `slack`: their
    /// runner did not stop them (frozen, or cut off but still renewing).
    pub async fn overdue_runs(&self, slack: Duration, limit: i64) -> Result<Vec<Run>, Error> {
        dispatch!(self.overdue_runs(slack, limit))
    }

    /// Marks archived logs past retention as expired and returns their keys for
    /// deletion: logs of finished runs beyond the newest `keep_runs` of their
    /// pipeline, or finished more than `max_age` ago. Each log is expired by one
    /// replica (Postgres skips locked rows; SQLite has one writer).
    pub async fn expire_logs(
        &self,
        keep_runs: Option<i64>,
        max_age: Option<Duration>,
        limit: i64,
    ) -> Result<Vec<(Uuid, i32, String)>, Error> {
        if keep_runs.is_none() && max_age.is_none() {
            return Ok(Vec::new());
        }
        dispatch!(self.expire_logs(keep_runs, max_age, limit))
    }

    /// Attempts that ended at least `ended_before` ago, oldest first, after `after` (the
    /// last one of the previous listing) or, without it, those that ended within
    /// `lookback`: the sweeper purges their live log subjects once more (late batches).
    pub async fn ended_attempts(
        &self,
        after: Option<&EndedAttempt>,
        ended_before: Duration,
        lookback: Duration,
        limit: i64,
    ) -> Result<Vec<EndedAttempt>, Error> {
        dispatch!(self.ended_attempts(after, ended_before, lookback, limit))
    }

    /// Fails queued runs that waited longer than `after` while no runner of
    /// their pool was heard from in the last `runner_silence` (GitLab's "stuck
    /// job": better a clear failure than a run that waits forever).
    pub async fn fail_unrunnable(
        &self,
        after: Duration,
        runner_silence: Duration,
        limit: i64,
    ) -> Result<Vec<Run>, Error> {
        dispatch!(self.fail_unrunnable(after, runner_silence, limit))
    }

    /// Running attempts whose lease ran out: their runner is gone or cut off.
    pub async fn expired_leases(&self, limit: i64) -> Result<Vec<Run>, Error> {
        dispatch!(self.expired_leases(limit))
    }

    /// Running attempts held by one runner (id), whatever their lease.
    pub async fn running_on_runner(&self, runner_id: &str) -> Result<Vec<Run>, Error> {
        dispatch!(self.running_on_runner(runner_id))
    }
}
