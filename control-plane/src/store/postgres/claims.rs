//! Claims, lease renewals and the ends of attempts: the guarded transitions of
//! a run's life on a runner.

use super::{PgStore, secs};
use crate::store::Error;
use crate::store::policy::{self, WaitingReason, sql};
use crate::store::runs::{ArchivedLog, Claim, ClaimResult, LeaseState, Outcome, Run};
use shared::protocol::AttemptRef;
use std::time::Duration;
use uuid::Uuid;

/// Arbitrary constant naming the advisory lock that serialises claims.
const CLAIM_LOCK: i64 = 0x4661_7374_466c_6f77; // "FastFlow"

impl PgStore {
    /// All claims in one transaction. The advisory lock (which serialises
    /// claims across replicas) is taken only when a concurrency limit applies:
    /// without one, the conditional `update` alone decides, so concurrent
    /// claims of different runs do not wait for each other, and a batch of one
    /// runner is one set-based statement.
    pub(in crate::store) async fn claim_batch(&self, claims: &[Claim<'_>]) -> Result<Vec<ClaimResult>, Error> {
        let mut tx = self.pool.begin().await?;
        let results = match claims {
            [first, ..]
                if !claims.iter().any(Claim::is_limited)
                    && claims.iter().all(|c| c.runner_id == first.runner_id && c.lease == first.lease) =>
            {
                Self::claim_unlimited(&mut tx, claims).await?
            }
            _ => {
                if claims.iter().any(Claim::is_limited) {
                    sqlx::query("select pg_advisory_xact_lock($1)").bind(CLAIM_LOCK).execute(&mut *tx).await?;
                }
                let mut results = Vec::with_capacity(claims.len());
                for claim in claims {
                    results.push(Self::claim_in(&mut tx, claim).await?);
                }
                results
            }
        };
        tx.commit().await?;
        Ok(results)
    }

    /// Claims of one runner without a limit: one `update … from unnest(…)`; the
    /// runs it did not take are checked one by one (backing off, or gone).
    async fn claim_unlimited(tx: &mut sqlx::PgConnection, claims: &[Claim<'_>]) -> Result<Vec<ClaimResult>, Error> {
        let Some(first) = claims.first() else { return Ok(Vec::new()) };
        let ids: Vec<Uuid> = claims.iter().map(|c| c.run_id).collect();
        let attempts: Vec<i32> = claims.iter().map(|c| c.attempt).collect();
        let granted = sqlx::query_as::<_, Run>(sql!(
            "update runs set {grant.postgres}, lease_expires_at = now() + make_interval(secs => $4), started_at = now()
             from unnest($1::uuid[], $2::int4[]) as wanted(wanted_id, wanted_attempt)
             where id = wanted_id and attempt = wanted_attempt
               and status = {status.queued} and (not_before is null or not_before <= now())
             returning ",
            run_columns!()
        ))
        .bind(&ids)
        .bind(&attempts)
        .bind(first.runner_id)
        .bind(secs(first.lease))
        .fetch_all(&mut *tx)
        .await?;
        let mut granted: std::collections::HashMap<Uuid, Run> = granted.into_iter().map(|r| (r.id, r)).collect();
        let mut results = Vec::with_capacity(claims.len());
        for claim in claims {
            // `remove`: a run named twice in the batch is granted once.
            results.push(match granted.remove(&claim.run_id) {
                Some(run) => ClaimResult::Granted(Box::new(run)),
                None => Self::not_granted(tx, claim).await?,
            });
        }
        Ok(results)
    }

    async fn claim_in(tx: &mut sqlx::PgConnection, claim: &Claim<'_>) -> Result<ClaimResult, Error> {
        if claim.is_limited() {
            let (running, running_here): (i64, i64) =
                sqlx::query_as(sql!(const policy::COUNT_RUNNING)).bind(claim.pipeline_name).fetch_one(&mut *tx).await?;
            if let Some(reason) = policy::limit_blocks(claim, running, running_here) {
                return Self::hold_back(tx, claim, reason).await;
            }
        }
        let run = sqlx::query_as::<_, Run>(sql!(
            "update runs set {grant.postgres}, lease_expires_at = now() + make_interval(secs => $4), started_at = now()
             where id = $1 and attempt = $2 and status = {status.queued} and (not_before is null or not_before <= now())
             returning ",
            run_columns!()
        ))
        .bind(claim.run_id)
        .bind(claim.attempt)
        .bind(claim.runner_id)
        .bind(secs(claim.lease))
        .fetch_optional(&mut *tx)
        .await?;
        match run {
            Some(run) => Ok(ClaimResult::Granted(Box::new(run))),
            None => Self::not_granted(tx, claim).await,
        }
    }

    /// Why a claim's update took nothing: still backing off before a retry
    /// (the run stays queued, marked), or no longer queued.
    async fn not_granted(tx: &mut sqlx::PgConnection, claim: &Claim<'_>) -> Result<ClaimResult, Error> {
        let backing_off: Option<(i32,)> = sqlx::query_as(sql!(
            "select attempt from runs where id = $1 and status = {status.queued} and not_before > now()"
        ))
        .bind(claim.run_id)
        .fetch_optional(&mut *tx)
        .await?;
        match policy::not_granted(backing_off.map(|(attempt,)| attempt), claim) {
            Some(reason) => Self::hold_back(tx, claim, reason).await,
            None => Ok(ClaimResult::Gone),
        }
    }

    /// The run stays queued, marked with why.
    async fn hold_back(
        tx: &mut sqlx::PgConnection,
        claim: &Claim<'_>,
        reason: WaitingReason,
    ) -> Result<ClaimResult, Error> {
        sqlx::query(sql!(
            "update runs set waiting_reason = $3 where id = $1 and attempt = $2 and status = {status.queued}"
        ))
        .bind(claim.run_id)
        .bind(claim.attempt)
        .bind(reason.as_str())
        .execute(&mut *tx)
        .await?;
        Ok(ClaimResult::Waiting(reason))
    }

    /// Extends the leases of the attempts a runner still holds; attempts it no
    /// longer holds are simply absent from the answer.
    pub(in crate::store) async fn renew_leases(
        &self,
        runner_id: &str,
        held: &[AttemptRef],
        lease: Duration,
    ) -> Result<Vec<LeaseState>, Error> {
        let ids: Vec<Uuid> = held.iter().map(|a| a.run_id).collect();
        let attempts: Vec<i32> = held.iter().map(|a| a.attempt).collect();
        let tokens: Vec<i64> = held.iter().map(|a| a.fencing_token).collect();
        let rows: Vec<(Uuid, i32, i64, bool, bool)> = sqlx::query_as(sql!(
            "update runs r set lease_expires_at = now() + make_interval(secs => $5)
             from unnest($2::uuid[], $3::int[], $4::bigint[]) as h(id, attempt, token)
             where r.id = h.id and r.attempt = h.attempt and r.fencing_token = h.token
               and r.status = {status.running} and r.runner_id = $1
             returning r.id, r.attempt, r.fencing_token, r.cancel_requested_at is not null, r.cancel_force"
        ))
        .bind(runner_id)
        .bind(&ids)
        .bind(&attempts)
        .bind(&tokens)
        .bind(secs(lease))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(run_id, attempt, fencing_token, cancel_requested, cancel_force)| LeaseState {
                attempt: AttemptRef { run_id, attempt, fencing_token },
                cancel_requested,
                cancel_force,
            })
            .collect())
    }

    /// Ends a running attempt held with this token: records it in
    /// `run_attempts`, then either finalises the run or, with `retry_after`,
    /// queues the next attempt to start no earlier than that.
    pub(in crate::store) async fn end_attempt(
        &self,
        at: &AttemptRef,
        outcome: &Outcome,
        log: Option<&ArchivedLog>,
        retry_after: Option<Duration>,
    ) -> Result<Option<Run>, Error> {
        // One statement: the guard (`current`) locks the row, the attempt is
        // recorded, and the run moves on, or nothing happens at all. `current`'s
        // columns have names of their own, so the run's own are unambiguous.
        macro_rules! record_attempt_then {
            ($update:literal) => {
                sql!(
                    "with current as (
                         select id as held_id, attempt as held_attempt, runner_id as held_by,
                             started_at as held_since
                         from runs
                         where id = $1 and attempt = $2 and fencing_token = $3 and status = {status.running} for update),
                     recorded as (
                         insert into run_attempts (run_id, attempt, status, failure_reason, exit_code, error_message,
                             runner_id, started_at, finished_at, log_key, log_size_bytes)
                         select held_id, held_attempt, $4, $5, $6, $7, held_by, held_since, now(), $8, coalesce($9, 0)
                         from current) ",
                    $update,
                    " from current where r.id = current.held_id returning r.*"
                )
            };
        }
        let final_ = record_attempt_then!(
            "update runs r set status = $4, failure_reason = $5, exit_code = $6, error_message = $7,
                 log_key = $8, log_size_bytes = coalesce($9, 0), finished_at = now(), lease_expires_at = null"
        );
        let retry =
            record_attempt_then!("update runs r set {retry_resets}, not_before = now() + make_interval(secs => $10)");
        let run = sqlx::query_as::<_, Run>(if retry_after.is_some() { retry } else { final_ })
            .bind(at.run_id)
            .bind(at.attempt)
            .bind(at.fencing_token)
            .bind(outcome.status.as_str())
            .bind(outcome.reason.map(|r| r.as_str()))
            .bind(outcome.exit_code)
            .bind(outcome.error_message.as_deref())
            .bind(log.map(|l| l.key.as_str()))
            .bind(log.map(|l| l.size))
            .bind(retry_after.map(secs).unwrap_or_default())
            .fetch_optional(&self.pool)
            .await?;
        Ok(run)
    }
}
