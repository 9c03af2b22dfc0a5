//! The runner API's view of enrolled runners: looked up in the store at most once per
//! [`STALENESS`] per runner, so a revocation holds on every replica within seconds
//! while a busy runner's claims and heartbeats cost no extra query each. While the store
//! cannot be reached, the last answer stands (entries are kept until the map is full).

use crate::store::runner_identity::Enrollment;
use crate::store::{self, Store};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a looked-up enrollment (or its absence) is trusted.
pub const STALENESS: Duration = Duration::from_secs(2);

/// How long a lookup may take before the last answer is used: a heartbeat must still be
/// answered (provisionally) within the runner's 5 s while the store is unreachable.
const STORE_PATIENCE: Duration = Duration::from_secs(1);

/// Entries past this many are dropped (a flood of unknown ids cannot grow the map).
const MAX_ENTRIES: usize = 10_000;

#[derive(Default)]
pub struct Identities {
    entries: Mutex<HashMap<String, (Instant, Option<Enrollment>)>>,
}

impl Identities {
    /// The runner's enrollment if it is enrolled and not revoked.
    pub async fn active(&self, store: &Store, runner_id: &str) -> Result<Option<Enrollment>, store::Error> {
        if let Some((at, entry)) = self.entries.lock().unwrap_or_else(|e| e.into_inner()).get(runner_id)
            && at.elapsed() < STALENESS
        {
            return Ok(entry.clone());
        }
        let lookup = tokio::time::timeout(STORE_PATIENCE, store.find_enrollment(runner_id)).await;
        let found = match lookup.unwrap_or(Err(store::Error::Timeout(STORE_PATIENCE))) {
            Ok(found) => found.filter(|e| e.revoked_at.is_none()),
            Err(e) => {
                // The store is unreachable: what it said last still holds (a revocation
                // needs the store too), so runners keep their provisional heartbeats.
                if let Some((_, known)) = self.entries.lock().unwrap_or_else(|e| e.into_inner()).get(runner_id) {
                    return Ok(known.clone());
                }
                return Err(e);
            }
        };
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= MAX_ENTRIES {
            // Unknown ids first: enrolled runners are what an outage needs remembered.
            entries.retain(|_, (at, known)| known.is_some() || at.elapsed() < STALENESS);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(runner_id.to_owned(), (Instant::now(), found.clone()));
        Ok(found)
    }
}
