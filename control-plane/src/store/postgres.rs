//! The Postgres backend: many replicas share one database. Claims are
//! serialised by an advisory lock, sweeps skip rows another replica holds
//! (`for update skip locked`), and every transition is one guarded statement.

use super::Error;
use super::runners::RunnerInfo;
use super::runs::{ArchivedLog, AttemptRecord, Claim, ClaimResult, LeaseState, NewRun, Outcome, Run, RunFilter};
use super::transfer::{BundleRecord, RunRecord};
use chrono::{DateTime, Utc};
use shared::protocol::{AttemptRef, Heartbeat};
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};
use sqlx::{FromRow, Row};
use std::time::Duration;
use uuid::Uuid;

/// Arbitrary constant naming the advisory lock that serialises claims.
const CLAIM_LOCK: i64 = 0x4661_7374_466c_6f77; // "FastFlow"

#[derive(Clone)]
pub(super) struct PgStore {
    pool: PgPool,
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

impl PgStore {
    pub(super) async fn connect(url: &str) -> Result<PgStore, Error> {
        let pool =
            PgPoolOptions::new().max_connections(16).acquire_timeout(Duration::from_secs(5)).connect(url).await?;
        // The path of the migrations predates SQLite; their content (and so
        // the checksums sqlx recorded in existing databases) is unchanged.
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(PgStore { pool })
    }

    pub(super) async fn ping(&self) -> Result<(), Error> {
        sqlx::query("select 1").execute(&self.pool).await?;
        Ok(())
    }
}

impl<'r> FromRow<'r, PgRow> for Run {
    fn from_row(row: &'r PgRow) -> Result<Self, sqlx::Error> {
        let status: String = row.try_get("status")?;
        let reason: Option<String> = row.try_get("failure_reason")?;
        let decode = |e: shared::status::ParseError| sqlx::Error::Decode(Box::new(e));
        Ok(Run {
            id: row.try_get("id")?,
            pipeline_name: row.try_get("pipeline_name")?,
            pool: row.try_get("pool")?,
            status: status.parse().map_err(decode)?,
            attempt: row.try_get("attempt")?,
            trigger: row.try_get("trigger")?,
            params: row.try_get("params")?,
            spec: row.try_get("spec")?,
            runner_id: row.try_get("runner_id")?,
            fencing_token: row.try_get("fencing_token")?,
            cancel_requested_at: row.try_get("cancel_requested_at")?,
            cancel_force: row.try_get("cancel_force")?,
            waiting_reason: row.try_get("waiting_reason")?,
            log_expired_at: row.try_get("log_expired_at")?,
            exit_code: row.try_get("exit_code")?,
            failure_reason: reason.map(|r| r.parse()).transpose().map_err(decode)?,
            error_message: row.try_get("error_message")?,
            log_key: row.try_get("log_key")?,
            log_size_bytes: row.try_get("log_size_bytes")?,
            created_at: row.try_get("created_at")?,
            started_at: row.try_get("started_at")?,
            finished_at: row.try_get("finished_at")?,
        })
    }
}

impl PgStore {
    pub(super) async fn insert_run(&self, new: NewRun<'_>) -> Result<Run, Error> {
        let run = sqlx::query_as::<_, Run>(concat!(
            "insert into runs (id, pipeline_name, pool, status, params, spec) values ($1, $2, $5, 'queued', $3, $4)
             returning ",
            run_columns!()
        ))
        .bind(new.id)
        .bind(new.pipeline_name)
        .bind(new.params)
        .bind(new.spec)
        .bind(new.pool)
        .fetch_one(&self.pool)
        .await?;
        Ok(run)
    }

    pub(super) async fn get_run(&self, id: Uuid) -> Result<Option<Run>, Error> {
        let run = sqlx::query_as::<_, Run>(concat!("select ", run_columns!(), " from runs where id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(run)
    }

    /// Newest first, keyset-paginated on (created_at, id). Only the filters given
    /// appear in the SQL: an `($1 is null or status = $1)` form would keep the planner
    /// from the per-status and per-pipeline indexes under a generic plan.
    pub(super) async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<Run>, Error> {
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

    pub(super) async fn get_runs(&self, ids: &[Uuid]) -> Result<Vec<Run>, Error> {
        let runs = sqlx::query_as::<_, Run>(concat!("select ", run_columns!(), " from runs where id = any($1)"))
            .bind(ids)
            .fetch_all(&self.pool)
            .await?;
        Ok(runs)
    }

    /// All claims in one transaction. The advisory lock (which serialises
    /// claims across replicas) is taken only when a concurrency limit applies:
    /// without one, the conditional `update` alone decides, so concurrent
    /// claims of different runs do not wait for each other, and a batch of one
    /// runner is one set-based statement.
    pub(super) async fn claim_batch(&self, claims: &[Claim<'_>]) -> Result<Vec<ClaimResult>, Error> {
        let mut tx = self.pool.begin().await?;
        let results = match claims {
            [first, ..]
                if !claims.iter().any(Claim::is_limited)
                    && claims.iter().all(|c| c.runner_id == first.runner_id && c.lease == first.lease) =>
            {
                Self::claim_unlimited(&mut tx, claims).await?
            }
            _ => {
                if claims.iter().any(Claim::is_limited) {
                    sqlx::query("select pg_advisory_xact_lock($1)").bind(CLAIM_LOCK).execute(&mut *tx).await?;
                }
                let mut results = Vec::with_capacity(claims.len());
                for claim in claims {
                    results.push(Self::claim_in(&mut tx, claim).await?);
                }
                results
            }
        };
        tx.commit().await?;
        Ok(results)
    }

    /// Claims of one runner without a limit: one `update … from unnest(…)`; the
    /// runs it did not take are checked one by one (backing off, or gone).
    async fn claim_unlimited(tx: &mut sqlx::PgConnection, claims: &[Claim<'_>]) -> Result<Vec<ClaimResult>, Error> {
        let Some(first) = claims.first() else { return Ok(Vec::new()) };
        let ids: Vec<Uuid> = claims.iter().map(|c| c.run_id).collect();
        let attempts: Vec<i32> = claims.iter().map(|c| c.attempt).collect();
        let granted = sqlx::query_as::<_, Run>(concat!(
            "update runs set status = 'running', runner_id = $3, fencing_token = fencing_token + 1,
                 lease_expires_at = now() + make_interval(secs => $4), started_at = now(), waiting_reason = null
             from unnest($1::uuid[], $2::int4[]) as wanted(wanted_id, wanted_attempt)
             where id = wanted_id and attempt = wanted_attempt
               and status = 'queued' and (not_before is null or not_before <= now())
             returning ",
            run_columns!()
        ))
        .bind(&ids)
        .bind(&attempts)
        .bind(first.runner_id)
        .bind(secs(first.lease))
        .fetch_all(&mut *tx)
        .await?;
        let mut granted: std::collections::HashMap<Uuid, Run> = granted.into_iter().map(|r| (r.id, r)).collect();
        let mut results = Vec::with_capacity(claims.len());
        for claim in claims {
            // `remove`: a run named twice in the batch is granted once.
            results.push(match granted.remove(&claim.run_id) {
                Some(run) => ClaimResult::Granted(Box::new(run)),
                None => Self::not_granted(tx, claim).await?,
            });
        }
        Ok(results)
    }

    async fn claim_in(tx: &mut sqlx::PgConnection, claim: &Claim<'_>) -> Result<ClaimResult, Error> {
        if claim.is_limited() {
            let (running, running_here): (i64, i64) = sqlx::query_as(
                "select count(*), count(*) filter (where pipeline_name = $1) from runs where status = 'running'",
            )
            .bind(claim.pipeline_name)
            .fetch_one(&mut *tx)
            .await?;
            let blocked_by = if claim.max_running.is_some_and(|max| running >= max) {
                Some("max_concurrent_runs")
            } else if claim.max_running_of_pipeline.is_some_and(|max| running_here >= max) {
                Some("pipeline_max_concurrent")
            } else {
                None
            };
            if let Some(reason) = blocked_by {
                return Self::hold_back(tx, claim, reason).await;
            }
        }
        let run = sqlx::query_as::<_, Run>(concat!(
            "update runs set status = 'running', runner_id = $3, fencing_token = fencing_token + 1,
                 lease_expires_at = now() + make_interval(secs => $4), started_at = now(), waiting_reason = null
             where id = $1 and attempt = $2 and status = 'queued' and (not_before is null or not_before <= now())
             returning ",
            run_columns!()
        ))
        .bind(claim.run_id)
        .bind(claim.attempt)
        .bind(claim.runner_id)
        .bind(secs(claim.lease))
        .fetch_optional(&mut *tx)
        .await?;
        match run {
            Some(run) => Ok(ClaimResult::Granted(Box::new(run))),
            None => Self::not_granted(tx, claim).await,
        }
    }

    /// Why a claim's update took nothing: still backing off before a retry
    /// (the run stays queued, marked), or no longer queued.
    async fn not_granted(tx: &mut sqlx::PgConnection, claim: &Claim<'_>) -> Result<ClaimResult, Error> {
        let backing_off: Option<(i32,)> =
            sqlx::query_as("select attempt from runs where id = $1 and status = 'queued' and not_before > now()")
                .bind(claim.run_id)
                .fetch_optional(&mut *tx)
                .await?;
        match backing_off {
            Some((attempt,)) if attempt == claim.attempt => Self::hold_back(tx, claim, "retry_backoff").await,
            _ => Ok(ClaimResult::Gone),
        }
    }

    /// The run stays queued, marked with why.
    async fn hold_back(
        tx: &mut sqlx::PgConnection,
        claim: &Claim<'_>,
        reason: &'static str,
    ) -> Result<ClaimResult, Error> {
        sqlx::query("update runs set waiting_reason = $3 where id = $1 and attempt = $2 and status = 'queued'")
            .bind(claim.run_id)
            .bind(claim.attempt)
            .bind(reason)
            .execute(&mut *tx)
            .await?;
        Ok(ClaimResult::Waiting(reason))
    }

    /// Runs executing or waiting now, overall and of one pipeline.
    pub(super) async fn count_active(&self, pipeline_name: &str) -> Result<(i64, i64), Error> {
        let counts = sqlx::query_as(
            "select count(*), count(*) filter (where pipeline_name = $1) from runs
             where status in ('queued', 'running')",
        )
        .bind(pipeline_name)
        .fetch_one(&self.pool)
        .await?;
        Ok(counts)
    }

    /// Queued runs held back by a concurrency limit, oldest first.
    pub(super) async fn waiting_runs(&self, limit: i64) -> Result<Vec<(Uuid, i32, String)>, Error> {
        let rows = sqlx::query_as(
            "select id, attempt, pool from runs where status = 'queued' and waiting_reason is not null
               and (not_before is null or not_before <= now())
             order by created_at limit $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    /// Extends the leases of the attempts a runner still holds; attempts it no
    /// longer holds are simply absent from the answer.
    pub(super) async fn renew_leases(
        &self,
        runner_id: &str,
        held: &[AttemptRef],
        lease: Duration,
    ) -> Result<Vec<LeaseState>, Error> {
        let ids: Vec<Uuid> = held.iter().map(|a| a.run_id).collect();
        let attempts: Vec<i32> = held.iter().map(|a| a.attempt).collect();
        let tokens: Vec<i64> = held.iter().map(|a| a.fencing_token).collect();
        let rows: Vec<(Uuid, i32, i64, bool, bool)> = sqlx::query_as(
            "update runs r set lease_expires_at = now() + make_interval(secs => $5)
             from unnest($2::uuid[], $3::int[], $4::bigint[]) as h(id, attempt, token)
             where r.id = h.id and r.attempt = h.attempt and r.fencing_token = h.token
               and r.status = 'running' and r.runner_id = $1
             returning r.id, r.attempt, r.fencing_token, r.cancel_requested_at is not null, r.cancel_force",
        )
        .bind(runner_id)
        .bind(&ids)
        .bind(&attempts)
        .bind(&tokens)
        .bind(secs(lease))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(run_id, attempt, fencing_token, cancel_requested, cancel_force)| LeaseState {
                attempt: AttemptRef { run_id, attempt, fencing_token },
                cancel_requested,
                cancel_force,
            })
            .collect())
    }

    /// Ends a running attempt held with this token: records it in
    /// `run_attempts`, then either finalises the run or, with `retry_after`,
    /// queues the next attempt to start no earlier than that.
    pub(super) async fn end_attempt(
        &self,
        at: &AttemptRef,
        outcome: &Outcome,
        log: Option<&ArchivedLog>,
        retry_after: Option<Duration>,
    ) -> Result<Option<Run>, Error> {
        // One statement: the guard (`current`) locks the row, the attempt is
        // recorded, and the run moves on, or nothing happens at all.
        macro_rules! record_attempt_then {
            ($update:literal) => {
                concat!(
                    "with current as (
                         select id, attempt, runner_id, started_at from runs
                         where id = $1 and attempt = $2 and fencing_token = $3 and status = 'running' for update),
                     recorded as (
                         insert into run_attempts (run_id, attempt, status, failure_reason, exit_code, error_message,
                             runner_id, started_at, finished_at, log_key, log_size_bytes)
                         select id, attempt, $4, $5, $6, $7, runner_id, started_at, now(), $8, coalesce($9, 0)
                         from current) ",
                    $update,
                    " from current where r.id = current.id returning r.*"
                )
            };
        }
        const FINAL: &str = record_attempt_then!(
            "update runs r set status = $4, failure_reason = $5, exit_code = $6, error_message = $7,
                 log_key = $8, log_size_bytes = coalesce($9, 0), finished_at = now(), lease_expires_at = null"
        );
        const RETRY: &str = record_attempt_then!(
            "update runs r set status = 'queued', attempt = r.attempt + 1, runner_id = null,
                 lease_expires_at = null, cancel_requested_at = null, cancel_force = false,
                 exit_code = null, failure_reason = null, error_message = null, log_key = null,
                 log_size_bytes = 0, started_at = null, finished_at = null,
                 not_before = now() + make_interval(secs => $10), waiting_reason = 'retry_backoff'"
        );
        let run = sqlx::query_as::<_, Run>(if retry_after.is_some() { RETRY } else { FINAL })
            .bind(at.run_id)
            .bind(at.attempt)
            .bind(at.fencing_token)
            .bind(outcome.status.as_str())
            .bind(outcome.reason.map(|r| r.as_str()))
            .bind(outcome.exit_code)
            .bind(outcome.error_message.as_deref())
            .bind(log.map(|l| l.key.as_str()))
            .bind(log.map(|l| l.size))
            .bind(retry_after.map(secs).unwrap_or_default())
            .fetch_optional(&self.pool)
            .await?;
        Ok(run)
    }

    /// The finished attempts of a run, oldest first.
    pub(super) async fn attempts(&self, run_id: Uuid) -> Result<Vec<AttemptRecord>, Error> {
        let rows = sqlx::query_as::<_, AttemptRecord>(
            "select attempt, status, failure_reason, exit_code, error_message, runner_id, started_at,
                    finished_at, log_key, log_size_bytes
             from run_attempts where run_id = $1 order by attempt",
        )
        .bind(run_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    /// Cancels a run that no runner holds yet; it will never start.
    pub(super) async fn cancel_queued(&self, id: Uuid) -> Result<Option<Run>, Error> {
        let run = sqlx::query_as::<_, Run>(concat!(
            "update runs set status = 'cancelled', failure_reason = 'cancelled',
                 cancel_requested_at = now(), finished_at = now()
             where id = $1 and status = 'queued'
             returning ",
            run_columns!()
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(run)
    }

    /// Marks a running run for cancellation; its runner stops it and reports.
    pub(super) async fn request_cancel(&self, id: Uuid, force: bool) -> Result<Option<Run>, Error> {
        let run = sqlx::query_as::<_, Run>(concat!(
            "update runs set cancel_requested_at = coalesce(cancel_requested_at, now()),
                 cancel_force = cancel_force or $2
             where id = $1 and status = 'running'
             returning ",
            run_columns!()
        ))
        .bind(id)
        .bind(force)
        .fetch_optional(&self.pool)
        .await?;
        Ok(run)
    }

    /// Queued runs created before `older_than` ago and not in a retry
    /// back-off: candidates for a re-offer.
    pub(super) async fn stale_queued(
        &self,
        older_than: Duration,
        limit: i64,
    ) -> Result<Vec<(Uuid, i32, String)>, Error> {
        let rows = sqlx::query_as(
            "select id, attempt, pool from runs
             where status = 'queued' and created_at < now() - make_interval(secs => $1)
               and (not_before is null or not_before <= now())
             order by created_at limit $2",
        )
        .bind(secs(older_than))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    /// Running attempts that outlived their timeout by more than `slack`: their
    /// runner did not stop them (frozen, or cut off but still renewing).
    pub(super) async fn overdue_runs(&self, slack: Duration, limit: i64) -> Result<Vec<Run>, Error> {
        let runs = sqlx::query_as::<_, Run>(concat!(
            "select ",
            run_columns!(),
            " from runs
             where status = 'running' and spec->>'timeout_seconds' is not null
               and started_at + make_interval(secs => (spec->>'timeout_seconds')::float8 + $1) < now()
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
    pub(super) async fn expire_logs(
        &self,
        keep_runs: Option<i64>,
        max_age: Option<Duration>,
        limit: i64,
    ) -> Result<Vec<(Uuid, i32, String)>, Error> {
        let rows = sqlx::query_as(
            "with ranked as (
                 select id, row_number() over (partition by pipeline_name order by created_at desc, id desc) as rank
                 from runs where status in ('success', 'failed', 'cancelled')),
             doomed as (
                 select r.id from runs r join ranked k on k.id = r.id
                 where r.log_key is not null and r.log_expired_at is null
                   and (($1::bigint is not null and k.rank > $1)
                        or ($2::float8 is not null and r.finished_at < now() - make_interval(secs => $2)))
                 limit $3
                 for update of r skip locked)
             update runs r set log_expired_at = now()
             from doomed where r.id = doomed.id
             returning r.id, r.attempt, r.log_key",
        )
        .bind(keep_runs)
        .bind(max_age.map(secs))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    /// Fails queued runs that waited longer than `after` while no runner of
    /// their pool was heard from in the last `runner_silence` (GitLab's "stuck
    /// job": better a clear failure than a run that waits forever).
    pub(super) async fn fail_unrunnable(
        &self,
        after: Duration,
        runner_silence: Duration,
        limit: i64,
    ) -> Result<Vec<Run>, Error> {
        let runs = sqlx::query_as::<_, Run>(
            "with stuck as (
                 select id from runs r
                 where status = 'queued' and coalesce(not_before, created_at) < now() - make_interval(secs => $1)
                   and not exists (select 1 from runners w where w.pool = r.pool
                                   and w.last_heartbeat_at > now() - make_interval(secs => $2))
                 limit $3
                 for update skip locked)
             update runs r set status = 'failed', failure_reason = 'no_runner', finished_at = now(),
                 error_message = 'no runner of pool `' || r.pool || '` was available',
                 waiting_reason = null
             from stuck where r.id = stuck.id
             returning r.*",
        )
        .bind(secs(after))
        .bind(secs(runner_silence))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(runs)
    }

    /// Running attempts whose lease ran out: their runner is gone or cut off.
    pub(super) async fn expired_leases(&self, limit: i64) -> Result<Vec<Run>, Error> {
        let runs = sqlx::query_as::<_, Run>(concat!(
            "select ",
            run_columns!(),
            " from runs where status = 'running' and lease_expires_at < now()
             order by lease_expires_at limit $1"
        ))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(runs)
    }

    pub(super) async fn running_on_runner(&self, runner_id: &str) -> Result<Vec<Run>, Error> {
        let runs = sqlx::query_as::<_, Run>(concat!(
            "select ",
            run_columns!(),
            " from runs where status = 'running' and runner_id = $1"
        ))
        .bind(runner_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(runs)
    }
}

impl<'r> FromRow<'r, PgRow> for AttemptRecord {
    fn from_row(row: &'r PgRow) -> Result<Self, sqlx::Error> {
        Ok(AttemptRecord {
            attempt: row.try_get("attempt")?,
            status: row.try_get("status")?,
            failure_reason: row.try_get("failure_reason")?,
            exit_code: row.try_get("exit_code")?,
            error_message: row.try_get("error_message")?,
            runner_id: row.try_get("runner_id")?,
            started_at: row.try_get("started_at")?,
            finished_at: row.try_get("finished_at")?,
            log_key: row.try_get("log_key")?,
            log_size_bytes: row.try_get("log_size_bytes")?,
        })
    }
}

impl<'r> FromRow<'r, PgRow> for RunnerInfo {
    fn from_row(row: &'r PgRow) -> Result<Self, sqlx::Error> {
        Ok(RunnerInfo {
            id: row.try_get("id")?,
            pool: row.try_get("pool")?,
            version: row.try_get("version")?,
            slots: row.try_get("slots")?,
            running: row.try_get("running")?,
            started_at: row.try_get("started_at")?,
            last_heartbeat_at: row.try_get("last_heartbeat_at")?,
        })
    }
}

impl<'r> FromRow<'r, PgRow> for RunRecord {
    fn from_row(row: &'r PgRow) -> Result<Self, sqlx::Error> {
        Ok(RunRecord {
            run: Run::from_row(row)?,
            lease_expires_at: row.try_get("lease_expires_at")?,
            not_before: row.try_get("not_before")?,
        })
    }
}

impl PgStore {
    pub(super) async fn record_heartbeat(&self, hb: &Heartbeat) -> Result<(), Error> {
        sqlx::query(
            "insert into runners (id, pool, version, slots, running)
             values ($1, $2, $3, $4, $5)
             on conflict (id) do update set pool = excluded.pool, version = excluded.version,
                 slots = excluded.slots, running = excluded.running, last_heartbeat_at = now()",
        )
        .bind(&hb.runner_id)
        .bind(&hb.pool)
        .bind(&hb.version)
        .bind(i32::try_from(hb.slots).unwrap_or(i32::MAX))
        .bind(i32::try_from(hb.running.len()).unwrap_or(i32::MAX))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(super) async fn list_runners(&self, within_secs: i64) -> Result<Vec<RunnerInfo>, Error> {
        let rows = sqlx::query_as::<_, RunnerInfo>(
            "select id, pool, version, slots, running, started_at, last_heartbeat_at from runners
             where last_heartbeat_at > now() - make_interval(secs => $1) order by id",
        )
        .bind(within_secs as f64)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    pub(super) async fn save_bundle(&self, digest: &str, data: &[u8]) -> Result<(), Error> {
        sqlx::query("insert into code_bundles (digest, data) values ($1, $2) on conflict (digest) do nothing")
            .bind(digest)
            .bind(data)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub(super) async fn load_bundle(&self, digest: &str) -> Result<Option<Vec<u8>>, Error> {
        let row: Option<(Vec<u8>,)> = sqlx::query_as("select data from code_bundles where digest = $1")
            .bind(digest)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|(data,)| data))
    }

    pub(super) async fn export_runs(&self, after: Option<Uuid>, limit: i64) -> Result<Vec<RunRecord>, Error> {
        let rows = sqlx::query_as::<_, RunRecord>(concat!(
            "select ",
            run_columns!(),
            ", lease_expires_at, not_before from runs where ($1::uuid is null or id > $1) order by id limit $2"
        ))
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    pub(super) async fn import_run(&self, r: &RunRecord) -> Result<bool, Error> {
        let run = &r.run;
        let done = sqlx::query(
            "insert into runs (id, pipeline_name, pool, status, attempt, trigger, params, spec, runner_id,
                 fencing_token, lease_expires_at, cancel_requested_at, cancel_force, waiting_reason, exit_code,
                 failure_reason, error_message, log_key, log_size_bytes, log_expired_at, not_before, created_at,
                 started_at, finished_at)
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20,
                 $21, $22, $23, $24)
             on conflict (id) do nothing",
        )
        .bind(run.id)
        .bind(&run.pipeline_name)
        .bind(&run.pool)
        .bind(run.status.as_str())
        .bind(run.attempt)
        .bind(&run.trigger)
        .bind(&run.params)
        .bind(&run.spec)
        .bind(&run.runner_id)
        .bind(run.fencing_token)
        .bind(r.lease_expires_at)
        .bind(run.cancel_requested_at)
        .bind(run.cancel_force)
        .bind(&run.waiting_reason)
        .bind(run.exit_code)
        .bind(run.failure_reason.map(|f| f.as_str()))
        .bind(&run.error_message)
        .bind(&run.log_key)
        .bind(run.log_size_bytes)
        .bind(run.log_expired_at)
        .bind(r.not_before)
        .bind(run.created_at)
        .bind(run.started_at)
        .bind(run.finished_at)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub(super) async fn import_attempt(&self, run_id: Uuid, a: &AttemptRecord) -> Result<bool, Error> {
        let done = sqlx::query(
            "insert into run_attempts (run_id, attempt, status, failure_reason, exit_code, error_message,
                 runner_id, started_at, finished_at, log_key, log_size_bytes)
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
             on conflict (run_id, attempt) do nothing",
        )
        .bind(run_id)
        .bind(a.attempt)
        .bind(&a.status)
        .bind(&a.failure_reason)
        .bind(a.exit_code)
        .bind(&a.error_message)
        .bind(&a.runner_id)
        .bind(a.started_at)
        .bind(a.finished_at)
        .bind(&a.log_key)
        .bind(a.log_size_bytes)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub(super) async fn export_bundles(&self, after: Option<&str>, limit: i64) -> Result<Vec<BundleRecord>, Error> {
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

    pub(super) async fn import_bundle(&self, b: &BundleRecord) -> Result<bool, Error> {
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

    pub(super) async fn count_runs(&self) -> Result<i64, Error> {
        let (n,): (i64,) = sqlx::query_as("select count(*) from runs").fetch_one(&self.pool).await?;
        Ok(n)
    }
}
