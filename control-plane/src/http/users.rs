//! `/api/v1/users` (admins): list, create, show, change (role, disabled, password
//! reset) and delete users. The last enabled admin cannot be demoted, disabled or
//! deleted (409 `LastAdmin`); any change ends the user's sessions.

use super::ApiState;
use super::audit::record;
use super::authn::{Caller, ClientAddr};
use super::error::Error;
use super::extract::{JsonBody, UuidPath};
use super::routing::ApiRouter;
use crate::auth::audit::{Action, Outcome};
use crate::auth::{Role, users};
use crate::store::auth::User;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

pub fn router() -> ApiRouter {
    ApiRouter::new()
        .get("/api/v1/users", list)
        .post("/api/v1/users", create)
        .get("/api/v1/users/{id}", show)
        .put("/api/v1/users/{id}", update)
        .delete("/api/v1/users/{id}", remove)
}

/// A user as the API shows it: never the password hash.
#[derive(Debug, Serialize)]
pub struct UserResponse {
    pub id: Uuid,
    pub username: String,
    pub role: Role,
    pub disabled: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<User> for UserResponse {
    fn from(user: User) -> Self {
        UserResponse {
            id: user.id,
            username: user.username,
            role: user.role,
            disabled: user.disabled,
            created_at: user.created_at,
            updated_at: user.updated_at,
        }
    }
}

#[derive(Serialize)]
struct UserList {
    items: Vec<UserResponse>,
}

async fn list(State(api): State<ApiState>) -> Result<Json<UserList>, Error> {
    let items = users::list(&api.ctx.store).await?.into_iter().map(UserResponse::from).collect();
    Ok(Json(UserList { items }))
}

async fn show(State(api): State<ApiState>, UuidPath(id): UuidPath) -> Result<Json<UserResponse>, Error> {
    Ok(Json(users::get(&api.ctx.store, id).await?.into()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    username: String,
    password: String,
    role: Role,
}

async fn create(
    State(api): State<ApiState>,
    ClientAddr(client): ClientAddr,
    Caller(admin): Caller,
    JsonBody(body): JsonBody<NewUser>,
) -> Result<(StatusCode, Json<UserResponse>), Error> {
    let request = users::NewUserRequest { username: &body.username, password: &body.password, role: body.role };
    let created = users::create(&api.ctx.store, &request).await;
    let target = format!("user:{}", body.username.trim().to_lowercase());
    let outcome = if created.is_ok() { Outcome::Ok } else { Outcome::Failed };
    let details = Some(json!({ "role": body.role }));
    record(&api.ctx, admin.actor(), client.as_deref(), Action::UserCreate, Some(&target), outcome, details).await;
    Ok((StatusCode::CREATED, Json(created?.into())))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserChange {
    role: Option<Role>,
    disabled: Option<bool>,
    /// A new password set by the admin (a reset).
    password: Option<String>,
}

async fn update(
    State(api): State<ApiState>,
    ClientAddr(client): ClientAddr,
    Caller(admin): Caller,
    UuidPath(id): UuidPath,
    JsonBody(body): JsonBody<UserChange>,
) -> Result<Json<UserResponse>, Error> {
    if body.role.is_none() && body.disabled.is_none() && body.password.is_none() {
        return Err(Error::invalid("body", "nothing to change: give `role`, `disabled` or `password`"));
    }
    let user = users::get(&api.ctx.store, id).await?;
    let change = users::AdminUpdate { role: body.role, disabled: body.disabled, password: body.password };
    let updated = users::admin_update(&api.ctx.store, id, &change).await;
    api.auth.invalidate_user(id);
    let target = format!("user:{}", user.username);
    let outcome = if updated.is_ok() { Outcome::Ok } else { Outcome::Failed };
    // What changed, never the password itself.
    let details = Some(json!({
        "role": change.role,
        "disabled": change.disabled,
        "password_reset": change.password.is_some(),
    }));
    record(&api.ctx, admin.actor(), client.as_deref(), Action::UserUpdate, Some(&target), outcome, details).await;
    Ok(Json(updated?.into()))
}

async fn remove(
    State(api): State<ApiState>,
    ClientAddr(client): ClientAddr,
    Caller(admin): Caller,
    UuidPath(id): UuidPath,
) -> Result<StatusCode, Error> {
    let user = users::get(&api.ctx.store, id).await?;
    let deleted = users::delete(&api.ctx.store, id).await;
    api.auth.invalidate_user(id);
    let target = format!("user:{}", user.username);
    let outcome = if deleted.is_ok() { Outcome::Ok } else { Outcome::Failed };
    record(&api.ctx, admin.actor(), client.as_deref(), Action::UserDelete, Some(&target), outcome, None).await;
    deleted?;
    Ok(StatusCode::NO_CONTENT)
}
