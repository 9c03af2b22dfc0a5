//! Runner registrations, refreshed by heartbeats.

use super::{Error, Store};
use chrono::{DateTime, Utc};
use serde::Serialize;
use shared::protocol::Heartbeat;

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct RunnerInfo {
    pub id: String,
    pub pool: String,
    pub version: String,
    pub slots: i32,
    pub running: i32,
    pub started_at: DateTime<Utc>,
    pub last_heartbeat_at: DateTime<Utc>,
}

impl Store {
    pub async fn record_heartbeat(&self, hb: &Heartbeat) -> Result<(), Error> {
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
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Runners heard from within the last `within_secs` seconds.
    pub async fn list_runners(&self, within_secs: i64) -> Result<Vec<RunnerInfo>, Error> {
        let rows = sqlx::query_as::<_, RunnerInfo>(
            "select id, pool, version, slots, running, started_at, last_heartbeat_at from runners
             where last_heartbeat_at > now() - make_interval(secs => $1) order by id",
        )
        .bind(within_secs as f64)
        .fetch_all(self.pool())
        .await?;
        Ok(rows)
    }
}
