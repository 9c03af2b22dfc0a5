//! Runner identity (issue 18): registration tokens, enrollment, the runners' NATS
//! permissions and their checking.
//!
//! * An admin creates a registration token (shown once). A new runner exchanges it
//!   once (`enroll`) for its own id, pool and secret.
//! * The NATS server asks the control plane about every connection (auth callout,
//!   `callout.rs`): an enrolled, unrevoked runner gets permissions for its own
//!   subjects only (`permissions.rs`); a registration token gets the right to ask to
//!   enroll and nothing else; anything else is refused.
//! * The runner API (`crate::runner_api`) reads the sender from the request subject
//!   (which the server only lets the runner itself publish on) and checks, through
//!   [`cache::Identities`], that it is enrolled, unrevoked, and of the run's pool.

pub mod cache;
pub mod callout;
pub mod permissions;

use crate::auth::secrets::{self, Secret};
use crate::store::runner_identity::{Enrollment, NewEnrollment, NewRegistrationToken, Refusal, RegistrationToken};
use crate::store::{self, Store};
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// The prefix of registration tokens (secret scanners and the callout recognise them).
pub const REGISTRATION_TOKEN_PREFIX: &str = "ffreg_";
/// The prefix of runner secrets.
pub const RUNNER_SECRET_PREFIX: &str = "ffrs_";
/// Longest registration token description.
pub const MAX_DESCRIPTION: usize = 200;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error("the expiry is in the past")]
    ExpiryInPast,
    #[error("pool: use 1-64 letters, digits, `-` or `_`")]
    InvalidPool,
    #[error("description: at most {MAX_DESCRIPTION} characters, no control characters")]
    InvalidDescription,
    #[error("runner id: use 1-64 letters, digits, `-` or `_`")]
    InvalidRunnerId,
    #[error("{0}")]
    Refused(#[from] Refusal),
    #[error("no enrolled runner {0}")]
    UnknownRunner(String),
}

pub struct NewTokenRequest<'a> {
    pub description: &'a str,
    pub pool: Option<&'a str>,
    pub single_use: bool,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_by: Option<Uuid>,
}

/// A new registration token: `token` is shown once and never again.
#[derive(Debug)]
pub struct CreatedToken {
    pub token: Secret,
    pub info: RegistrationToken,
}

pub async fn create_registration_token(store: &Store, req: &NewTokenRequest<'_>) -> Result<CreatedToken, Error> {
    let description = req.description.trim();
    if description.chars().count() > MAX_DESCRIPTION || description.chars().any(char::is_control) {
        return Err(Error::InvalidDescription);
    }
    if req.pool.is_some_and(|p| !shared::subjects::valid_pool(p)) {
        return Err(Error::InvalidPool);
    }
    if req.expires_at.is_some_and(|at| at <= Utc::now()) {
        return Err(Error::ExpiryInPast);
    }
    let token = secrets::new_prefixed_secret(REGISTRATION_TOKEN_PREFIX);
    let info = store
        .create_registration_token(&NewRegistrationToken {
            id: Uuid::now_v7(),
            token_hash: &secrets::hash_secret(token.expose()),
            description,
            pool: req.pool,
            single_use: req.single_use,
            expires_at: req.expires_at,
            created_by: req.created_by,
        })
        .await?;
    tracing::info!(id = %info.id, pool = ?info.pool, single_use = info.single_use, "runner registration token created");
    Ok(CreatedToken { token, info })
}

/// Whether `token` would admit a runner now (the callout's check before the enroll
/// request itself consumes it).
pub async fn registration_token_usable(store: &Store, token: &str) -> Result<Result<(), Refusal>, Error> {
    if !token.starts_with(REGISTRATION_TOKEN_PREFIX) {
        return Ok(Err(Refusal::UnknownToken));
    }
    Ok(match store.find_registration_token(&secrets::hash_secret(token)).await? {
        None => Err(Refusal::UnknownToken),
        Some(t) => t.admit(None, Utc::now()).map(|_| ()).or_else(|e| match e {
            // The pool is checked when the runner says which it wants.
            Refusal::PoolMismatch => Ok(()),
            other => Err(other),
        }),
    })
}

/// An enrolled runner: its identity and its secret, shown to it once.
pub struct Enrolled {
    pub enrollment: Enrollment,
    pub secret: Secret,
}

/// Exchanges a registration token for a runner identity (atomically: a single-use
/// token admits one runner, a runner id is enrolled once).
pub async fn enroll(
    store: &Store,
    token: &str,
    runner_id: &str,
    requested_pool: Option<&str>,
) -> Result<Enrolled, Error> {
    if !shared::subjects::valid_runner_id(runner_id) {
        return Err(Error::InvalidRunnerId);
    }
    if requested_pool.is_some_and(|p| !shared::subjects::valid_pool(p)) {
        return Err(Error::InvalidPool);
    }
    if !token.starts_with(REGISTRATION_TOKEN_PREFIX) {
        return Err(Error::Refused(Refusal::UnknownToken));
    }
    let secret = secrets::new_prefixed_secret(RUNNER_SECRET_PREFIX);
    let enrollment = store
        .enroll_runner(&NewEnrollment {
            token_hash: &secrets::hash_secret(token),
            runner_id,
            requested_pool,
            secret_hash: &secrets::hash_secret(secret.expose()),
        })
        .await??;
    tracing::info!(runner_id, pool = %enrollment.pool, "runner enrolled");
    Ok(Enrolled { enrollment, secret })
}

/// The enrolled, unrevoked runner `runner_id` if `secret` is its secret.
pub async fn authenticate_runner(store: &Store, runner_id: &str, secret: &str) -> Result<Option<Enrollment>, Error> {
    if !shared::subjects::valid_runner_id(runner_id) || !secret.starts_with(RUNNER_SECRET_PREFIX) {
        return Ok(None);
    }
    let Some(enrollment) = store.find_enrollment(runner_id).await? else { return Ok(None) };
    let matches = secrets::constant_time_eq(&enrollment.secret_hash, &secrets::hash_secret(secret));
    Ok((matches && enrollment.revoked_at.is_none()).then_some(enrollment))
}

/// Revokes a runner: it can no longer connect, and the runner API refuses its
/// requests within [`cache::STALENESS`]; its running attempts then end like a lost
/// runner's when their leases run out.
pub async fn revoke_runner(store: &Store, runner_id: &str) -> Result<(), Error> {
    match store.find_enrollment(runner_id).await? {
        None => Err(Error::UnknownRunner(runner_id.to_owned())),
        Some(_) => {
            if store.revoke_runner(runner_id).await? {
                tracing::info!(runner_id, "runner revoked");
            }
            Ok(())
        }
    }
}
