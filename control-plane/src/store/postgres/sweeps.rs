//! The sweepers' queries: runs to re-offer, to stop, to fail, logs to expire.
//! Each row a sweep changes is taken by one replica (`for update skip locked`).

use super::{PgStore, secs};
use crate::store::Error;
use crate::store::policy::sql;
use crate::store::runs::{EndedAttempt, Run};
use std::time::Duration;
use uuid::Uuid;

impl PgStore {
    /// Queued runs created before `older_than` ago and not in a retry
    /// back-off: candidates for a re-offer.
    pub(in crate::store) async fn stale_queued(
        &self,
        older_than: Duration,
        limit: i64,
    ) -> Result<Vec<(Uuid, i32, String)>, Error> {
        let rows = sqlx::query_as(sql!(
            "select id, attempt, pool from runs
             where status = {status.queued} and created_at < now() - make_interval(secs => $1)
               and (not_before is null or not_before <= now())
             order by created_at limit $2"
        ))
        .bind(secs(older_than))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    /// Running attempts that outlived their timeout by more than `slack`: their
    /// runner did not stop them (frozen, or cut off but still renewing).
    pub(in crate::store) async fn overdue_runs(&self, slack: Duration, limit: i64) -> Result<Vec<Run>, Error> {
        let runs = sqlx::query_as::<_, Run>(sql!(
            "select ",
            run_columns!(),
            " from runs
             where status = {status.running} and timeout_seconds is not null
               and started_at + make_interval(secs => timeout_seconds + $1) < now()
             limit $2"
        ))
        .bind(secs(slack))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(runs)
    }

    /// Marks archived logs past retention as expired and returns their keys for
    /// deletion: logs of finished runs beyond the newest `keep_runs` of their
    /// pipeline, or finished more than `max_age` ago. Locked rows are skipped,
    /// so each log is expired by one replica.
    pub(in crate::store) async fn expire_logs(
        &self,
        keep_runs: Option<i64>,
        max_age: Option<Duration>,
        limit: i64,
    ) -> Result<Vec<(Uuid, i32, String)>, Error> {
        let rows = sqlx::query_as(sql!(
            "with ranked as (
                 select id, row_number() over (partition by pipeline_name order by created_at desc, id desc) as rank
                 from runs where status in {finals}),
             doomed as (
                 select r.id from runs r join ranked k on k.id = r.id
                 where r.log_key is not null and r.log_expired_at is null
                   and (($1::bigint is not null and k.rank > $1)
                        or ($2::float8 is not null and r.finished_at < now() - make_interval(secs => $2)))
                 limit $3
                 for update of r skip locked)
             update runs r set log_expired_at = now()
             from doomed where r.id = doomed.id
             returning r.id, r.attempt, r.log_key"
        ))
        .bind(keep_runs)
        .bind(max_age.map(secs))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
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
                     where (finished_at, run_id, attempt) > ($1, $2, $3)
                       and finished_at <= now() - make_interval(secs => $4)
                     order by finished_at, run_id, attempt limit $5",
                )
                .bind(a.finished_at)
                .bind(a.run_id)
                .bind(a.attempt)
                .bind(secs(ended_before))
                .bind(limit)
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query_as::<_, EndedAttempt>(
                    "select run_id, attempt, finished_at from run_attempts
                     where finished_at > now() - make_interval(secs => $1)
                       and finished_at <= now() - make_interval(secs => $2)
                     order by finished_at, run_id, attempt limit $3",
                )
                .bind(secs(lookback))
                .bind(secs(ended_before))
                .bind(limit)
                .fetch_all(&self.pool)
                .await?
            }
        };
        Ok(rows)
    }

    /// Fails queued runs that waited longer than `after` while no runner of
    /// their pool was heard from in the last `runner_silence` (GitLab's "stuck
    /// job": better a clear failure than a run that waits forever).
    pub(in crate::store) async fn fail_unrunnable(
        &self,
        after: Duration,
        runner_silence: Duration,
        limit: i64,
    ) -> Result<Vec<Run>, Error> {
        let runs = sqlx::query_as::<_, Run>(sql!(
            "with stuck as (
                 select id from runs r
                 where status = {status.queued} and coalesce(not_before, created_at) < now() - make_interval(secs => $1)
                   and not exists (select 1 from runners w where w.pool = r.pool
                                   and w.last_heartbeat_at > now() - make_interval(secs => $2))
                 limit $3
                 for update skip locked)
             update runs r set status = {status.failed}, failure_reason = {reason.no_runner}, finished_at = now(),
                 error_message = 'no runner of pool `' || r.pool || '` was available',
                 waiting_reason = null
             from stuck where r.id = stuck.id
             returning r.*"
        ))
        .bind(secs(after))
        .bind(secs(runner_silence))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(runs)
    }

    /// Running attempts whose lease ran out: their runner is gone or cut off.
    pub(in crate::store) async fn expired_leases(&self, limit: i64) -> Result<Vec<Run>, Error> {
        let runs = sqlx::query_as::<_, Run>(sql!(
            "select ",
            run_columns!(),
            " from runs where status = {status.running} and lease_expires_at < now()
             order by lease_expires_at limit $1"
        ))
        .bind(limit)
        .fetch_all(&self.pool)
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
        .fetch_all(&self.pool)
        .await?;
        Ok(runs)
    }
}
