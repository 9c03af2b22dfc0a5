//! Registration tokens and enrolled runners (see `store::runner_identity`).

use super::PgStore;
use crate::store::runner_identity::{Enrollment, NewEnrollment, NewRegistrationToken, Refusal, RegistrationToken};
use crate::store::{Error, conflict};
use chrono::Utc;
use uuid::Uuid;

macro_rules! token_columns {
    () => {
        "id, description, pool, single_use, expires_at, created_by, created_at, uses, last_used_at, revoked_at"
    };
}
macro_rules! enrollment_columns {
    () => {
        "runner_id, pool, secret_hash, registration_token_id, enrolled_at, revoked_at"
    };
}

impl PgStore {
    pub(in crate::store) async fn create_registration_token(
        &self,
        new: &NewRegistrationToken<'_>,
    ) -> Result<RegistrationToken, Error> {
        sqlx::query_as::<_, RegistrationToken>(concat!(
            "insert into runner_registration_tokens
                 (id, token_hash, description, pool, single_use, expires_at, created_by, created_at)
             values ($1, $2, $3, $4, $5, $6, $7, $8) returning ",
            token_columns!()
        ))
        .bind(new.id)
        .bind(new.token_hash)
        .bind(new.description)
        .bind(new.pool)
        .bind(new.single_use)
        .bind(new.expires_at)
        .bind(new.created_by)
        .bind(Utc::now())
        .fetch_one(&self.pool)
        .await
        .map_err(conflict("registration token"))
    }

    pub(in crate::store) async fn list_registration_tokens(&self) -> Result<Vec<RegistrationToken>, Error> {
        Ok(sqlx::query_as::<_, RegistrationToken>(concat!(
            "select ",
            token_columns!(),
            " from runner_registration_tokens order by created_at desc, id desc"
        ))
        .fetch_all(&self.pool)
        .await?)
    }

    pub(in crate::store) async fn find_registration_token(
        &self,
        token_hash: &str,
    ) -> Result<Option<RegistrationToken>, Error> {
        Ok(sqlx::query_as::<_, RegistrationToken>(concat!(
            "select ",
            token_columns!(),
            " from runner_registration_tokens where token_hash = $1"
        ))
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?)
    }

    pub(in crate::store) async fn revoke_registration_token(&self, id: Uuid) -> Result<bool, Error> {
        let done = sqlx::query(
            "update runner_registration_tokens set revoked_at = now() where id = $1 and revoked_at is null",
        )
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub(in crate::store) async fn enroll_runner(
        &self,
        new: &NewEnrollment<'_>,
    ) -> Result<Result<Enrollment, Refusal>, Error> {
        let mut tx = self.pool.begin().await?;
        // `for update`: concurrent enrollments with one single-use token take turns.
        let token = sqlx::query_as::<_, RegistrationToken>(concat!(
            "select ",
            token_columns!(),
            " from runner_registration_tokens where token_hash = $1 for update"
        ))
        .bind(new.token_hash)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(token) = token else { return Ok(Err(Refusal::UnknownToken)) };
        let now = Utc::now();
        let pool = match token.admit(new.requested_pool, now) {
            Ok(pool) => pool,
            Err(refusal) => return Ok(Err(refusal)),
        };
        let inserted = sqlx::query_as::<_, Enrollment>(concat!(
            "insert into runner_enrollments (runner_id, pool, secret_hash, registration_token_id, enrolled_at)
             values ($1, $2, $3, $4, $5) on conflict (runner_id) do nothing returning ",
            enrollment_columns!()
        ))
        .bind(new.runner_id)
        .bind(&pool)
        .bind(new.secret_hash)
        .bind(token.id)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(enrollment) = inserted else { return Ok(Err(Refusal::RunnerIdTaken)) };
        sqlx::query("update runner_registration_tokens set uses = uses + 1, last_used_at = $2 where id = $1")
            .bind(token.id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Ok(enrollment))
    }

    pub(in crate::store) async fn find_enrollment(&self, runner_id: &str) -> Result<Option<Enrollment>, Error> {
        Ok(sqlx::query_as::<_, Enrollment>(concat!(
            "select ",
            enrollment_columns!(),
            " from runner_enrollments where runner_id = $1"
        ))
        .bind(runner_id)
        .fetch_optional(&self.pool)
        .await?)
    }

    pub(in crate::store) async fn list_enrollments(&self) -> Result<Vec<Enrollment>, Error> {
        Ok(sqlx::query_as::<_, Enrollment>(concat!(
            "select ",
            enrollment_columns!(),
            " from runner_enrollments order by runner_id"
        ))
        .fetch_all(&self.pool)
        .await?)
    }

    pub(in crate::store) async fn revoke_runner(&self, runner_id: &str) -> Result<bool, Error> {
        let done =
            sqlx::query("update runner_enrollments set revoked_at = now() where runner_id = $1 and revoked_at is null")
                .bind(runner_id)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() == 1)
    }
}
