//! `/api/v1/runners`: runners heard from recently; enrolling and revoking runners
//! (admins). A registration token's value is shown once, in the creation answer;
//! the store keeps only its hash.

use super::ApiState;
use super::audit::record;
use super::authn::{Caller, ClientAddr};
use super::error::Error;
use super::extract::{JsonBody, UuidPath};
use super::routing::ApiRouter;
use crate::auth::audit::{Action, Outcome};
use crate::context::Context;
use crate::runner_identity;
use crate::store::runner_identity::RegistrationToken;
use crate::store::runners::RunnerInfo;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

/// Runners silent for longer than this are not listed.
const RECENT_SECS: i64 = 60;

pub fn router() -> ApiRouter {
    ApiRouter::new()
        .get("/api/v1/runners", list)
        .get("/api/v1/runners/registration-tokens", list_registration_tokens)
        .post("/api/v1/runners/registration-tokens", create_registration_token)
        .delete("/api/v1/runners/registration-tokens/{id}", revoke_registration_token)
        .delete("/api/v1/runners/{id}", revoke_runner)
}

/// A runner as the API shows it.
#[derive(Debug, Serialize)]
pub struct RunnerResponse {
    id: String,
    pool: String,
    version: String,
    slots: i32,
    running: i32,
    started_at: DateTime<Utc>,
    last_heartbeat_at: DateTime<Utc>,
}

impl From<RunnerInfo> for RunnerResponse {
    fn from(r: RunnerInfo) -> Self {
        RunnerResponse {
            id: r.id,
            pool: r.pool,
            version: r.version,
            slots: r.slots,
            running: r.running,
            started_at: r.started_at,
            last_heartbeat_at: r.last_heartbeat_at,
        }
    }
}

async fn list(State(app): State<Context>) -> Result<Json<Vec<RunnerResponse>>, Error> {
    Ok(Json(app.store.list_runners(RECENT_SECS).await?.into_iter().map(RunnerResponse::from).collect()))
}

/// A registration token as the API lists it: never its value or hash.
#[derive(Serialize)]
struct RegistrationTokenResponse {
    id: Uuid,
    description: String,
    pool: Option<String>,
    single_use: bool,
    expires_at: Option<DateTime<Utc>>,
    created_by: Option<Uuid>,
    created_at: DateTime<Utc>,
    uses: i32,
    last_used_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
}

impl From<RegistrationToken> for RegistrationTokenResponse {
    fn from(t: RegistrationToken) -> Self {
        RegistrationTokenResponse {
            id: t.id,
            description: t.description,
            pool: t.pool,
            single_use: t.single_use,
            expires_at: t.expires_at,
            created_by: t.created_by,
            created_at: t.created_at,
            uses: t.uses,
            last_used_at: t.last_used_at,
            revoked_at: t.revoked_at,
        }
    }
}

#[derive(Serialize)]
struct RegistrationTokenList {
    items: Vec<RegistrationTokenResponse>,
}

async fn list_registration_tokens(State(api): State<ApiState>) -> Result<Json<RegistrationTokenList>, Error> {
    let items = api.ctx.store.list_registration_tokens().await?.into_iter().map(Into::into).collect();
    Ok(Json(RegistrationTokenList { items }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewRegistrationToken {
    #[serde(default)]
    description: String,
    /// The pool runners enrolled with it serve (`None`: their `RUNNER_POOL`, else `default`).
    pool: Option<String>,
    /// Default: one runner per token.
    single_use: Option<bool>,
    expires_at: Option<DateTime<Utc>>,
    /// Alternative to `expires_at`.
    expires_in_seconds: Option<u64>,
}

/// The creation answer: the listing's fields plus the value, this once.
#[derive(Serialize)]
struct CreatedRegistrationToken {
    token: String,
    #[serde(flatten)]
    info: RegistrationTokenResponse,
}

async fn create_registration_token(
    State(api): State<ApiState>,
    ClientAddr(client): ClientAddr,
    Caller(caller): Caller,
    JsonBody(body): JsonBody<NewRegistrationToken>,
) -> Result<(StatusCode, Json<CreatedRegistrationToken>), Error> {
    let expires_at = match (body.expires_at, body.expires_in_seconds) {
        (Some(_), Some(_)) => {
            return Err(Error::invalid("expires_in_seconds", "give expires_at or expires_in_seconds, not both"));
        }
        (Some(at), None) => Some(at),
        (None, Some(secs)) => {
            let secs = i64::try_from(secs).ok().filter(|s| (1..=10 * 365 * 86_400).contains(s));
            let Some(secs) = secs else {
                return Err(Error::invalid("expires_in_seconds", "from 1 second to 10 years"));
            };
            Some(Utc::now() + chrono::Duration::seconds(secs))
        }
        (None, None) => None,
    };
    let request = runner_identity::NewTokenRequest {
        description: &body.description,
        pool: body.pool.as_deref(),
        single_use: body.single_use.unwrap_or(true),
        expires_at,
        created_by: Some(caller.user_id),
    };
    let created = runner_identity::create_registration_token(&api.ctx.store, &request).await;
    let outcome = if created.is_ok() { Outcome::Ok } else { Outcome::Failed };
    let target = created.as_ref().ok().map(|c| format!("registration-token:{}", c.info.id));
    let details = created
        .as_ref()
        .ok()
        .map(|c| json!({ "event": "registration_token_create", "pool": c.info.pool, "single_use": c.info.single_use }));
    record(&api.ctx, caller.actor(), client.as_deref(), Action::RunnerChange, target.as_deref(), outcome, details)
        .await;
    let created = created?;
    let info = created.info.into();
    Ok((StatusCode::CREATED, Json(CreatedRegistrationToken { token: created.token.into_inner(), info })))
}

async fn revoke_registration_token(
    State(api): State<ApiState>,
    ClientAddr(client): ClientAddr,
    Caller(caller): Caller,
    UuidPath(id): UuidPath,
) -> Result<StatusCode, Error> {
    let known = api.ctx.store.list_registration_tokens().await?.into_iter().any(|t| t.id == id);
    if !known {
        return Err(Error::not_found(format!("registration token {id} not found")));
    }
    api.ctx.store.revoke_registration_token(id).await?;
    let target = format!("registration-token:{id}");
    let details = Some(json!({ "event": "registration_token_revoke" }));
    record(&api.ctx, caller.actor(), client.as_deref(), Action::RunnerChange, Some(&target), Outcome::Ok, details)
        .await;
    Ok(StatusCode::NO_CONTENT)
}

async fn revoke_runner(
    State(api): State<ApiState>,
    ClientAddr(client): ClientAddr,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, Error> {
    if !shared::subjects::valid_runner_id(&id) {
        return Err(Error::not_found(format!("no enrolled runner {id}")));
    }
    runner_identity::revoke_runner(&api.ctx.store, &id).await?;
    let target = format!("runner:{id}");
    let details = Some(json!({ "event": "runner_revoke" }));
    record(&api.ctx, caller.actor(), client.as_deref(), Action::RunnerChange, Some(&target), Outcome::Ok, details)
        .await;
    Ok(StatusCode::NO_CONTENT)
}
