//! Bounds on live log streams (SSE): each holds a task, a bus reader and a buffer for
//! as long as the client stays, so one replica serves at most `SSE_MAX_STREAMS` at once
//! and one user (whatever the credential: sessions and API tokens alike) at most
//! `SSE_MAX_STREAMS_PER_USER`. Past either, a new stream is refused with 503 and
//! `Retry-After`; the streams already open are not touched.

use super::error::Error;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use uuid::Uuid;

/// The limits; `None` is no limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamLimits {
    pub total: Option<usize>,
    pub per_user: Option<usize>,
}

/// Open streams of this process. Cloned into the HTTP state; one per process.
#[derive(Clone)]
pub struct StreamSlots {
    limits: StreamLimits,
    open: Arc<Mutex<Counts>>,
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_user: HashMap<Uuid, usize>,
}

/// One open stream; dropping it frees the slot.
pub struct StreamSlot {
    open: Arc<Mutex<Counts>>,
    user: Uuid,
}

impl StreamSlots {
    pub fn new(limits: StreamLimits) -> Self {
        StreamSlots { limits, open: Default::default() }
    }

    /// A slot for a new stream of `user`, or the 503 that says which limit is reached.
    pub fn take(&self, user: Uuid) -> Result<StreamSlot, Error> {
        let mut counts = lock(&self.open);
        if let Some(max) = self.limits.total
            && counts.total >= max
        {
            return Err(Error::TooManyStreams {
                message: format!("this server already streams {max} live logs; retry shortly"),
                limit: "total",
                max,
            });
        }
        let mine = counts.per_user.get(&user).copied().unwrap_or(0);
        if let Some(max) = self.limits.per_user
            && mine >= max
        {
            return Err(Error::TooManyStreams {
                message: format!("you already have {max} live log streams open on this server; close one first"),
                limit: "per_user",
                max,
            });
        }
        counts.total += 1;
        counts.per_user.insert(user, mine + 1);
        Ok(StreamSlot { open: self.open.clone(), user })
    }

    /// Streams open now (all users).
    #[cfg(test)]
    fn open(&self) -> usize {
        lock(&self.open).total
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut counts = lock(&self.open);
        counts.total = counts.total.saturating_sub(1);
        if let Some(mine) = counts.per_user.get_mut(&self.user) {
            *mine = mine.saturating_sub(1);
            if *mine == 0 {
                counts.per_user.remove(&self.user);
            }
        }
    }
}

fn lock(open: &Mutex<Counts>) -> MutexGuard<'_, Counts> {
    // Each update is a few integer operations: a poisoned lock holds consistent counts.
    open.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_apply_per_user_and_in_total_and_dropping_frees_the_slot() {
        let slots = StreamSlots::new(StreamLimits { total: Some(3), per_user: Some(2) });
        let (ada, bob) = (Uuid::new_v4(), Uuid::new_v4());
        let a1 = slots.take(ada).expect("first");
        let _a2 = slots.take(ada).expect("second");
        let refused = slots.take(ada).err().expect("a third for the same user");
        assert!(matches!(refused, Error::TooManyStreams { limit: "per_user", max: 2, .. }), "{refused:?}");
        let _b1 = slots.take(bob).expect("another user");
        let refused = slots.take(bob).err().expect("past the total");
        assert!(matches!(refused, Error::TooManyStreams { limit: "total", max: 3, .. }), "{refused:?}");
        assert_eq!(slots.open(), 3);
        drop(a1);
        assert_eq!(slots.open(), 2);
        slots.take(bob).expect("a slot freed");
    }

    #[test]
    fn no_limits_take_every_stream() {
        let slots = StreamSlots::new(StreamLimits { total: None, per_user: None });
        let user = Uuid::new_v4();
        let held: Vec<_> = (0..1000).map(|_| slots.take(user).expect("unlimited")).collect();
        assert_eq!(slots.open(), 1000);
        drop(held);
        assert_eq!(slots.open(), 0);
    }
}
