//! Runner registrations, refreshed by heartbeats.

use super::{Error, Store, dispatch};
use chrono::{DateTime, Utc};
use serde::Serialize;
use shared::protocol::Heartbeat;

#[derive(Debug, Serialize)]
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
    /// Registers the runner, or refreshes it (`started_at` stays the first one).
    pub async fn record_heartbeat(&self, hb: &Heartbeat) -> Result<(), Error> {
        dispatch!(self.record_heartbeat(hb))
    }

    /// Runners heard from within the last `within_secs` seconds.
    pub async fn list_runners(&self, within_secs: i64) -> Result<Vec<RunnerInfo>, Error> {
        dispatch!(self.list_runners(within_secs))
    }
}
