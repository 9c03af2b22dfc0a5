//! `/api/v1/auth`: sign in (a session cookie), sign out, who am I, change my
//! password. Every outcome that matters is in the audit log.

use super::ApiState;
use super::audit::record;
use super::authn::{self, Caller, ClientAddr};
use super::error::Error;
use super::extract::JsonBody;
use super::routing::ApiRouter;
use super::users::UserResponse;
use crate::auth::audit::{Action, Actor, Outcome};
use crate::auth::{self, Via, sessions, users};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

pub fn router() -> ApiRouter {
    ApiRouter::new()
        .post("/api/v1/auth/login", login)
        .post("/api/v1/auth/logout", logout)
        .get("/api/v1/auth/me", me)
        .put("/api/v1/auth/password", change_password)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginRequest {
    username: String,
    password: String,
}

/// The answer to a login; the session id itself is only in the cookie.
#[derive(Serialize)]
struct LoginResponse {
    user: UserResponse,
    /// Send it as `X-CSRF-Token` with every change made with the cookie.
    csrf_token: String,
    expires_at: DateTime<Utc>,
}

async fn login(
    State(api): State<ApiState>,
    ClientAddr(client): ClientAddr,
    headers: HeaderMap,
    JsonBody(body): JsonBody<LoginRequest>,
) -> Result<Response, Error> {
    let ctx = &api.ctx;
    let user_agent = headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok());
    let request = sessions::LoginRequest {
        username: &body.username,
        password: &body.password,
        client_addr: client.as_deref(),
        user_agent,
    };
    let target = format!("user:{}", body.username.trim().to_lowercase());
    let login = match sessions::login(&ctx.store, api.auth.session_settings(), &request).await {
        Ok(login) => login,
        Err(e) => {
            let (outcome, reason) = match &e {
                auth::Error::InvalidCredentials => (Outcome::Denied, "invalid credentials"),
                auth::Error::RetryAfter(_) => (Outcome::Denied, "throttled"),
                _ => (Outcome::Failed, "error"),
            };
            let details = Some(json!({ "reason": reason }));
            record(ctx, Actor::Anonymous, client.as_deref(), Action::LoginFailed, Some(&target), outcome, details)
                .await;
            return Err(e.into());
        }
    };
    let actor = Actor::User { id: login.user.id, name: &login.user.username };
    record(ctx, actor, client.as_deref(), Action::LoginOk, Some(&target), Outcome::Ok, None).await;
    let max_age = (login.expires_at - Utc::now()).num_seconds().max(0);
    let cookie = authn::session_cookie(&ctx.config, login.session_id.expose(), max_age);
    let body = LoginResponse { user: login.user.into(), csrf_token: login.csrf_token, expires_at: login.expires_at };
    Ok(([(header::SET_COOKIE, cookie)], Json(body)).into_response())
}

/// Ends the session of the cookie (in the store: on every replica) and clears the
/// cookie. Public and idempotent: signing out twice is not an error.
async fn logout(
    State(api): State<ApiState>,
    ClientAddr(client): ClientAddr,
    caller: Option<Caller>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let ctx = &api.ctx;
    let cookie_name = authn::cookie_name(&ctx.config);
    if let Some(raw) = authn::session_id(&headers, cookie_name) {
        let ended = sessions::logout(&ctx.store, &raw).await?;
        api.auth.invalidate_session(&crate::auth::secrets::hash_secret(&raw));
        if ended && let Some(Caller(principal)) = &caller {
            let target = format!("user:{}", principal.username);
            record(ctx, principal.actor(), client.as_deref(), Action::Logout, Some(&target), Outcome::Ok, None).await;
        }
    }
    let clear = authn::session_cookie(&ctx.config, "", 0);
    Ok((StatusCode::NO_CONTENT, [(header::SET_COOKIE, clear)]).into_response())
}

#[derive(Serialize)]
struct MeResponse {
    user: UserResponse,
    /// `session` or `token`.
    via: &'static str,
    /// The token's name when `via` is `token`.
    token_name: Option<String>,
    /// The session's CSRF token (a page reloaded after login reads it here).
    csrf_token: Option<String>,
}

async fn me(State(api): State<ApiState>, Caller(principal): Caller) -> Result<Json<MeResponse>, Error> {
    let mut user: UserResponse = users::get(&api.ctx.store, principal.user_id).await?.into();
    // A token's effective role is capped by its own.
    user.role = principal.role;
    let (via, token_name, csrf_token) = match principal.via {
        Via::Session { csrf_token, .. } => ("session", None, Some(csrf_token)),
        Via::Token { name, .. } => ("token", Some(name), None),
    };
    Ok(Json(MeResponse { user, via, token_name, csrf_token }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordChange {
    current_password: String,
    new_password: String,
}

/// Changes the caller's password and ends every other session of theirs (the one
/// making the change stays signed in; a token keeps working).
async fn change_password(
    State(api): State<ApiState>,
    ClientAddr(client): ClientAddr,
    Caller(principal): Caller,
    JsonBody(body): JsonBody<PasswordChange>,
) -> Result<StatusCode, Error> {
    let ctx = &api.ctx;
    let keep = match &principal.via {
        Via::Session { session_hash, .. } => Some(session_hash.as_str()),
        Via::Token { .. } => None,
    };
    let target = format!("user:{}", principal.username);
    let changed =
        users::change_password(&ctx.store, principal.user_id, &body.current_password, &body.new_password, keep).await;
    let outcome = if changed.is_ok() { Outcome::Ok } else { Outcome::Failed };
    record(ctx, principal.actor(), client.as_deref(), Action::PasswordChange, Some(&target), outcome, None).await;
    changed.map_err(|e| match Error::from(e) {
        // The policy speaks of "password"; this body calls it `new_password`.
        Error::Invalid { field, message } if field == "password" => Error::invalid("new_password", message),
        other => other,
    })?;
    api.auth.invalidate_user(principal.user_id);
    Ok(StatusCode::NO_CONTENT)
}
