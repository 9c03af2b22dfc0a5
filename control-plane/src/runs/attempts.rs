//! The end of an attempt: archive its log, then finalise the run or queue the
//! next attempt by the retry policy.

use super::repair::ReofferError;
use super::{Error, JobTemplate, template_of};
use crate::context::Context;
use crate::logs::archive;
use crate::store::runs::{ArchivedLog, Outcome, Run};
use shared::protocol::{AttemptRef, ExitOutcome, ExitReply, ExitReport};
use shared::{FailureReason, RunStatus};
use std::time::Duration;
use uuid::Uuid;

fn outcome_of(report: &ExitReport, cancel_requested: bool) -> Outcome {
    let failed = |reason, exit_code, error_message| Outcome {
        status: RunStatus::Failed,
        reason: Some(reason),
        exit_code,
        error_message,
    };
    let exit_code = match &report.outcome {
        ExitOutcome::Exited { exit_code } => Some(*exit_code),
        ExitOutcome::SetupError { .. } => None,
    };
    if cancel_requested {
        // Whatever the container did after the cancel, the user asked for this.
        return Outcome {
            status: RunStatus::Cancelled,
            reason: Some(FailureReason::Cancelled),
            exit_code,
            error_message: None,
        };
    }
    match &report.outcome {
        ExitOutcome::SetupError { message } => failed(FailureReason::SetupError, None, Some(message.clone())),
        ExitOutcome::Exited { exit_code } if report.timed_out => failed(FailureReason::Timeout, Some(*exit_code), None),
        ExitOutcome::Exited { exit_code: 0 } => {
            Outcome { status: RunStatus::Success, reason: None, exit_code: Some(0), error_message: None }
        }
        ExitOutcome::Exited { exit_code } => failed(FailureReason::ExitCode, Some(*exit_code), None),
    }
}

/// A runner's exit report: archive the log, then end the attempt (final
/// status, or the next attempt when the retry policy says so). Idempotent, so a
/// runner may repeat a report whose answer it did not get.
pub async fn finish(ctx: &Context, report: &ExitReport) -> ExitReply {
    let at = &report.attempt;
    // Waits for a turn (FINISH_CONCURRENCY). `Err` only if closed, which never happens.
    let _turn = ctx.finishing.acquire().await.ok();
    let run = match ctx.store.get_run(at.run_id).await {
        Ok(Some(run)) => run,
        Ok(None) => return ExitReply::Rejected { reason: "unknown run".into() },
        Err(e) => return ExitReply::RetryLater { reason: e.to_string() },
    };
    if run.attempt != at.attempt || run.fencing_token != at.fencing_token {
        // Already ended by this token (a repeated report) or taken over.
        return match ctx.store.attempts(at.run_id).await {
            Ok(done) if done.iter().any(|a| a.attempt == at.attempt) && run.attempt > at.attempt => ExitReply::Accepted,
            Ok(_) => ExitReply::Rejected { reason: "stale fencing token".into() },
            Err(e) => ExitReply::RetryLater { reason: e.to_string() },
        };
    }
    if run.status.is_final() {
        return ExitReply::Accepted;
    }
    if run.runner_id.as_deref() != Some(report.runner_id.as_str()) {
        tracing::warn!(run_id = %at.run_id, sender = %report.runner_id, "exit report from a runner that does not hold the attempt");
        return ExitReply::Rejected { reason: "this runner does not hold the attempt".into() };
    }
    let archived = match archive::archive(&ctx.bus, &ctx.objects, at, Some(report.log)).await {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(run_id = %at.run_id, error = %e, "archiving failed; runner will retry");
            return ExitReply::RetryLater { reason: format!("archiving the log failed: {e}") };
        }
    };
    let mut outcome = outcome_of(report, run.cancel_requested_at.is_some() || report.cancelled);
    if archived.missing_lines > 0 && outcome.error_message.is_none() {
        outcome.error_message = Some(format!("{} log lines were lost in transit", archived.missing_lines));
    }
    match end_attempt(ctx, &run, &outcome, Some(&archived.log)).await {
        // `None`: ended meanwhile by lease expiry, which archived the log too.
        Ok(_) => ExitReply::Accepted,
        Err(e) => ExitReply::RetryLater { reason: e.to_string() },
    }
}

/// Ends `run`'s current attempt with `outcome`: final, or re-queued as the next
/// attempt after a back-off when its pipeline's retry policy covers the failure.
pub(super) async fn end_attempt(
    ctx: &Context,
    run: &Run,
    outcome: &Outcome,
    log: Option<&ArchivedLog>,
) -> Result<Option<Run>, Error> {
    let at = run.attempt_ref();
    let template = template_of(run)?;
    let retry_after = retry_delay(&template, run.attempt, outcome, ctx.config.retry_backoff);
    let Some(ended) = ctx.store.end_attempt(&at, outcome, log, retry_after).await? else { return Ok(None) };
    if let Some(delay) = retry_after {
        tracing::info!(run_id = %run.id, attempt = run.attempt, reason = ?outcome.reason, ?delay, "attempt failed; retrying");
        let (bus, run_id, next, pool) = (ctx.bus.clone(), ended.id, ended.attempt, ended.pool.clone());
        let shutdown = ctx.shutdown.clone();
        // Offered when the back-off ends; if this replica stops or dies first, the
        // sweeper (of any replica, or of the next start) does it.
        ctx.spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
            let nonce = format!("retry{}", Uuid::new_v4().simple());
            if let Err(e) = bus.offer(&pool, run_id, next, Some(&nonce)).await {
                tracing::warn!(%run_id, error = %e, "retry offer failed; the sweeper will retry");
            }
        });
    } else {
        tracing::info!(run_id = %ended.id, status = %ended.status, "run finished");
    }
    after_attempt(ctx, &at).await;
    Ok(Some(ended))
}

/// The back-off before the next attempt, or `None` when the run ends here:
/// exponential from `base`, ±25 % jitter so retries of many runs spread out.
fn retry_delay(template: &JobTemplate, attempt: i32, outcome: &Outcome, base: Duration) -> Option<Duration> {
    let reason = outcome.reason?;
    let retryable = outcome.status == RunStatus::Failed && template.retry_on.contains(&reason);
    if !retryable || attempt > i32::try_from(template.retries).unwrap_or(i32::MAX) {
        return None;
    }
    let exponent = u32::try_from(attempt - 1).unwrap_or(0).min(16);
    let nominal = (base.as_secs_f64() * f64::from(2u32.pow(exponent))).min(MAX_RETRY_DELAY_SECS);
    let jitter = 0.75 + rand::random::<f64>() * 0.5;
    Some(Duration::from_secs_f64(nominal * jitter))
}

const MAX_RETRY_DELAY_SECS: f64 = 300.0;

/// Housekeeping once an attempt ended and its log is archived.
async fn after_attempt(ctx: &Context, at: &AttemptRef) {
    if let Err(e) = ctx.bus.purge_log(at.run_id, at.attempt).await {
        tracing::warn!(run_id = %at.run_id, error = %e, "could not purge the live log");
    }
    ctx.bus.notify_finished(at.run_id).await;
    if let Err(e) = offer_waiting(ctx).await {
        tracing::warn!(error = %e, "could not re-offer runs waiting for a slot");
    }
}

/// A slot freed: offer the runs a concurrency limit held back, oldest first,
/// so any replica's runners can take them at once.
pub(super) async fn offer_waiting(ctx: &Context) -> Result<(), ReofferError> {
    let nonce = format!("w{}", Uuid::new_v4().simple());
    for (run_id, attempt, pool) in ctx.store.waiting_runs(20).await? {
        ctx.bus.offer(&pool, run_id, attempt, Some(&nonce)).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runs::JobTemplate;
    use shared::protocol::AttemptRef;
    use std::collections::BTreeMap;

    fn report(outcome: ExitOutcome, timed_out: bool) -> ExitReport {
        ExitReport {
            attempt: AttemptRef { run_id: Uuid::nil(), attempt: 1, fencing_token: 1 },
            runner_id: "r".into(),
            outcome,
            log: Default::default(),
            timed_out,
            cancelled: false,
        }
    }

    fn template(retries: u32) -> JobTemplate {
        JobTemplate {
            image: "i".into(),
            command: vec![],
            env: BTreeMap::new(),
            code: None,
            mount_uv_cache: false,
            timeout_seconds: None,
            resources: Default::default(),
            max_concurrent: None,
            log_max_bytes: None,
            retries,
            retry_on: vec![FailureReason::ExitCode, FailureReason::Lost],
            network: Default::default(),
        }
    }

    #[test]
    fn retries_follow_the_policy_with_growing_jittered_delays() {
        let failed = |reason| Outcome {
            status: RunStatus::Failed,
            reason: Some(reason),
            exit_code: Some(1),
            error_message: None,
        };
        let base = Duration::from_secs(2);
        assert_eq!(retry_delay(&template(0), 1, &failed(FailureReason::ExitCode), base), None);
        let first = retry_delay(&template(2), 1, &failed(FailureReason::ExitCode), base).expect("retried");
        assert!(first >= Duration::from_millis(1500) && first <= Duration::from_millis(2500), "{first:?}");
        let second = retry_delay(&template(2), 2, &failed(FailureReason::Lost), base).expect("retried");
        assert!(second >= Duration::from_secs(3) && second <= Duration::from_secs(5), "{second:?}");
        assert_eq!(retry_delay(&template(2), 3, &failed(FailureReason::ExitCode), base), None, "attempts used up");
        assert_eq!(retry_delay(&template(2), 1, &failed(FailureReason::Timeout), base), None, "not in retry_on");
        let cancelled = Outcome {
            status: RunStatus::Cancelled,
            reason: Some(FailureReason::Cancelled),
            exit_code: None,
            error_message: None,
        };
        assert_eq!(retry_delay(&template(2), 1, &cancelled, base), None, "never cancelled runs");
    }

    #[test]
    fn outcomes_map_to_statuses() {
        let o = outcome_of(&report(ExitOutcome::Exited { exit_code: 0 }, false), false);
        assert_eq!((o.status, o.reason), (RunStatus::Success, None));
        let o = outcome_of(&report(ExitOutcome::Exited { exit_code: 3 }, false), false);
        assert_eq!((o.status, o.reason, o.exit_code), (RunStatus::Failed, Some(FailureReason::ExitCode), Some(3)));
        let o = outcome_of(&report(ExitOutcome::Exited { exit_code: 143 }, false), true);
        assert_eq!((o.status, o.reason), (RunStatus::Cancelled, Some(FailureReason::Cancelled)));
        let o = outcome_of(&report(ExitOutcome::Exited { exit_code: 137 }, true), false);
        assert_eq!(o.reason, Some(FailureReason::Timeout));
        let o = outcome_of(&report(ExitOutcome::SetupError { message: "cancelled early".into() }, false), true);
        assert_eq!(o.status, RunStatus::Cancelled);
        let o = outcome_of(&report(ExitOutcome::SetupError { message: "no image".into() }, false), false);
        assert_eq!((o.reason, o.error_message.as_deref()), (Some(FailureReason::SetupError), Some("no image")));
    }
}
