//! The run lifecycle: submit, claim, heartbeat, finish, cancel, expire. The
//! adapters above it (HTTP handlers, the NATS runner API, the embedded runner's
//! link, the sweeper) call these; the SQL lives in `store`.
//!
//! Architecture invariant: `runs` imports only the context and the seams below it
//! (store, bus, object store, logs), never an adapter or start-up.

use crate::config::ConcurrencyPolicy;
use crate::context::Context;
use crate::pipelines::{self, Pipeline};
use crate::store;
use crate::store::runs::{Claim, ClaimResult};
use crate::store::runs::{NewRun, Run};
use serde::{Deserialize, Serialize};
use shared::protocol::{CancelNotice, ClaimReply, CodeBundleRef, JobOffer, JobSpec, NetworkPolicy};
use shared::{FailureReason, RunStatus};
use std::collections::{BTreeMap, HashMap};
use uuid::Uuid;

mod attempts;
mod leases;
mod repair;

pub use attempts::finish;
pub use leases::heartbeat;
pub use repair::{
    LatePurges, ReofferError, end_unheld_on_start, expire_leases, expire_logs, expire_timeouts, fail_unrunnable,
    purge_late_logs, reoffer_stale,
};

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
    /// Frozen from pipeline.toml; runs queued before it existed get the default.
    #[serde(default)]
    pub network: NetworkPolicy,
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
            network: self.network,
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
pub async fn load_pipeline(ctx: &Context, name: &str) -> Result<Pipeline, Error> {
    if !pipelines::valid_name(name) {
        return Err(Error::InvalidPipelineName(name.to_owned()));
    }
    let catalog = ctx.catalog.clone();
    let name = name.to_owned();
    Ok(tokio::task::spawn_blocking(move || catalog.get(&name)).await??)
}

/// Creates a queued run and offers it to the runners.
/// `triggered_by` says who asked: `user:<name>`, `token:<name>` (see `auth::Principal`).
pub async fn submit(
    ctx: &Context,
    pipeline_name: &str,
    params: BTreeMap<String, String>,
    triggered_by: &str,
) -> Result<Run, Error> {
    let pipeline = load_pipeline(ctx, pipeline_name).await?;
    let for_bundle = pipeline.clone();
    let bundle = tokio::task::spawn_blocking(move || pipelines::bundle(&for_bundle)).await??;
    ctx.store.save_bundle(&bundle.reference.digest, &bundle.data).await?;

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
        timeout_seconds: pipeline.timeout_seconds.or(ctx.config.default_timeout),
        resources: pipeline.resources.over(ctx.config.default_resources),
        max_concurrent: pipeline.max_concurrent,
        log_max_bytes: ctx.config.log_max_bytes,
        retries: pipeline.retries.unwrap_or(ctx.config.retry_attempts),
        retry_on: pipeline.retry_on.clone().unwrap_or_else(|| vec![FailureReason::ExitCode, FailureReason::Lost]),
        network: pipeline.network,
    };
    if ctx.config.concurrency_policy == ConcurrencyPolicy::Reject {
        let (active, active_here) = ctx.store.count_active(&pipeline.name).await?;
        let limit = if ctx.config.max_concurrent_runs.is_some_and(|max| active >= max) {
            Some(("MAX_CONCURRENT_RUNS", ctx.config.max_concurrent_runs.unwrap_or_default()))
        } else {
            pipeline.max_concurrent.map(i64::from).filter(|max| active_here >= *max).map(|max| ("max_concurrent", max))
        };
        if let Some((name, max)) = limit {
            return Err(Error::LimitReached { limit: name, max });
        }
    }
    let run = ctx
        .store
        .insert_run(NewRun {
            id: Uuid::now_v7(),
            pipeline_name: &pipeline.name,
            pool: &pipeline.runner_pool,
            params: serde_json::to_value(&params).unwrap_or_default(),
            spec: serde_json::to_value(&template).unwrap_or_default(),
            timeout_seconds: template.timeout_seconds.map(|t| i64::try_from(t).unwrap_or(i64::MAX)),
            triggered_by: Some(triggered_by),
        })
        .await?;
    // A failed publish is not fatal: the run is stored, the sweeper re-offers it.
    if let Err(e) = ctx.bus.offer(&run.pool, run.id, run.attempt, None).await {
        tracing::warn!(run_id = %run.id, error = %e, "offer not published yet; the sweeper will retry");
    }
    tracing::info!(run_id = %run.id, pipeline = %run.pipeline_name, "run queued");
    Ok(run)
}

/// Cancels a queued run at once, or asks the runner of a running one to stop it.
pub async fn cancel(ctx: &Context, id: Uuid, force: bool) -> Result<Run, Error> {
    if let Some(run) = ctx.store.cancel_queued(id).await? {
        tracing::info!(run_id = %id, "queued run cancelled");
        ctx.bus.notify_finished(id).await;
        return Ok(run);
    }
    if let Some(run) = ctx.store.request_cancel(id, force).await? {
        if let Some(runner) = &run.runner_id {
            let notice = CancelNotice { attempt: run.attempt_ref(), force: run.cancel_force };
            if let Err(e) = ctx.bus.notify_cancel(runner, &notice).await {
                tracing::warn!(run_id = %id, error = %e, "cancel notice not sent; the next heartbeat carries it");
            }
        }
        tracing::info!(run_id = %id, "cancellation requested");
        return Ok(run);
    }
    match ctx.store.get_run(id).await? {
        None => Err(Error::RunNotFound(id)),
        Some(run) if run.status.is_final() => Err(Error::AlreadyFinished(Box::new(run))),
        // It moved from queued to running between the two updates: try again.
        Some(_) => Box::pin(cancel(ctx, id, force)).await,
    }
}

/// A runner's claim: one conditional update decides; the code bundle is made
/// available before the grant so the runner can always fetch it.
pub async fn claim(
    ctx: &Context,
    run_id: Uuid,
    attempt: i32,
    runner_id: &str,
    pool: Option<&str>,
) -> Result<ClaimReply, Error> {
    let mut replies = claim_batch(ctx, runner_id, pool, &[JobOffer { run_id, attempt }], None).await?;
    Ok(replies.pop().unwrap_or_else(|| ClaimReply::Refused { reason: "not decided".into() }))
}

/// JSON bytes a granted job adds to a reply beyond its template (ids, token, name).
const JOB_OVERHEAD_BYTES: usize = 512;

/// Claims several offers for one runner: the runs are read in one query, each
/// distinct code bundle checked once, and the claims made in one transaction.
/// The replies follow the offers' order. With `max_reply_bytes`, only the
/// offers whose jobs fit are decided; the reply is shorter than the request
/// and the runner offers the rest again. With `pool` (the runner's enrolled pool),
/// runs of other pools are refused.
pub async fn claim_batch(
    ctx: &Context,
    runner_id: &str,
    pool: Option<&str>,
    offers: &[JobOffer],
    max_reply_bytes: Option<usize>,
) -> Result<Vec<ClaimReply>, Error> {
    let ids: Vec<Uuid> = offers.iter().map(|o| o.run_id).collect();
    let runs: HashMap<Uuid, Run> = ctx.store.get_runs(&ids).await?.into_iter().map(|r| (r.id, r)).collect();
    let mut bundles: HashMap<String, Result<(), String>> = HashMap::new();
    let mut replies: Vec<Option<ClaimReply>> = Vec::with_capacity(offers.len());
    // The claimable offers: (index in `offers`, run, template).
    let mut claimable: Vec<(usize, &Run, JobTemplate)> = Vec::new();
    let mut reply_bytes = 0usize;
    for (i, offer) in offers.iter().enumerate() {
        let refused = |reason: String| Some(ClaimReply::Refused { reason });
        let Some(run) = runs.get(&offer.run_id) else {
            replies.push(refused("unknown run".into()));
            continue;
        };
        if run.status != RunStatus::Queued || run.attempt != offer.attempt {
            replies.push(refused(format!("run is {} (attempt {})", run.status, run.attempt)));
            continue;
        }
        if let Some(pool) = pool
            && run.pool != pool
        {
            tracing::warn!(run_id = %run.id, runner_id, pool, run_pool = %run.pool, "claim of another pool's run refused");
            replies.push(refused("the run is for another pool".into()));
            continue;
        }
        let template = match template_of(run) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(run_id = %run.id, error = %e, "cannot claim: the run's spec is unreadable");
                replies.push(refused(e.to_string()));
                continue;
            }
        };
        if let Some(max) = max_reply_bytes {
            let size = serde_json::to_vec(&template).map(|v| v.len()).unwrap_or(0) + JOB_OVERHEAD_BYTES;
            // The first offer is always decided, so a runner is never stuck on it.
            if i > 0 && reply_bytes + size > max {
                tracing::info!(
                    runner_id,
                    decided = i,
                    offered = offers.len(),
                    "claim reply cut short to fit one NATS message; the runner offers the rest again"
                );
                break;
            }
            reply_bytes += size;
        }
        if let Some(code) = &template.code {
            let checked = match bundles.get(&code.digest) {
                Some(checked) => checked.clone(),
                None => {
                    let checked = check_bundle(ctx, run.id, code).await;
                    bundles.insert(code.digest.clone(), checked.clone());
                    checked
                }
            };
            if let Err(reason) = checked {
                replies.push(refused(reason));
                continue;
            }
        }
        replies.push(None);
        claimable.push((i, run, template));
    }
    let claims: Vec<Claim> = claimable
        .iter()
        .map(|(_, run, template)| Claim {
            run_id: run.id,
            attempt: run.attempt,
            runner_id,
            pipeline_name: &run.pipeline_name,
            lease: ctx.config.lease,
            max_running: ctx.config.max_concurrent_runs,
            max_running_of_pipeline: template.max_concurrent.map(i64::from),
        })
        .collect();
    let results = if claims.is_empty() { Vec::new() } else { ctx.store.claim_batch(&claims).await? };
    for ((i, _, template), result) in claimable.into_iter().zip(results) {
        replies[i] = Some(match result {
            ClaimResult::Granted(run) => {
                tracing::info!(run_id = %run.id, runner_id, "run claimed");
                ClaimReply::Granted { job: template.into_job(&run) }
            }
            // Offered again as soon as a slot frees (see `after_final`).
            ClaimResult::Waiting(reason) => ClaimReply::Refused { reason: format!("waiting: {reason}") },
            ClaimResult::Gone => ClaimReply::Refused { reason: "run was claimed or cancelled meanwhile".into() },
        });
    }
    // Every pushed entry is decided now; the loop may have stopped early (size).
    Ok(replies.into_iter().map_while(|r| r).collect())
}

/// Whether a code bundle can be fetched by runners (the bus holds it, or it
/// was re-published from the database). `Err`: the refusal reason.
async fn check_bundle(ctx: &Context, run_id: Uuid, code: &CodeBundleRef) -> Result<(), String> {
    let store = ctx.store.clone();
    let digest = code.digest.clone();
    match ctx.bus.ensure_bundle(code, || async move { store.load_bundle(&digest).await.ok().flatten() }).await {
        Ok(true) => Ok(()),
        Ok(false) => {
            // As before: the runner reports the missing bundle as the run's failure.
            tracing::error!(%run_id, digest = %code.digest, "code bundle missing from the database");
            Ok(())
        }
        Err(e) => Err(format!("code bundle unavailable: {e}")),
    }
}

pub(crate) fn template_of(run: &Run) -> Result<JobTemplate, Error> {
    serde_json::from_value(run.spec.clone())
        .map_err(|e| Error::Store(store::Error::Corrupt(format!("run {} spec: {e}", run.id))))
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
}
