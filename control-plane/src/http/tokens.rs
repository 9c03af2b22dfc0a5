//! `/api/v1/tokens`: API tokens. Everyone creates, lists and revokes their own;
//! admins list (`?all=true`) and revoke anyone's. The value is shown once, in the
//! creation answer; the store keeps only its hash. A revocation holds on every
//! replica within the credential cache's staleness (1 s).

use super::ApiState;
use super::audit::record;
use super::authn::{Caller, ClientAddr};
use super::error::Error;
use super::extract::{JsonBody, QueryMap, UuidPath};
use super::routing::ApiRouter;
use crate::auth::audit::{Action, Outcome};
use crate::auth::{Role, tokens, users};
use crate::store::auth::ApiToken;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

pub fn router() -> ApiRouter {
    ApiRouter::new().get("/api/v1/tokens", list).post("/api/v1/tokens", create).delete("/api/v1/tokens/{id}", revoke)
}

/// A token as the API lists it: never its value or hash.
#[derive(Serialize)]
struct TokenResponse {
    id: Uuid,
    name: String,
    user_id: Uuid,
    role: Role,
    created_at: DateTime<Utc>,
    last_used_at: Option<DateTime<Utc>>,
    expires_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
}

impl From<ApiToken> for TokenResponse {
    fn from(t: ApiToken) -> Self {
        TokenResponse {
            id: t.id,
            name: t.name,
            user_id: t.user_id,
            role: t.role,
            created_at: t.created_at,
            last_used_at: t.last_used_at,
            expires_at: t.expires_at,
            revoked_at: t.revoked_at,
        }
    }
}

#[derive(Serialize)]
struct TokenList {
    items: Vec<TokenResponse>,
}

async fn list(
    State(api): State<ApiState>,
    Caller(caller): Caller,
    QueryMap(query): QueryMap,
) -> Result<Json<TokenList>, Error> {
    let all = match query.get("all").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(Error::invalid("all", "all must be `true` or `false`")),
    };
    if all && !caller.allows(Role::Admin) {
        return Err(Error::Forbidden { required: Role::Admin, role: caller.role });
    }
    let owner = if all { None } else { Some(caller.user_id) };
    let items = tokens::list(&api.ctx.store, owner).await?.into_iter().map(TokenResponse::from).collect();
    Ok(Json(TokenList { items }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    name: String,
    /// At most the creator's (effective) role; default: that role.
    role: Option<Role>,
    expires_at: Option<DateTime<Utc>>,
}

/// The creation answer: the listing's fields plus the value, this once.
#[derive(Serialize)]
struct CreatedToken {
    token: String,
    #[serde(flatten)]
    info: TokenResponse,
}

async fn create(
    State(api): State<ApiState>,
    ClientAddr(client): ClientAddr,
    Caller(caller): Caller,
    JsonBody(body): JsonBody<NewToken>,
) -> Result<(StatusCode, Json<CreatedToken>), Error> {
    let owner = users::get(&api.ctx.store, caller.user_id).await?;
    let request = tokens::NewTokenRequest { name: &body.name, role: body.role, expires_at: body.expires_at };
    let created = tokens::create(&api.ctx.store, &owner, caller.role, &request).await;
    let target = format!("token:{}", body.name.trim());
    let outcome = if created.is_ok() { Outcome::Ok } else { Outcome::Failed };
    let details = created.as_ref().ok().map(|c| json!({ "role": c.info.role, "owner": owner.username }));
    record(&api.ctx, caller.actor(), client.as_deref(), Action::TokenCreate, Some(&target), outcome, details).await;
    let created = created?;
    Ok((StatusCode::CREATED, Json(CreatedToken { token: created.token.into_inner(), info: created.info.into() })))
}

async fn revoke(
    State(api): State<ApiState>,
    ClientAddr(client): ClientAddr,
    Caller(caller): Caller,
    UuidPath(id): UuidPath,
) -> Result<StatusCode, Error> {
    // Someone else's token is "not found" to a non-admin: its existence is not theirs to learn.
    let owner = if caller.allows(Role::Admin) { None } else { Some(caller.user_id) };
    let token = tokens::list(&api.ctx.store, owner)
        .await?
        .into_iter()
        .find(|t| t.id == id)
        .ok_or_else(|| Error::not_found(format!("token {id} not found")))?;
    tokens::revoke(&api.ctx.store, id).await?;
    api.auth.invalidate_token(id);
    let target = format!("token:{}", token.name);
    let details = Some(json!({ "owner_id": token.user_id }));
    record(&api.ctx, caller.actor(), client.as_deref(), Action::TokenRevoke, Some(&target), Outcome::Ok, details).await;
    Ok(StatusCode::NO_CONTENT)
}
