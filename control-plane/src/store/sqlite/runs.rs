//! Submissions, reads and cancels of runs.

use super::{SqliteStore, list_runs_sql, now, text};
use crate::store::Error;
use crate::store::policy::{self, sql};
use crate::store::rows::id_attempt_text;
use crate::store::runs::{AttemptRecord, NewRun, Run, RunFilter};
use uuid::Uuid;

impl SqliteStore {
    /// Concurrent submissions share one transaction, so one fsync (see `batch.rs`);
    /// the run is committed when this returns.
    pub(in crate::store) async fn insert_run(&self, new: NewRun<'_>) -> Result<Run, Error> {
        self.inserts.insert(new).await
    }

    pub(in crate::store) async fn get_run(&self, id: Uuid) -> Result<Option<Run>, Error> {
        let run = sqlx::query_as::<_, Run>(sql!("select ", run_columns!(), " from runs where id = $1"))
            .bind(text(id))
            .fetch_optional(&self.reader)
            .await?;
        Ok(run)
    }

    /// Newest first, keyset-paginated on (created_at, id) (the SQL: [`list_runs_sql`]).
    pub(in crate::store) async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<Run>, Error> {
        let runs = list_runs_sql("", filter).build_query_as::<Run>().fetch_all(&self.reader).await?;
        Ok(runs)
    }

    pub(in crate::store) async fn get_runs(&self, ids: &[Uuid]) -> Result<Vec<Run>, Error> {
        let ids = serde_json::Value::from(ids.iter().map(|id| text(*id)).collect::<Vec<_>>()).to_string();
        let runs = sqlx::query_as::<_, Run>(sql!(
            "select ",
            run_columns!(),
            " from runs where id in (select value from json_each($1))"
        ))
        .bind(ids)
        .fetch_all(&self.reader)
        .await?;
        Ok(runs)
    }

    pub(in crate::store) async fn cancel_queued(&self, id: Uuid) -> Result<Option<Run>, Error> {
        let run = sqlx::query_as::<_, Run>(sql!(
            "update runs set status = {status.cancelled}, failure_reason = {reason.cancelled},
                 cancel_requested_at = $2, finished_at = $2
             where id = $1 and status = {status.queued}
             returning ",
            run_columns!()
        ))
        .bind(text(id))
        .bind(now())
        .fetch_optional(&self.writer)
        .await?;
        Ok(run)
    }

    pub(in crate::store) async fn request_cancel(&self, id: Uuid, force: bool) -> Result<Option<Run>, Error> {
        let run = sqlx::query_as::<_, Run>(sql!(
            "update runs set cancel_requested_at = coalesce(cancel_requested_at, $3),
                 cancel_force = cancel_force or $2
             where id = $1 and status = {status.running}
             returning ",
            run_columns!()
        ))
        .bind(text(id))
        .bind(force)
        .bind(now())
        .fetch_optional(&self.writer)
        .await?;
        Ok(run)
    }

    pub(in crate::store) async fn count_active(&self, pipeline_name: &str) -> Result<(i64, i64), Error> {
        let counts =
            sqlx::query_as(sql!(const policy::COUNT_ACTIVE)).bind(pipeline_name).fetch_one(&self.reader).await?;
        Ok(counts)
    }

    pub(in crate::store) async fn waiting_runs(&self, limit: i64) -> Result<Vec<(Uuid, i32, String)>, Error> {
        let rows = sqlx::query(sql!(
            "select id, attempt, pool from runs where status = {status.queued} and waiting_reason is not null
               and (not_before is null or not_before <= $2)
             order by created_at limit $1"
        ))
        .bind(limit)
        .bind(now())
        .fetch_all(&self.reader)
        .await?;
        id_attempt_text(&rows, "pool")
    }

    pub(in crate::store) async fn attempts(&self, run_id: Uuid) -> Result<Vec<AttemptRecord>, Error> {
        let rows = sqlx::query_as::<_, AttemptRecord>(concat!(
            "select ",
            attempt_columns!(),
            " from run_attempts where run_id = $1 order by attempt"
        ))
        .bind(text(run_id))
        .fetch_all(&self.reader)
        .await?;
        Ok(rows)
    }
}
