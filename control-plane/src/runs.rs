//! The run lifecycle: submit, claim, finish, cancel, expire. HTTP handlers, the
//! runner API and the sweeper call these; the SQL lives in `store::runs`.

use crate::app::App;
use crate::config::ConcurrencyPolicy;
use crate::logs::archive;
use crate::pipelines::{self, Pipeline};
use crate::store::runs::{ArchivedLog, NewRun, Outcome, Run};
use crate::store::runs::{Claim, ClaimResult};
use crate::{bus, store};
use serde::{Deserialize, Serialize};
use shared::protocol::{
    AttemptRef, CancelNotice, ClaimReply, CodeBundleRef, ExitOutcome, ExitReply, ExitReport, JobSpec,
};
use shared::{FailureReason, RunStatus};
use std::collections::BTreeMap;
use std::time::Duration;
use uuid::Uuid;

const MAX_PARAMS: usize = 64;
const MAX_PARAM_VALUE_BYTES: usize = 32 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "invalid pipeline name `{0}`: use letters, digits, `_` and `-` (at most 64, starting with a letter or digit)"
    )]
    InvalidPipelineName(String),
    #[error(transparent)]
    Pipeline(#[from] pipelines::Error),
    #[error("{message}")]
    InvalidParam { field: String, message: String },
    #[error("run {0} not found")]
    RunNotFound(Uuid),
    #[error("run {} already finished with status {}", .0.id, .0.status)]
    AlreadyFinished(Box<Run>),
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error("internal task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("{limit} ({max}) runs are already active; try again later")]
    LimitReached { limit: &'static str, max: i64 },
}

/// What a run executes, frozen when the run is created so later edits of the
/// pipeline folder do not change a queued run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobTemplate {
    pub image: String,
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub code: Option<CodeBundleRef>,
    pub mount_uv_cache: bool,
    pub timeout_seconds: Option<u64>,
    #[serde(default)]
    pub resources: shared::protocol::Resources,
    #[serde(default)]
    pub max_concurrent: Option<u32>,
    #[serde(default)]
    pub log_max_bytes: Option<u64>,
    /// Attempts after the first one.
    #[serde(default)]
    pub retries: u32,
    /// Failures that are retried.
    #[serde(default)]
    pub retry_on: Vec<FailureReason>,
}

impl JobTemplate {
    fn into_job(mut self, run: &Run) -> JobSpec {
        // Set last: a job can always tell which run and attempt it is.
        self.env.insert("FASTFLOW_RUN_ID".into(), run.id.to_string());
        self.env.insert("FASTFLOW_ATTEMPT".into(), run.attempt.to_string());
        JobSpec {
            run_id: run.id,
            attempt: run.attempt,
            fencing_token: run.fencing_token,
            pipeline_name: run.pipeline_name.clone(),
            image: self.image,
            command: self.command,
            env: self.env,
            code: self.code,
            mount_uv_cache: self.mount_uv_cache,
            timeout_seconds: self.timeout_seconds,
            resources: self.resources,
            log_max_bytes: self.log_max_bytes,
        }
    }
}

/// Checks run parameters: a JSON object of string values with safe names.
pub fn validate_params(params: &serde_json::Value) -> Result<BTreeMap<String, String>, Error> {
    let invalid = |field: &str, message: String| Error::InvalidParam { field: field.to_owned(), message };
    let Some(map) = params.as_object() else {
        return Err(invalid("params", "`params` must be an object of string values".into()));
    };
    if map.len() > MAX_PARAMS {
        return Err(invalid("params", format!("at most {MAX_PARAMS} parameters")));
    }
    let mut out = BTreeMap::new();
    for (key, value) in map {
        let field = format!("params.{key}");
        pipelines::check_env_name(key).map_err(|m| invalid(&field, format!("parameter name `{key}` {m}")))?;
        let Some(text) = value.as_str() else {
            return Err(invalid(&field, format!("parameter `{key}` must be a string")));
        };
        if text.len() > MAX_PARAM_VALUE_BYTES || text.contains('\0') {
            return Err(invalid(&field, format!("parameter `{key}` must be at most 32 KiB without NUL bytes")));
        }
        out.insert(key.clone(), text.to_owned());
    }
    Ok(out)
}

/// Loads a pipeline by (unvalidated) name off the async runtime.
pub async fn load_pipeline(app: &App, name: &str) -> Result<Pipeline, Error> {
    if !pipelines::valid_name(name) {
        return Err(Error::InvalidPipelineName(name.to_owned()));
    }
    let catalog = app.catalog.clone();
    let name = name.to_owned();
    Ok(tokio::task::spawn_blocking(move || catalog.get(&name)).await??)
}

/// Creates a queued run and offers it to the runners.
pub async fn submit(app: &App, pipeline_name: &str, params: BTreeMap<String, String>) -> Result<Run, Error> {
    let pipeline = load_pipeline(app, pipeline_name).await?;
    let for_bundle = pipeline.clone();
    let bundle = tokio::task::spawn_blocking(move || pipelines::bundle(&for_bundle)).await??;
    app.store.save_bundle(&bundle.reference.digest, &bundle.data).await?;

    let mut env = pipeline.env.clone();
    if pipeline.is_python {
        env.insert("PYTHONUNBUFFERED".into(), "1".into());
    }
    env.extend(params.clone());
    let template = JobTemplate {
        image: pipeline.image.clone(),
        command: pipeline.command.clone(),
        env,
        code: Some(bundle.reference),
        mount_uv_cache: pipeline.is_python,
        timeout_seconds: pipeline.timeout_seconds.or(app.config.default_timeout),
        resources: pipeline.resources.over(app.config.default_resources),
        max_concurrent: pipeline.max_concurrent,
        log_max_bytes: app.config.log_max_bytes,
        retries: pipeline.retries.unwrap_or(app.config.retry_attempts),
        retry_on: pipeline.retry_on.clone().unwrap_or_else(|| vec![FailureReason::ExitCode, FailureReason::Lost]),
    };
    if app.config.concurrency_policy == ConcurrencyPolicy::Reject {
        let (active, active_here) = app.store.count_active(&pipeline.name).await?;
        let limit = if app.config.max_concurrent_runs.is_some_and(|max| active >= max) {
            Some(("MAX_CONCURRENT_RUNS", app.config.max_concurrent_runs.unwrap_or_default()))
        } else {
            pipeline.max_concurrent.map(i64::from).filter(|max| active_here >= *max).map(|max| ("max_concurrent", max))
        };
        if let Some((name, max)) = limit {
            return Err(Error::LimitReached { limit: name, max });
        }
    }
    let run = app
        .store
        .insert_run(NewRun {
            id: Uuid::now_v7(),
            pipeline_name: &pipeline.name,
            pool: &pipeline.runner_pool,
            params: serde_json::to_value(&params).unwrap_or_default(),
            spec: serde_json::to_value(&template).unwrap_or_default(),
        })
        .await?;
    // A failed publish is not fatal: the run is stored, the sweeper re-offers it.
    if let Err(e) = app.bus.offer(&run.pool, run.id, run.attempt, None).await {
        tracing::warn!(run_id = %run.id, error = %e, "offer not published yet; the sweeper will retry");
    }
    tracing::info!(run_id = %run.id, pipeline = %run.pipeline_name, "run queued");
    Ok(run)
}

/// Cancels a queued run at once, or asks the runner of a running one to stop it.
pub async fn cancel(app: &App, id: Uuid, force: bool) -> Result<Run, Error> {
    if let Some(run) = app.store.cancel_queued(id).await? {
        tracing::info!(run_id = %id, "queued run cancelled");
        app.bus.notify_finished(id).await;
        return Ok(run);
    }
    if let Some(run) = app.store.request_cancel(id, force).await? {
        if let Some(runner) = &run.runner_id {
            let notice = CancelNotice { attempt: run.attempt_ref(), force: run.cancel_force };
            if let Err(e) = app.bus.notify_cancel(runner, &notice).await {
                tracing::warn!(run_id = %id, error = %e, "cancel notice not sent; the next heartbeat carries it");
            }
        }
        tracing::info!(run_id = %id, "cancellation requested");
        return Ok(run);
    }
    match app.store.get_run(id).await? {
        None => Err(Error::RunNotFound(id)),
        Some(run) if run.status.is_final() => Err(Error::AlreadyFinished(Box::new(run))),
        // It moved from queued to running between the two updates: try again.
        Some(_) => Box::pin(cancel(app, id, force)).await,
    }
}

/// A runner's claim: one conditional update decides; the code bundle is made
/// available before the grant so the runner can always fetch it.
pub async fn claim(app: &App, run_id: Uuid, attempt: i32, runner_id: &str) -> Result<ClaimReply, Error> {
    let refused = |reason: String| Ok(ClaimReply::Refused { reason });
    let Some(run) = app.store.get_run(run_id).await? else { return refused("unknown run".into()) };
    if run.status != RunStatus::Queued || run.attempt != attempt {
        return refused(format!("run is {} (attempt {})", run.status, run.attempt));
    }
    let template: JobTemplate = match serde_json::from_value(run.spec.clone()) {
        Ok(t) => t,
        Err(e) => return Err(store::Error::Corrupt(format!("run {run_id} spec: {e}")).into()),
    };
    if let Some(code) = &template.code {
        let store = app.store.clone();
        let digest = code.digest.clone();
        let available =
            app.bus.ensure_bundle(code, || async move { store.load_bundle(&digest).await.ok().flatten() }).await;
        match available {
            Ok(true) => {}
            Ok(false) => tracing::error!(%run_id, digest = %code.digest, "code bundle missing from the database"),
            Err(e) => return refused(format!("code bundle unavailable: {e}")),
        }
    }
    let claim = Claim {
        run_id,
        attempt,
        runner_id,
        pipeline_name: &run.pipeline_name,
        lease: app.config.lease,
        max_running: app.config.max_concurrent_runs,
        max_running_of_pipeline: template.max_concurrent.map(i64::from),
    };
    match app.store.claim(&claim).await? {
        ClaimResult::Granted(run) => {
            tracing::info!(%run_id, runner_id, "run claimed");
            Ok(ClaimReply::Granted { job: template.into_job(&run) })
        }
        // Offered again as soon as a slot frees (see `after_final`).
        ClaimResult::Waiting(reason) => refused(format!("waiting: {reason}")),
        ClaimResult::Gone => refused("run was claimed or cancelled meanwhile".into()),
    }
}

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
pub async fn finish(app: &App, report: &ExitReport) -> ExitReply {
    let at = &report.attempt;
    let run = match app.store.get_run(at.run_id).await {
        Ok(Some(run)) => run,
        Ok(None) => return ExitReply::Rejected { reason: "unknown run".into() },
        Err(e) => return ExitReply::RetryLater { reason: e.to_string() },
    };
    if run.attempt != at.attempt || run.fencing_token != at.fencing_token {
        // Already ended by this token (a repeated report) or taken over.
        return match app.store.attempts(at.run_id).await {
            Ok(done) if done.iter().any(|a| a.attempt == at.attempt) && run.attempt > at.attempt => ExitReply::Accepted,
            Ok(_) => ExitReply::Rejected { reason: "stale fencing token".into() },
            Err(e) => ExitReply::RetryLater { reason: e.to_string() },
        };
    }
    if run.status.is_final() {
        return ExitReply::Accepted;
    }
    let archived = match archive::archive(app.bus.jetstream(), &app.objects, at, Some(report.log)).await {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(run_id = %at.run_id, error = %e, "archiving failed; runner will retry");
            return ExitReply::RetryLater { reason: format!("archiving the log failed: {e}") };
        }
    };
    let mut outcome = outcome_of(report, run.cancel_requested_at.is_some());
    if archived.missing_lines > 0 && outcome.error_message.is_none() {
        outcome.error_message = Some(format!("{} log lines were lost in transit", archived.missing_lines));
    }
    match end_attempt(app, &run, &outcome, Some(&archived.log)).await {
        // `None`: ended meanwhile by lease expiry, which archived the log too.
        Ok(_) => ExitReply::Accepted,
        Err(e) => ExitReply::RetryLater { reason: e.to_string() },
    }
}

/// Ends `run`'s current attempt with `outcome`: final, or re-queued as the next
/// attempt after a back-off when its pipeline's retry policy covers the failure.
async fn end_attempt(app: &App, run: &Run, outcome: &Outcome, log: Option<&ArchivedLog>) -> Result<Option<Run>, Error> {
    let at = run.attempt_ref();
    let template = template_of(run)?;
    let retry_after = retry_delay(&template, run.attempt, outcome, app.config.retry_backoff);
    let Some(ended) = app.store.end_attempt(&at, outcome, log, retry_after).await? else { return Ok(None) };
    if let Some(delay) = retry_after {
        tracing::info!(run_id = %run.id, attempt = run.attempt, reason = ?outcome.reason, ?delay, "attempt failed; retrying");
        let (app2, run_id, next, pool) = (app.clone(), ended.id, ended.attempt, ended.pool.clone());
        // Offered when the back-off ends; if this replica dies first, the sweeper does it.
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let nonce = format!("retry{}", Uuid::new_v4().simple());
            if let Err(e) = app2.bus.offer(&pool, run_id, next, Some(&nonce)).await {
                tracing::warn!(%run_id, error = %e, "retry offer failed; the sweeper will retry");
            }
        });
    } else {
        tracing::info!(run_id = %ended.id, status = %ended.status, "run finished");
    }
    after_attempt(app, &at).await;
    Ok(Some(ended))
}

fn template_of(run: &Run) -> Result<JobTemplate, Error> {
    serde_json::from_value(run.spec.clone())
        .map_err(|e| Error::Store(store::Error::Corrupt(format!("run {} spec: {e}", run.id))))
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
async fn after_attempt(app: &App, at: &AttemptRef) {
    if let Err(e) = app.bus.purge_log(at.run_id, at.attempt).await {
        tracing::warn!(run_id = %at.run_id, error = %e, "could not purge the live log");
    }
    app.bus.notify_finished(at.run_id).await;
    if let Err(e) = offer_waiting(app).await {
        tracing::warn!(error = %e, "could not re-offer runs waiting for a slot");
    }
}

/// A slot freed: offer the runs a concurrency limit held back, oldest first,
/// so any replica's runners can take them at once.
async fn offer_waiting(app: &App) -> Result<(), ReofferError> {
    let nonce = format!("w{}", Uuid::new_v4().simple());
    for (run_id, attempt, pool) in app.store.waiting_runs(20).await? {
        app.bus.offer(&pool, run_id, attempt, Some(&nonce)).await?;
    }
    Ok(())
}

/// Ends attempts whose runner stopped renewing its lease (`failed` / `lost`,
/// or `cancelled` if a cancel was pending), archiving what their log holds.
/// Replicas may race here; the guarded update lets exactly one end each attempt.
pub async fn expire_leases(app: &App) -> Result<usize, Error> {
    let mut count = 0;
    for run in app.store.expired_leases(100).await? {
        tracing::warn!(run_id = %run.id, runner_id = ?run.runner_id, "lease expired");
        let outcome = if run.cancel_requested_at.is_some() {
            Outcome {
                status: RunStatus::Cancelled,
                reason: Some(FailureReason::Cancelled),
                exit_code: None,
                error_message: None,
            }
        } else {
            let message = format!("runner {} stopped renewing its lease", run.runner_id.as_deref().unwrap_or("?"));
            Outcome {
                status: RunStatus::Failed,
                reason: Some(FailureReason::Lost),
                exit_code: None,
                error_message: Some(message),
            }
        };
        count += usize::from(take_over(app, &run, &outcome).await?);
    }
    Ok(count)
}

/// Ends attempts whose timeout passed long ago (the runner should have stopped
/// them) and tells their runner to kill them.
pub async fn expire_timeouts(app: &App) -> Result<usize, Error> {
    let slack = app.config.stop_grace + Duration::from_secs(30);
    let mut count = 0;
    for run in app.store.overdue_runs(slack, 100).await? {
        tracing::warn!(run_id = %run.id, runner_id = ?run.runner_id, "timeout enforced by the control plane");
        if let Some(runner) = &run.runner_id {
            let notice = CancelNotice { attempt: run.attempt_ref(), force: true };
            if let Err(e) = app.bus.notify_cancel(runner, &notice).await {
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
        count += usize::from(take_over(app, &run, &outcome).await?);
    }
    Ok(count)
}

/// Ends an attempt without its runner: archive what the live log holds, then
/// end it. `true` if this replica ended it.
async fn take_over(app: &App, run: &Run, outcome: &Outcome) -> Result<bool, Error> {
    let at = run.attempt_ref();
    let archived = match archive::archive(app.bus.jetstream(), &app.objects, &at, None).await {
        Ok(archived) => Some(archived.log),
        Err(e) => {
            tracing::warn!(run_id = %run.id, error = %e, "could not archive the log");
            None
        }
    };
    Ok(end_attempt(app, run, outcome, archived.as_ref()).await?.is_some())
}

/// Fails queued runs no runner can take (`NO_RUNNER_TIMEOUT_SECONDS`).
pub async fn fail_unrunnable(app: &App) -> Result<usize, Error> {
    let Some(after) = app.config.no_runner_timeout else { return Ok(0) };
    let failed = app.store.fail_unrunnable(after, app.config.lease, 100).await?;
    for run in &failed {
        tracing::warn!(run_id = %run.id, pool = %run.pool, "no runner took the run");
        app.bus.notify_finished(run.id).await;
    }
    Ok(failed.len())
}

/// Deletes archived logs past retention (the runs themselves stay).
pub async fn expire_logs(app: &App) -> Result<usize, Error> {
    let expired = app.store.expire_logs(app.config.log_retention_runs, app.config.log_retention, 500).await?;
    for (run_id, attempt, log_key) in &expired {
        for key in [log_key.clone(), crate::logs::index_key(*run_id, *attempt)] {
            if let Err(e) = app.objects.delete(&key).await {
                tracing::warn!(%run_id, %key, error = %e, "could not delete an expired log object");
            }
        }
    }
    if !expired.is_empty() {
        tracing::info!(count = expired.len(), "expired archived logs");
    }
    Ok(expired.len())
}

/// Re-offers queued runs whose offer is gone from NATS (lost message, wiped store).
pub async fn reoffer_stale(app: &App) -> Result<usize, ReofferError> {
    let stale = app.store.stale_queued(app.config.reoffer_after, 500).await?;
    let mut count = 0;
    for (run_id, attempt, pool) in stale {
        if !app.bus.has_offer(&pool, run_id).await? {
            // One nonce per second: replicas sweeping together still publish once.
            let nonce = format!("r{}", chrono::Utc::now().timestamp());
            app.bus.offer(&pool, run_id, attempt, Some(&nonce)).await?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn params_must_be_an_object_of_safe_strings() {
        let ok = validate_params(&json!({"NAME": "Ada", "_x": ""})).expect("valid");
        assert_eq!(ok.get("NAME").map(String::as_str), Some("Ada"));
        for (bad, field) in [
            (json!([1]), "params"),
            (json!({"1X": "v"}), "params.1X"),
            (json!({"PATH": "/tmp"}), "params.PATH"),
            (json!({"LD_PRELOAD": "x.so"}), "params.LD_PRELOAD"),
            (json!({"N": 3}), "params.N"),
        ] {
            match validate_params(&bad) {
                Err(Error::InvalidParam { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{bad}: expected InvalidParam, got {other:?}"),
            }
        }
    }

    fn report(outcome: ExitOutcome, timed_out: bool) -> ExitReport {
        ExitReport {
            attempt: AttemptRef { run_id: Uuid::nil(), attempt: 1, fencing_token: 1 },
            runner_id: "r".into(),
            outcome,
            log: Default::default(),
            timed_out,
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
