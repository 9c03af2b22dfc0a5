//! Runner registrations.

use super::{SqliteStore, now};
use crate::store::Error;
use crate::store::runners::RunnerInfo;
use shared::protocol::Heartbeat;

impl SqliteStore {
    pub(in crate::store) async fn record_heartbeat(&self, hb: &Heartbeat) -> Result<(), Error> {
        sqlx::query(
            "insert into runners (id, pool, version, slots, running, started_at, last_heartbeat_at)
             values ($1, $2, $3, $4, $5, $6, $6)
             on conflict (id) do update set pool = excluded.pool, version = excluded.version,
                 slots = excluded.slots, running = excluded.running, last_heartbeat_at = excluded.last_heartbeat_at",
        )
        .bind(&hb.runner_id)
        .bind(&hb.pool)
        .bind(&hb.version)
        .bind(i32::try_from(hb.slots).unwrap_or(i32::MAX))
        .bind(i32::try_from(hb.running.len()).unwrap_or(i32::MAX))
        .bind(now())
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    pub(in crate::store) async fn list_runners(&self, within_secs: i64) -> Result<Vec<RunnerInfo>, Error> {
        let rows = sqlx::query_as::<_, RunnerInfo>(
            "select id, pool, version, slots, running, started_at, last_heartbeat_at from runners
             where last_heartbeat_at > $1 order by id",
        )
        .bind(now().saturating_sub(within_secs.saturating_mul(1_000_000)))
        .fetch_all(&self.reader)
        .await?;
        Ok(rows)
    }
}
