//! Submissions, reads and cancels of runs.

use super::PgStore;
use crate::store::Error;
use crate::store::policy::{self, sql};
use crate::store::runs::{AttemptRecord, NewRun, Run, RunFilter};
use uuid::Uuid;

impl PgStore {
    pub(in crate::store) async fn insert_run(&self, new: NewRun<'_>) -> Result<Run, Error> {
        let run = sqlx::query_as::<_, Run>(sql!(
            "insert into runs (id, pipeline_name, pool, status, params, spec, timeout_seconds, triggered_by)
             values ($1, $2, $5, {status.queued}, $3, $4, $6, $7)
             returning ",
            run_columns!()
        ))
        .bind(new.id)
        .bind(new.pipeline_name)
        .bind(new.params)
        .bind(new.spec)
        .bind(new.pool)
        .bind(new.timeout_seconds)
        .bind(new.triggered_by)
        .fetch_one(&self.pool)
        .await?;
        Ok(run)
    }

    pub(in crate::store) async fn get_run(&self, id: Uuid) -> Result<Option<Run>, Error> {
        let run = sqlx::query_as::<_, Run>(sql!("select ", run_columns!(), " from runs where id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(run)
    }

    /// Newest first, keyset-paginated on (created_at, id). Only the filters given
    /// appear in the SQL: an `($1 is null or status = $1)` form would keep the planner
    /// from the per-status and per-pipeline indexes under a generic plan.
    pub(in crate::store) async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<Run>, Error> {
        let mut sql = sqlx::QueryBuilder::<sqlx::Postgres>::new(concat!(
            "select ",
            run_columns!("'null'::jsonb"),
            " from runs where true"
        ));
        if let Some(pipeline) = &filter.pipeline {
            sql.push(" and pipeline_name = ").push_bind(pipeline.clone());
        }
        if let Some(status) = filter.status {
            sql.push(" and status = ").push_bind(status.as_str());
        }
        if let Some((before_ts, before_id)) = filter.before {
            sql.push(" and (created_at, id) < (").push_bind(before_ts).push(", ").push_bind(before_id).push(")");
        }
        // The limit is written into the statement, not bound: with `limit $n` Postgres never
        // settles on its cached generic plan (it cannot know the row count) and plans every
        // execution again; a literal limit lets the plan be reused (BENCHMARKS.md, round 7).
        // An i64 renders as digits only; each distinct limit is one more cached statement
        // per connection, and sqlx's statement cache is LRU-bounded.
        sql.push(" order by created_at desc, id desc limit ").push(filter.limit);
        let runs = sql.build_query_as::<Run>().fetch_all(&self.pool).await?;
        Ok(runs)
    }

    pub(in crate::store) async fn get_runs(&self, ids: &[Uuid]) -> Result<Vec<Run>, Error> {
        let runs = sqlx::query_as::<_, Run>(sql!("select ", run_columns!(), " from runs where id = any($1)"))
            .bind(ids)
            .fetch_all(&self.pool)
            .await?;
        Ok(runs)
    }

    /// Cancels a run that no runner holds yet; it will never start.
    pub(in crate::store) async fn cancel_queued(&self, id: Uuid) -> Result<Option<Run>, Error> {
        let run = sqlx::query_as::<_, Run>(sql!(
            "update runs set status = {status.cancelled}, failure_reason = {reason.cancelled},
                 cancel_requested_at = now(), finished_at = now()
             where id = $1 and status = {status.queued}
             returning ",
            run_columns!()
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(run)
    }

    /// Marks a running run for cancellation; its runner stops it and reports.
    pub(in crate::store) async fn request_cancel(&self, id: Uuid, force: bool) -> Result<Option<Run>, Error> {
        let run = sqlx::query_as::<_, Run>(sql!(
            "update runs set cancel_requested_at = coalesce(cancel_requested_at, now()),
                 cancel_force = cancel_force or $2
             where id = $1 and status = {status.running}
             returning ",
            run_columns!()
        ))
        .bind(id)
        .bind(force)
        .fetch_optional(&self.pool)
        .await?;
        Ok(run)
    }

    /// Runs executing or waiting now, overall and of one pipeline.
    pub(in crate::store) async fn count_active(&self, pipeline_name: &str) -> Result<(i64, i64), Error> {
        let counts = sqlx::query_as(sql!(const policy::COUNT_ACTIVE)).bind(pipeline_name).fetch_one(&self.pool).await?;
        Ok(counts)
    }

    /// Queued runs held back by a concurrency limit, oldest first.
    pub(in crate::store) async fn waiting_runs(&self, limit: i64) -> Result<Vec<(Uuid, i32, String)>, Error> {
        let rows = sqlx::query_as(sql!(
            "select id, attempt, pool from runs where status = {status.queued} and waiting_reason is not null
               and (not_before is null or not_before <= now())
             order by created_at limit $1"
        ))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    /// The finished attempts of a run, oldest first.
    pub(in crate::store) async fn attempts(&self, run_id: Uuid) -> Result<Vec<AttemptRecord>, Error> {
        let rows = sqlx::query_as::<_, AttemptRecord>(concat!(
            "select ",
            attempt_columns!(),
            " from run_attempts where run_id = $1 order by attempt"
        ))
        .bind(run_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }
}
