//! The sweepers' queries: runs to re-offer, to stop, to fail, logs to expire.
//! The changing ones run on the single writer, so each row is taken once.

use super::{SqliteStore, ago, micros, now};
use crate::store::Error;
use crate::store::policy::sql;
use crate::store::rows::id_attempt_text;
use crate::store::runs::{EndedAttempt, Run};
use std::time::Duration;
use uuid::Uuid;

impl SqliteStore {
    pub(in crate::store) async fn stale_queued(
        &self,
        older_than: Duration,
        limit: i64,
    ) -> Result<Vec<(Uuid, i32, String)>, Error> {
        let rows = sqlx::query(sql!(
            "select id, attempt, pool from runs
             where status = {status.queued} and created_at < $1
               and (not_before is null or not_before <= $2)
             order by created_at limit $3"
        ))
        .bind(ago(older_than))
        .bind(now())
        .bind(limit)
        .fetch_all(&self.reader)
        .await?;
        id_attempt_text(&rows, "pool")
    }

    pub(in crate::store) async fn overdue_runs(&self, slack: Duration, limit: i64) -> Result<Vec<Run>, Error> {
        let runs = sqlx::query_as::<_, Run>(sql!(
            "select ",
            run_columns!(),
            " from runs
             where status = {status.running} and timeout_seconds is not null
               and started_at + timeout_seconds * 1000000 + $1 < $2
             limit $3"
        ))
        .bind(micros(slack))
        .bind(now())
        .bind(limit)
        .fetch_all(&self.reader)
        .await?;
        Ok(runs)
    }

    /// One statement on the single writer: nobody else can expire the same log.
    pub(in crate::store) async fn expire_logs(
        &self,
        keep_runs: Option<i64>,
        max_age: Option<Duration>,
        limit: i64,
    ) -> Result<Vec<(Uuid, i32, String)>, Error> {
        let rows = sqlx::query(sql!(
            "with ranked as (
                 select id, row_number() over (partition by pipeline_name order by created_at desc, id desc) as rn
                 from runs where status in {finals})
             update runs set log_expired_at = $4
             where log_key is not null and log_expired_at is null
               and id in (
                 select r.id from runs r join ranked k on k.id = r.id
                 where r.log_key is not null and r.log_expired_at is null
                   and (($1 is not null and k.rn > $1) or ($2 is not null and r.finished_at < $2))
                 limit $3)
             returning id, attempt, log_key"
        ))
        .bind(keep_runs)
        .bind(max_age.map(ago))
        .bind(limit)
        .bind(now())
        .fetch_all(&self.writer)
        .await?;
        id_attempt_text(&rows, "log_key")
    }

    pub(in crate::store) async fn ended_attempts(
        &self,
        after: Option<&EndedAttempt>,
        ended_before: Duration,
        lookback: Duration,
        limit: i64,
    ) -> Result<Vec<EndedAttempt>, Error> {
        // Two statements rather than `($n is null or …)`, so each uses the index.
        let rows = match after {
            Some(a) => {
                sqlx::query_as::<_, EndedAttempt>(
                    "select run_id, attempt, finished_at from run_attempts
                     where (finished_at, run_id, attempt) > ($1, $2, $3) and finished_at <= $4
                     order by finished_at, run_id, attempt limit $5",
                )
                .bind(a.finished_at.timestamp_micros())
                .bind(super::text(a.run_id))
                .bind(a.attempt)
                .bind(ago(ended_before))
                .bind(limit)
                .fetch_all(&self.reader)
                .await?
            }
            None => {
                sqlx::query_as::<_, EndedAttempt>(
                    "select run_id, attempt, finished_at from run_attempts
                     where finished_at > $1 and finished_at <= $2
                     order by finished_at, run_id, attempt limit $3",
                )
                .bind(ago(lookback))
                .bind(ago(ended_before))
                .bind(limit)
                .fetch_all(&self.reader)
                .await?
            }
        };
        Ok(rows)
    }

    pub(in crate::store) async fn fail_unrunnable(
        &self,
        after: Duration,
        runner_silence: Duration,
        limit: i64,
    ) -> Result<Vec<Run>, Error> {
        let runs = sqlx::query_as::<_, Run>(sql!(
            "update runs set status = {status.failed}, failure_reason = {reason.no_runner}, finished_at = $4,
                 error_message = 'no runner of pool `' || pool || '` was available',
                 waiting_reason = null
             where status = {status.queued} and id in (
                 select id from runs r
                 where status = {status.queued} and coalesce(not_before, created_at) < $1
                   and not exists (select 1 from runners w where w.pool = r.pool and w.last_heartbeat_at > $2)
                 limit $3)
             returning ",
            run_columns!()
        ))
        .bind(ago(after))
        .bind(ago(runner_silence))
        .bind(limit)
        .bind(now())
        .fetch_all(&self.writer)
        .await?;
        Ok(runs)
    }

    pub(in crate::store) async fn expired_leases(&self, limit: i64) -> Result<Vec<Run>, Error> {
        let runs = sqlx::query_as::<_, Run>(sql!(
            "select ",
            run_columns!(),
            " from runs where status = {status.running} and lease_expires_at < $1
             order by lease_expires_at limit $2"
        ))
        .bind(now())
        .bind(limit)
        .fetch_all(&self.reader)
        .await?;
        Ok(runs)
    }

    pub(in crate::store) async fn running_on_runner(&self, runner_id: &str) -> Result<Vec<Run>, Error> {
        let runs = sqlx::query_as::<_, Run>(sql!(
            "select ",
            run_columns!(),
            " from runs where status = {status.running} and runner_id = $1"
        ))
        .bind(runner_id)
        .fetch_all(&self.reader)
        .await?;
        Ok(runs)
    }
}
