//! Claims, lease renewals and the ends of attempts: the guarded transitions of
//! a run's life on a runner, each a transaction on the single writer.

use super::{SqliteStore, micros, now, text};
use crate::store::Error;
use crate::store::policy::{self, WaitingReason, sql};
use crate::store::runs::{ArchivedLog, Claim, ClaimResult, LeaseState, Outcome, Run};
use shared::protocol::AttemptRef;
use sqlx::sqlite::SqliteConnection;
use std::time::Duration;

impl SqliteStore {
    /// All claims in one transaction on the writer: one commit (one WAL fsync)
    /// for the whole batch. The writer serialises claims, so the counts are exact.
    pub(in crate::store) async fn claim_batch(&self, claims: &[Claim<'_>]) -> Result<Vec<ClaimResult>, Error> {
        let now = now();
        self.write_transaction(async |tx| {
            let mut results = Vec::with_capacity(claims.len());
            for claim in claims {
                results.push(Self::claim_in(tx, claim, now).await?);
            }
            Ok(results)
        })
        .await
    }

    async fn claim_in(tx: &mut SqliteConnection, claim: &Claim<'_>, now: i64) -> Result<ClaimResult, Error> {
        let id = text(claim.run_id);
        if claim.is_limited() {
            let (running, running_here): (i64, i64) =
                sqlx::query_as(sql!(const policy::COUNT_RUNNING)).bind(claim.pipeline_name).fetch_one(&mut *tx).await?;
            if let Some(reason) = policy::limit_blocks(claim, running, running_here) {
                return Self::hold_back(tx, &id, claim.attempt, reason).await;
            }
        }
        let run = sqlx::query_as::<_, Run>(sql!(
            "update runs set {grant.sqlite}, lease_expires_at = $4, started_at = $5
             where id = $1 and attempt = $2 and status = {status.queued} and (not_before is null or not_before <= $5)
             returning ",
            run_columns!()
        ))
        .bind(&id)
        .bind(claim.attempt)
        .bind(claim.runner_id)
        .bind(now.saturating_add(micros(claim.lease)))
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(run) = run {
            return Ok(ClaimResult::Granted(Box::new(run)));
        }
        // Not claimable: still backing off before a retry, or no longer queued.
        let backing_off: Option<(i32,)> = sqlx::query_as(sql!(
            "select attempt from runs where id = $1 and status = {status.queued} and not_before > $2"
        ))
        .bind(&id)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        match policy::not_granted(backing_off.map(|(attempt,)| attempt), claim) {
            Some(reason) => Self::hold_back(tx, &id, claim.attempt, reason).await,
            None => Ok(ClaimResult::Gone),
        }
    }

    /// The run stays queued, marked with why.
    async fn hold_back(
        tx: &mut SqliteConnection,
        id: &str,
        attempt: i32,
        reason: WaitingReason,
    ) -> Result<ClaimResult, Error> {
        sqlx::query(sql!(
            "update runs set waiting_reason = $3 where id = $1 and attempt = $2 and status = {status.queued}"
        ))
        .bind(id)
        .bind(attempt)
        .bind(reason.as_str())
        .execute(&mut *tx)
        .await?;
        Ok(ClaimResult::Waiting(reason))
    }

    /// One guarded update per held attempt, all in one transaction.
    pub(in crate::store) async fn renew_leases(
        &self,
        runner_id: &str,
        held: &[AttemptRef],
        lease: Duration,
    ) -> Result<Vec<LeaseState>, Error> {
        let expires = now().saturating_add(micros(lease));
        self.write_transaction(async |tx| {
            let mut renewed = Vec::with_capacity(held.len());
            for at in held {
                let row: Option<(bool, bool)> = sqlx::query_as(
                    sql!("update runs set lease_expires_at = $5
                     where id = $1 and attempt = $2 and fencing_token = $3 and status = {status.running} and runner_id = $4
                     returning cancel_requested_at is not null, cancel_force"),
                )
                .bind(text(at.run_id))
                .bind(at.attempt)
                .bind(at.fencing_token)
                .bind(runner_id)
                .bind(expires)
                .fetch_optional(&mut *tx)
                .await?;
                if let Some((cancel_requested, cancel_force)) = row {
                    renewed.push(LeaseState { attempt: at.clone(), cancel_requested, cancel_force });
                }
            }
            Ok(renewed)
        })
        .await
    }

    /// Two statements with the same guard in one writer transaction: record the
    /// attempt (nothing inserted means the guard failed: stop, nothing changed),
    /// then move the run on.
    pub(in crate::store) async fn end_attempt(
        &self,
        at: &AttemptRef,
        outcome: &Outcome,
        log: Option<&ArchivedLog>,
        retry_after: Option<Duration>,
    ) -> Result<Option<Run>, Error> {
        let now = now();
        let id = text(at.run_id);
        self.write_transaction(async |tx| {
            let recorded = sqlx::query(sql!(
                "insert into run_attempts (run_id, attempt, status, failure_reason, exit_code, error_message,
                     runner_id, started_at, finished_at, log_key, log_size_bytes)
                 select id, attempt, $4, $5, $6, $7, runner_id, started_at, $10, $8, coalesce($9, 0) from runs
                 where id = $1 and attempt = $2 and fencing_token = $3 and status = {status.running}"
            ))
            .bind(&id)
            .bind(at.attempt)
            .bind(at.fencing_token)
            .bind(outcome.status.as_str())
            .bind(outcome.reason.map(|r| r.as_str()))
            .bind(outcome.exit_code)
            .bind(outcome.error_message.as_deref())
            .bind(log.map(|l| l.key.as_str()))
            .bind(log.map(|l| l.size))
            .bind(now)
            .execute(&mut *tx)
            .await?;
            if recorded.rows_affected() == 0 {
                return Ok(None);
            }
            let run = match retry_after {
                None => {
                    sqlx::query_as::<_, Run>(sql!(
                        "update runs set status = $4, failure_reason = $5, exit_code = $6, error_message = $7,
                         log_key = $8, log_size_bytes = coalesce($9, 0), finished_at = $10, lease_expires_at = null
                     where id = $1 and attempt = $2 and fencing_token = $3 and status = {status.running}
                     returning ",
                        run_columns!()
                    ))
                    .bind(&id)
                    .bind(at.attempt)
                    .bind(at.fencing_token)
                    .bind(outcome.status.as_str())
                    .bind(outcome.reason.map(|r| r.as_str()))
                    .bind(outcome.exit_code)
                    .bind(outcome.error_message.as_deref())
                    .bind(log.map(|l| l.key.as_str()))
                    .bind(log.map(|l| l.size))
                    .bind(now)
                    .fetch_optional(&mut *tx)
                    .await?
                }
                Some(after) => {
                    sqlx::query_as::<_, Run>(sql!(
                        "update runs set {retry_resets}, not_before = $4
                     where id = $1 and attempt = $2 and fencing_token = $3 and status = {status.running}
                     returning ",
                        run_columns!()
                    ))
                    .bind(&id)
                    .bind(at.attempt)
                    .bind(at.fencing_token)
                    .bind(now.saturating_add(micros(after)))
                    .fetch_optional(&mut *tx)
                    .await?
                }
            };
            Ok(run)
        })
        .await
    }
}
