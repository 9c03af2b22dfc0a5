//! Repairs the sweeper runs on every replica: attempts whose runner is gone or
//! overdue, runs no runner can take, lost offers, logs past retention.

use super::Error;
use super::attempts::end_attempt;
use crate::context::Context;
use crate::logs::archive;
use crate::store::runs::{EndedAttempt, Outcome, Run};
use crate::{bus, store};
use shared::protocol::{AttemptRef, CancelNotice};
use shared::{FailureReason, RunStatus};
use std::time::Duration;

/// Ends attempts whose runner stopped renewing its lease (`failed` / `lost`,
/// or `cancelled` if a cancel was pending), archiving what their log holds.
/// Replicas may race here; the guarded update lets exactly one end each attempt.
pub async fn expire_leases(ctx: &Context) -> Result<usize, Error> {
    let mut count = 0;
    for run in ctx.store.expired_leases(100).await? {
        tracing::warn!(run_id = %run.id, runner_id = ?run.runner_id, "lease expired");
        let message = format!("runner {} stopped renewing its lease", run.runner_id.as_deref().unwrap_or("?"));
        count += usize::from(take_over(ctx, &run, &lost_or_cancelled(&run, message)).await?);
    }
    Ok(count)
}

/// A runner process started (its first heartbeat, after re-attaching to its
/// containers): attempts the store assigns to it that it does not hold have no
/// container (the previous process died between the claim and the container) and
/// end now as `lost` (or are retried) instead of waiting for their lease.
pub async fn end_unheld_on_start(ctx: &Context, runner_id: &str, held: &[AttemptRef]) -> Result<usize, Error> {
    let mut count = 0;
    for run in ctx.store.running_on_runner(runner_id).await? {
        if held.contains(&run.attempt_ref()) {
            continue;
        }
        tracing::warn!(run_id = %run.id, runner_id, "the runner restarted without a container for this attempt");
        let message = format!("runner {runner_id} restarted and had no container for the attempt");
        count += usize::from(take_over(ctx, &run, &lost_or_cancelled(&run, message)).await?);
    }
    Ok(count)
}

/// How an attempt ends that its runner can no longer report: `cancelled` if a
/// cancel was pending, else `failed` / `lost` with `message`.
fn lost_or_cancelled(run: &Run, message: String) -> Outcome {
    if run.cancel_requested_at.is_some() {
        Outcome {
            status: RunStatus::Cancelled,
            reason: Some(FailureReason::Cancelled),
            exit_code: None,
            error_message: None,
        }
    } else {
        Outcome {
            status: RunStatus::Failed,
            reason: Some(FailureReason::Lost),
            exit_code: None,
            error_message: Some(message),
        }
    }
}

/// Ends attempts whose timeout passed long ago (the runner should have stopped
/// them) and tells their runner to kill them.
pub async fn expire_timeouts(ctx: &Context) -> Result<usize, Error> {
    let slack = ctx.config.stop_grace + Duration::from_secs(30);
    let mut count = 0;
    for run in ctx.store.overdue_runs(slack, 100).await? {
        tracing::warn!(run_id = %run.id, runner_id = ?run.runner_id, "timeout enforced by the control plane");
        if let Some(runner) = &run.runner_id {
            let notice = CancelNotice { attempt: run.attempt_ref(), force: true };
            if let Err(e) = ctx.bus.notify_cancel(runner, &notice).await {
                tracing::warn!(run_id = %run.id, error = %e, "could not tell the runner to stop the job");
            }
        }
        let message = "timeout passed and the runner did not stop the job; the control plane ended it".to_owned();
        let outcome = Outcome {
            status: RunStatus::Failed,
            reason: Some(FailureReason::Timeout),
            exit_code: None,
            error_message: Some(message),
        };
        count += usize::from(take_over(ctx, &run, &outcome).await?);
    }
    Ok(count)
}

/// Ends an attempt without its runner: archive what the live log holds, then
/// end it. `true` if this replica ended it. While the log store refuses the archive,
/// the attempt stays as it is and so does its live log (ending it would purge the only
/// copy): the next sweep tries again, and `GET …/logs` serves the live log meanwhile.
async fn take_over(ctx: &Context, run: &Run, outcome: &Outcome) -> Result<bool, Error> {
    let at = run.attempt_ref();
    let archived = match archive::archive(&ctx.bus, &ctx.objects, &at, None).await {
        Ok(archived) => archived.log,
        Err(e) => {
            tracing::warn!(run_id = %run.id, error = %e,
                "could not archive the log; the attempt stays open and its live log is kept until the log store takes it");
            return Ok(false);
        }
    };
    Ok(end_attempt(ctx, run, outcome, Some(&archived)).await?.is_some())
}

/// Fails queued runs no runner can take (`NO_RUNNER_TIMEOUT_SECONDS`).
pub async fn fail_unrunnable(ctx: &Context) -> Result<usize, Error> {
    let Some(after) = ctx.config.no_runner_timeout else { return Ok(0) };
    let failed = ctx.store.fail_unrunnable(after, ctx.config.lease, 100).await?;
    for run in &failed {
        tracing::warn!(run_id = %run.id, pool = %run.pool, "no runner took the run");
        ctx.bus.notify_finished(run.id).await;
    }
    Ok(failed.len())
}

/// Deletes archived logs past retention (the runs themselves stay).
pub async fn expire_logs(ctx: &Context) -> Result<usize, Error> {
    let expired = ctx.store.expire_logs(ctx.config.log_retention_runs, ctx.config.log_retention, 500).await?;
    for (run_id, attempt, log_key) in &expired {
        for key in [log_key.clone(), crate::logs::index_key(*run_id, *attempt)] {
            if let Err(e) = ctx.objects.delete(&key).await {
                tracing::warn!(%run_id, %key, error = %e, "could not delete an expired log object");
            }
        }
    }
    if !expired.is_empty() {
        tracing::info!(count = expired.len(), "expired archived logs");
    }
    Ok(expired.len())
}

/// Attempts whose live log the sweeper purges once more, per sweep and pass at most.
const LATE_PURGE_BATCH: i64 = 500;
/// The second, later purge after an attempt's end (a runner cut off from NATS for a
/// while re-sends its unacknowledged batches when it gets back).
const LATE_PURGE_SECOND: Duration = Duration::from_secs(30 * 60);
/// How far back a replica that just started looks for ended attempts, past each delay.
const LATE_PURGE_LOOKBACK: Duration = Duration::from_secs(30 * 60);

/// Where this replica's purges of late log batches stand: two passes over the ended
/// attempts, `LATE_LOG_PURGE_AFTER_SECONDS` and 30 minutes after their end, each
/// continuing where it stopped (in memory: a restarted replica looks back 30 minutes).
pub struct LatePurges {
    passes: [(Duration, Option<EndedAttempt>); 2],
}

impl LatePurges {
    pub fn new(first_after: Duration) -> LatePurges {
        LatePurges { passes: [(first_after, None), (LATE_PURGE_SECOND.max(first_after), None)] }
    }
}

/// Purges the live log subjects of attempts that ended a while ago: an attempt's
/// subject is purged when it ends, but a batch its runner (cut off, fenced, or just
/// slow to learn the attempt was taken over) publishes afterwards would otherwise stay
/// until the stream's age limit. Cheap: one indexed listing per pass, one listing of
/// the stream's subjects, and a purge only where a batch is left.
pub async fn purge_late_logs(ctx: &Context, late: &mut LatePurges) -> Result<usize, ReofferError> {
    let mut purged = 0;
    for (delay, cursor) in &mut late.passes {
        let ended =
            ctx.store.ended_attempts(cursor.as_ref(), *delay, *delay + LATE_PURGE_LOOKBACK, LATE_PURGE_BATCH).await?;
        let Some(last) = ended.last().cloned() else { continue };
        let attempts: Vec<(uuid::Uuid, i32)> = ended.iter().map(|a| (a.run_id, a.attempt)).collect();
        purged += ctx.bus.purge_late_logs(&attempts).await?;
        *cursor = Some(last);
    }
    if purged > 0 {
        tracing::info!(purged, "purged live log batches published after their attempt ended");
    }
    Ok(purged)
}

/// Re-offers queued runs whose offer is gone from NATS (lost message, wiped store).
pub async fn reoffer_stale(ctx: &Context) -> Result<usize, ReofferError> {
    let stale = ctx.store.stale_queued(ctx.config.reoffer_after, 500).await?;
    let mut count = 0;
    for (run_id, attempt, pool) in stale {
        if !ctx.bus.has_offer(&pool, run_id).await? {
            // One nonce per second: replicas sweeping together still publish once.
            let nonce = format!("r{}", chrono::Utc::now().timestamp());
            ctx.bus.offer(&pool, run_id, attempt, Some(&nonce)).await?;
            tracing::info!(%run_id, attempt, "re-offered a queued run");
            count += 1;
        }
    }
    Ok(count)
}

#[derive(Debug, thiserror::Error)]
pub enum ReofferError {
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error(transparent)]
    Bus(#[from] bus::Error),
}
