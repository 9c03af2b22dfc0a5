//! Export and import of whole rows (`control-plane migrate-store`).

use super::PgStore;
use crate::store::Error;
use crate::store::rows::{self, bind_attempt_record, bind_run_record};
use crate::store::runs::AttemptRecord;
use crate::store::transfer::{BundleRecord, RunRecord};
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
}
