//! Self-fencing: the runner's own view of how long its leases last.
//!
//! The control plane gives an attempt to another runner once its lease runs out
//! (`RUN_LEASE_SECONDS`, told in every heartbeat reply). This runner must have
//! stopped the attempt's container by then, so it stops every job at
//! `lease − margin` after the last heartbeat that renewed its leases, measured on
//! its own monotonic clock from when it *sent* that heartbeat: the control plane
//! renewed the lease after that instant, so the fence always falls before the
//! lease's end, whatever the two clocks say.
//!
//! A `provisional` heartbeat reply (the control plane is up but cannot reach its
//! database, so nobody can renew or expire a lease) keeps the jobs for at most
//! `unconfirmed_grace` past the last confirmed fence, each such reply counting
//! like a renewal within that bound.
//!
//! The deadline is also written to a file (see `watchdog`): a separate process
//! kills the containers if this one is frozen past it.

use crate::watchdog::DeadlineFile;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// The lease length assumed when a control plane does not tell it (older versions).
pub const ASSUMED_LEASE: Duration = Duration::from_secs(25);

/// How the fence is derived from the lease; from the runner's settings.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// `RUNNER_SELF_FENCE_SECONDS`: fence this long after a renewal instead of
    /// `lease − margin`; refused if it would not end before the lease.
    pub fence_after: Option<Duration>,
    /// `RUNNER_FENCE_MARGIN_SECONDS`: how long before the lease ends the jobs are
    /// stopped (time to kill a container, and the watchdog's poll interval).
    pub margin: Duration,
    /// `RUNNER_UNCONFIRMED_LEASE_GRACE_SECONDS`: extra time kept on provisional replies.
    pub unconfirmed_grace: Duration,
    pub heartbeat_interval: Duration,
}

/// Settings that would let a lease expire before the runner stops its jobs.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "RUNNER_SELF_FENCE_SECONDS={fence_after:?} plus RUNNER_FENCE_MARGIN_SECONDS={margin:?} is not below the \
         control plane's lease of {lease:?}: a job could still run after its lease went to another runner"
    )]
    FenceAfterLease { fence_after: Duration, margin: Duration, lease: Duration },
    #[error(
        "the control plane's lease of {lease:?} leaves no time for a renewal: the runner would stop its jobs \
         {fence_after:?} after a renewal, before its next heartbeat (HEARTBEAT_INTERVAL_SECONDS={interval:?}); \
         raise RUN_LEASE_SECONDS, or lower the interval or RUNNER_FENCE_MARGIN_SECONDS"
    )]
    NoTimeToRenew { lease: Duration, fence_after: Duration, interval: Duration },
}

impl Settings {
    /// When to fence after a renewal, for this lease; `Err` when the settings are unsafe.
    pub fn fence_after(&self, lease: Duration) -> Result<Duration, Error> {
        let fence_after = match self.fence_after {
            Some(after) if after + self.margin >= lease => {
                return Err(Error::FenceAfterLease { fence_after: after, margin: self.margin, lease });
            }
            Some(after) => after,
            None => lease.saturating_sub(self.margin),
        };
        // Safety does not depend on how long a reply takes (the fence counts from the
        // sending); but without a heartbeat before the fence, every job would be stopped.
        if self.heartbeat_interval >= fence_after {
            return Err(Error::NoTimeToRenew { lease, fence_after, interval: self.heartbeat_interval });
        }
        Ok(fence_after)
    }
}

/// The fence as an earlier process left it (see `watchdog::DeadlineFile`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Left {
    /// The fence after the last confirmed renewal.
    pub confirmed: Instant,
    /// The fence in force (later than `confirmed` after provisional replies).
    pub until: Instant,
}

#[derive(Debug, Clone, Copy, Default)]
struct State {
    /// Fence after the last confirmed renewal.
    confirmed: Option<Instant>,
    /// The fence now: `confirmed`, or later on provisional replies.
    until: Option<Instant>,
}

/// The fence deadline, shared by the heartbeat service (which moves it), the claimer
/// (which claims only while it is ahead) and the deadline file. Cheap to clone.
#[derive(Clone)]
pub struct Fence {
    settings: Settings,
    state: std::sync::Arc<watch::Sender<State>>,
    file: Option<DeadlineFile>,
}

impl Fence {
    /// `file`: where the deadline is written for the watchdog process (none in the single node).
    pub fn new(settings: Settings, file: Option<DeadlineFile>) -> Fence {
        Fence { settings, state: std::sync::Arc::new(watch::Sender::new(State::default())), file }
    }

    /// Starts from the deadlines an earlier process of this runner left (re-attached
    /// attempts are covered by them until the first renewal).
    pub fn resume_from(&self, left: Left) {
        self.state.send_modify(|s| {
            s.confirmed = Some(left.confirmed);
            s.until = Some(left.until);
        });
    }

    /// A heartbeat sent at `sent` renewed the leases for `lease`. `Err`: the settings
    /// cannot keep the fence before this lease (the deadline is left as it was).
    pub fn renewed(&self, sent: Instant, lease: Duration) -> Result<(), Error> {
        let fence_after = self.settings.fence_after(lease)?;
        let deadline = sent + fence_after;
        self.state.send_modify(|s| {
            s.confirmed = Some(s.confirmed.map_or(deadline, |c| c.max(deadline)));
            s.until = Some(s.until.map_or(deadline, |u| u.max(deadline)));
        });
        self.write_file();
        Ok(())
    }

    /// A heartbeat sent at `sent` was answered provisionally: keep going as if
    /// renewed, but never past the last confirmed fence plus the grace (nothing
    /// without a confirmed fence, e.g. before the first renewal).
    pub fn provisional(&self, sent: Instant, lease: Duration) -> Result<(), Error> {
        let fence_after = self.settings.fence_after(lease)?;
        let grace = self.settings.unconfirmed_grace;
        let moved = self.state.send_if_modified(|s| {
            let Some(confirmed) = s.confirmed else { return false };
            let candidate = (sent + fence_after).min(confirmed + grace);
            match s.until {
                Some(until) if until >= candidate => false,
                _ => {
                    s.until = Some(candidate);
                    true
                }
            }
        });
        if moved {
            self.write_file();
        }
        Ok(())
    }

    /// When the jobs must be stopped; `None` before the first renewal.
    pub fn deadline(&self) -> Option<Instant> {
        self.state.borrow().until
    }

    /// Whether jobs may run (and be claimed) now.
    pub fn is_live(&self) -> bool {
        self.deadline().is_some_and(|d| d > Instant::now())
    }

    /// Resolves once the fence is live (a renewal moved it ahead).
    pub async fn live(&self) {
        let mut rx = self.state.subscribe();
        loop {
            if self.is_live() {
                return;
            }
            if rx.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    /// The runner stops for good with no job held: the watchdog has nothing to guard.
    pub fn release(&self) {
        if let Some(file) = &self.file {
            file.release();
        }
    }

    fn write_file(&self) {
        let state = *self.state.borrow();
        if let (Some(file), Some(confirmed), Some(until)) = (&self.file, state.confirmed, state.until) {
            file.write(Left { confirmed, until });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            fence_after: None,
            margin: Duration::from_secs(5),
            unconfirmed_grace: Duration::from_secs(60),
            heartbeat_interval: Duration::from_secs(5),
        }
    }

    #[test]
    fn unsafe_settings_are_refused() {
        let s = settings();
        assert_eq!(s.fence_after(Duration::from_secs(25)).expect("safe"), Duration::from_secs(20));
        // The example: a 20 s fence with a 5 s margin against a 25 s lease.
        let explicit = Settings { fence_after: Some(Duration::from_secs(20)), ..s };
        assert!(matches!(explicit.fence_after(Duration::from_secs(25)), Err(Error::FenceAfterLease { .. })));
        let shorter = Settings { fence_after: Some(Duration::from_secs(15)), ..s };
        assert_eq!(shorter.fence_after(Duration::from_secs(25)).expect("safe"), Duration::from_secs(15));
        // A lease too short for a heartbeat before the fence.
        assert!(matches!(s.fence_after(Duration::from_secs(10)), Err(Error::NoTimeToRenew { .. })));
        assert_eq!(s.fence_after(Duration::from_secs(11)).expect("safe"), Duration::from_secs(6));
    }

    #[tokio::test(start_paused = true)]
    async fn fence_follows_renewals_and_provisional_replies_are_bounded() {
        let fence = Fence::new(settings(), None);
        assert!(!fence.is_live(), "no renewal yet");
        fence.provisional(Instant::now(), Duration::from_secs(25)).expect("safe");
        assert!(!fence.is_live(), "a provisional reply alone keeps nothing");
        let t0 = Instant::now();
        fence.renewed(t0, Duration::from_secs(25)).expect("safe");
        assert_eq!(fence.deadline(), Some(t0 + Duration::from_secs(20)));
        assert!(fence.is_live());
        // An older renewal (a late reply) never moves the fence back.
        fence.renewed(t0 - Duration::from_secs(3), Duration::from_secs(25)).expect("safe");
        assert_eq!(fence.deadline(), Some(t0 + Duration::from_secs(20)));

        // Provisional replies extend it like renewals, up to confirmed + grace (60 s).
        let lease = Duration::from_secs(25);
        fence.provisional(t0 + Duration::from_secs(10), lease).expect("safe");
        assert_eq!(fence.deadline(), Some(t0 + Duration::from_secs(30)));
        fence.provisional(t0 + Duration::from_secs(70), lease).expect("safe");
        assert_eq!(fence.deadline(), Some(t0 + Duration::from_secs(80)), "bounded by the grace");
        tokio::time::advance(Duration::from_secs(81)).await;
        assert!(!fence.is_live());

        // A confirmed renewal starts over.
        let t1 = Instant::now();
        fence.renewed(t1, Duration::from_secs(25)).expect("safe");
        assert_eq!(fence.deadline(), Some(t1 + Duration::from_secs(20)));
    }
}
