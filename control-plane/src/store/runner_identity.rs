//! Runner identity: registration tokens and the runners enrolled with them. The
//! store decides only what must be atomic: a single-use token admits one runner,
//! and a runner id is enrolled once (a revoked id is not given out again). Secrets
//! never reach it: tokens and runner secrets are looked up by their hex SHA-256.
//! The SQL is in `postgres/runner_identity.rs` and `sqlite/runner_identity.rs`.

use super::{Error, Store, dispatch};
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// A registration token row (never its value).
#[derive(Debug, Clone, PartialEq)]
pub struct RegistrationToken {
    pub id: Uuid,
    pub description: String,
    /// `None`: the runner's own pool setting decides.
    pub pool: Option<String>,
    pub single_use: bool,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub uses: i32,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

pub struct NewRegistrationToken<'a> {
    pub id: Uuid,
    pub token_hash: &'a str,
    pub description: &'a str,
    pub pool: Option<&'a str>,
    pub single_use: bool,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_by: Option<Uuid>,
}

/// An enrolled runner.
#[derive(Debug, Clone, PartialEq)]
pub struct Enrollment {
    pub runner_id: String,
    pub pool: String,
    /// Hex SHA-256 of the runner's secret.
    pub secret_hash: String,
    pub registration_token_id: Option<Uuid>,
    pub enrolled_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Why a registration token does not admit a runner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("unknown registration token")]
    UnknownToken,
    #[error("the registration token has expired")]
    Expired,
    #[error("the registration token was single-use and is used up")]
    UsedUp,
    #[error("the registration token was revoked")]
    Revoked,
    #[error("the registration token enrolls runners in another pool than the one RUNNER_POOL names")]
    PoolMismatch,
    #[error("a runner with this id is already enrolled (or was, and was revoked): choose another RUNNER_ID")]
    RunnerIdTaken,
}

impl RegistrationToken {
    /// Whether the token admits one more runner at `now`, asking for `requested_pool`;
    /// the pool the runner gets.
    pub fn admit(&self, requested_pool: Option<&str>, now: DateTime<Utc>) -> Result<String, Refusal> {
        if self.revoked_at.is_some() {
            return Err(Refusal::Revoked);
        }
        if self.expires_at.is_some_and(|at| at <= now) {
            return Err(Refusal::Expired);
        }
        if self.single_use && self.uses > 0 {
            return Err(Refusal::UsedUp);
        }
        match (&self.pool, requested_pool) {
            (Some(fixed), Some(asked)) if fixed != asked => Err(Refusal::PoolMismatch),
            (Some(fixed), _) => Ok(fixed.clone()),
            (None, Some(asked)) => Ok(asked.to_owned()),
            (None, None) => Ok(shared::subjects::DEFAULT_POOL.to_owned()),
        }
    }
}

/// What enrolling asks the store to record.
pub struct NewEnrollment<'a> {
    pub token_hash: &'a str,
    pub runner_id: &'a str,
    pub requested_pool: Option<&'a str>,
    pub secret_hash: &'a str,
}

impl Store {
    pub async fn create_registration_token(&self, new: &NewRegistrationToken<'_>) -> Result<RegistrationToken, Error> {
        dispatch!(self.create_registration_token(new))
    }

    /// Every registration token, newest first.
    pub async fn list_registration_tokens(&self) -> Result<Vec<RegistrationToken>, Error> {
        dispatch!(self.list_registration_tokens())
    }

    pub async fn find_registration_token(&self, token_hash: &str) -> Result<Option<RegistrationToken>, Error> {
        dispatch!(self.find_registration_token(token_hash))
    }

    /// `true` if the token was active.
    pub async fn revoke_registration_token(&self, id: Uuid) -> Result<bool, Error> {
        dispatch!(self.revoke_registration_token(id))
    }

    /// In one transaction: the token admits the runner (see [`RegistrationToken::admit`]),
    /// its use is counted and the runner is enrolled.
    pub async fn enroll_runner(&self, new: &NewEnrollment<'_>) -> Result<Result<Enrollment, Refusal>, Error> {
        dispatch!(self.enroll_runner(new))
    }

    pub async fn find_enrollment(&self, runner_id: &str) -> Result<Option<Enrollment>, Error> {
        dispatch!(self.find_enrollment(runner_id))
    }

    /// Every enrolled runner (revoked ones too), by id.
    pub async fn list_enrollments(&self) -> Result<Vec<Enrollment>, Error> {
        dispatch!(self.list_enrollments())
    }

    /// `true` if the runner was enrolled and not yet revoked.
    pub async fn revoke_runner(&self, runner_id: &str) -> Result<bool, Error> {
        dispatch!(self.revoke_runner(runner_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> RegistrationToken {
        RegistrationToken {
            id: Uuid::nil(),
            description: String::new(),
            pool: None,
            single_use: true,
            expires_at: None,
            created_by: None,
            created_at: Utc::now(),
            uses: 0,
            last_used_at: None,
            revoked_at: None,
        }
    }

    #[test]
    fn a_token_admits_by_its_rules() {
        let now = Utc::now();
        assert_eq!(token().admit(None, now), Ok("default".into()));
        assert_eq!(token().admit(Some("gpu"), now), Ok("gpu".into()));
        let used = RegistrationToken { uses: 1, ..token() };
        assert_eq!(used.admit(None, now), Err(Refusal::UsedUp));
        let reusable = RegistrationToken { uses: 5, single_use: false, ..token() };
        assert!(reusable.admit(None, now).is_ok());
        let expired = RegistrationToken { expires_at: Some(now - chrono::Duration::seconds(1)), ..token() };
        assert_eq!(expired.admit(None, now), Err(Refusal::Expired));
        let revoked = RegistrationToken { revoked_at: Some(now), ..token() };
        assert_eq!(revoked.admit(None, now), Err(Refusal::Revoked));
        let pinned = RegistrationToken { pool: Some("gpu".into()), ..token() };
        assert_eq!(pinned.admit(None, now), Ok("gpu".into()));
        assert_eq!(pinned.admit(Some("gpu"), now), Ok("gpu".into()));
        assert_eq!(pinned.admit(Some("cpu"), now), Err(Refusal::PoolMismatch));
    }
}
