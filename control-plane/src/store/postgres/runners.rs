//! Runner registrations.

use super::PgStore;
use crate::store::Error;
use crate::store::runners::RunnerInfo;
use shared::protocol::Heartbeat;

impl PgStore {
    pub(in crate::store) async fn record_heartbeat(&self, hb: &Heartbeat) -> Result<(), Error> {
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

    pub(in crate::store) async fn list_runners(&self, within_secs: i64) -> Result<Vec<RunnerInfo>, Error> {
        let rows = sqlx::query_as::<_, RunnerInfo>(
            "select id, pool, version, slots, running, started_at, last_heartbeat_at from runners
             where last_heartbeat_at > now() - make_interval(secs => $1) order by id",
        )
        .bind(within_secs as f64)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }
}
