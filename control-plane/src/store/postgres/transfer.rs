//! Export and import of whole rows (`control-plane migrate-store`).

use super::PgStore;
use crate::store::Error;
use crate::store::auth::User;
use crate::store::rows::{self, bind_attempt_record, bind_run_record};
use crate::store::runs::AttemptRecord;
use crate::store::transfer::{BundleRecord, RunRecord, TokenRecord};
use chrono::{DateTime, Utc};
use uuid::Uuid;

impl PgStore {
    pub(in crate::store) async fn export_runs(&self, after: Option<Uuid>, limit: i64) -> Result<Vec<RunRecord>, Error> {
        let rows = sqlx::query_as::<_, RunRecord>(concat!(
            "select ",
            run_columns!(),
            ", timeout_seconds, lease_expires_at, not_before from runs where ($1::uuid is null or id > $1) order by id limit $2"
        ))
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    pub(in crate::store) async fn import_run(&self, r: &RunRecord) -> Result<bool, Error> {
        let query = sqlx::query(rows::IMPORT_RUN);
        let done = bind_run_record!(query, r, uuid: |id| id, time: |t| t, json: |v: &serde_json::Value| v.clone())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    pub(in crate::store) async fn import_attempt(&self, run_id: Uuid, a: &AttemptRecord) -> Result<bool, Error> {
        let query = sqlx::query(rows::IMPORT_ATTEMPT);
        let done = bind_attempt_record!(query, run_id, a, time: |t| t).execute(&self.pool).await?;
        Ok(done.rows_affected() == 1)
    }

    pub(in crate::store) async fn export_bundles(
        &self,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<BundleRecord>, Error> {
        let rows: Vec<(String, Vec<u8>, DateTime<Utc>)> = sqlx::query_as(
            "select digest, data, created_at from code_bundles where ($1::text is null or digest > $1)
             order by digest limit $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(digest, data, created_at)| BundleRecord { digest, data, created_at }).collect())
    }

    pub(in crate::store) async fn import_bundle(&self, b: &BundleRecord) -> Result<bool, Error> {
        let done = sqlx::query(
            "insert into code_bundles (digest, data, created_at) values ($1, $2, $3) on conflict (digest) do nothing",
        )
        .bind(&b.digest)
        .bind(&b.data)
        .bind(b.created_at)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub(in crate::store) async fn count_runs(&self) -> Result<i64, Error> {
        let (n,): (i64,) = sqlx::query_as("select count(*) from runs").fetch_one(&self.pool).await?;
        Ok(n)
    }

    pub(in crate::store) async fn import_user(&self, u: &User) -> Result<bool, Error> {
        let done = sqlx::query(
            "insert into users (id, username, password_hash, role, disabled, created_at, updated_at,
                 credentials_changed_at)
             values ($1, $2, $3, $4, $5, $6, $7, $8) on conflict do nothing",
        )
        .bind(u.id)
        .bind(&u.username)
        .bind(&u.password_hash)
        .bind(u.role.as_str())
        .bind(u.disabled)
        .bind(u.created_at)
        .bind(u.updated_at)
        .bind(u.credentials_changed_at)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub(in crate::store) async fn export_tokens(&self) -> Result<Vec<TokenRecord>, Error> {
        let rows = sqlx::query_as::<_, TokenRecord>(concat!(
            "select ",
            token_columns!(),
            ", token_hash from api_tokens order by id"
        ))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    pub(in crate::store) async fn import_token(&self, r: &TokenRecord) -> Result<bool, Error> {
        let t = &r.token;
        let done = sqlx::query(
            "insert into api_tokens (id, name, token_hash, user_id, role, created_at, last_used_at, expires_at,
                 revoked_at)
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9) on conflict do nothing",
        )
        .bind(t.id)
        .bind(&t.name)
        .bind(&r.token_hash)
        .bind(t.user_id)
        .bind(t.role.as_str())
        .bind(t.created_at)
        .bind(t.last_used_at)
        .bind(t.expires_at)
        .bind(t.revoked_at)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}
