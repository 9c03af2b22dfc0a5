//! `/api/v1/pipelines`: the catalog and starting runs.

use super::audit::record;
use super::authn::{Caller, ClientAddr};
use super::error::Error;
use super::extract::{JsonBody, PipelineName};
use super::routing::ApiRouter;
use super::runs::RunResponse;
use crate::auth::audit::{Action, Outcome};
use crate::context::Context;
use crate::pipelines::Pipeline;
use crate::runs;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;
use shared::FailureReason;
use shared::protocol::NetworkPolicy;

pub fn router() -> ApiRouter {
    ApiRouter::new()
        .get("/api/v1/pipelines", list)
        .get("/api/v1/pipelines/{name}", show)
        .post("/api/v1/pipelines/{name}/run", start)
}

/// A pipeline as the API shows it; its environment and folder stay private.
#[derive(Debug, Serialize)]
pub struct PipelineResponse {
    name: String,
    description: Option<String>,
    image: String,
    command: Vec<String>,
    has_requirements: bool,
    timeout_seconds: Option<u64>,
    max_concurrent: Option<u32>,
    runner_pool: String,
    retries: Option<u32>,
    retry_on: Option<Vec<FailureReason>>,
    resources: ResourcesResponse,
    /// `none`, `isolated` or `host-bridge`.
    network: NetworkPolicy,
}

/// The pipeline's own `[resources]` (unset: the global default applies).
#[derive(Debug, Serialize)]
struct ResourcesResponse {
    memory_mb: Option<u64>,
    cpus: Option<f64>,
    pids: Option<i64>,
}

impl From<Pipeline> for PipelineResponse {
    fn from(p: Pipeline) -> Self {
        PipelineResponse {
            name: p.name,
            description: p.description,
            image: p.image,
            command: p.command,
            has_requirements: p.has_requirements,
            timeout_seconds: p.timeout_seconds,
            max_concurrent: p.max_concurrent,
            runner_pool: p.runner_pool,
            retries: p.retries,
            retry_on: p.retry_on,
            resources: ResourcesResponse {
                memory_mb: p.resources.memory_mb,
                cpus: p.resources.cpus,
                pids: p.resources.pids,
            },
            network: p.network,
        }
    }
}

async fn list(State(app): State<Context>) -> Result<Json<Vec<PipelineResponse>>, Error> {
    let catalog = app.catalog.clone();
    let pipelines = tokio::task::spawn_blocking(move || catalog.list()).await??;
    Ok(Json(pipelines.into_iter().map(PipelineResponse::from).collect()))
}

async fn show(State(app): State<Context>, PipelineName(name): PipelineName) -> Result<Json<PipelineResponse>, Error> {
    Ok(Json(runs::load_pipeline(&app, &name).await?.into()))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct StartRequest {
    #[serde(default)]
    params: Option<serde_json::Value>,
}

/// The body is optional: `{"params": {"KEY": "value"}}`.
async fn start(
    State(app): State<Context>,
    ClientAddr(client): ClientAddr,
    Caller(caller): Caller,
    PipelineName(name): PipelineName,
    body: Option<JsonBody<StartRequest>>,
) -> Result<(StatusCode, Json<RunResponse>), Error> {
    let request = body.map(|JsonBody(r)| r).unwrap_or_default();
    let params = match request.params {
        None | Some(serde_json::Value::Null) => Default::default(),
        Some(p) => runs::validate_params(&p)?,
    };
    let run = runs::submit(&app, &name, params, &caller.triggered_by()).await?;
    let target = format!("run:{}", run.id);
    // Parameter names only: their values may be sensitive.
    let details =
        Some(json!({ "pipeline": name, "params": run.params.as_object().map(|p| p.keys().collect::<Vec<_>>()) }));
    record(&app, caller.actor(), client.as_deref(), Action::RunTrigger, Some(&target), Outcome::Ok, details).await;
    Ok((StatusCode::CREATED, Json(run.into())))
}
