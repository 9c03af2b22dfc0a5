//! Content-addressed pipeline code bundles.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use super::{Error, Store, dispatch};

/// Digests this process has stored (or found stored). Every submission packs its
/// pipeline and saves the bundle; once a digest is known, the save is skipped, which
/// keeps an insert that changes nothing off the database's writer (on SQLite, the one
/// writer connection that claims and submissions also need).
///
/// Correct because bundles are content-addressed and never deleted: a digest stored
/// once stays stored. A future clean-up of unused bundles must clear this set.
#[derive(Clone, Default)]
pub(super) struct SavedBundles(Arc<Mutex<HashSet<String>>>);

impl SavedBundles {
    /// Bounds the set; a pipeline's bundle changes with every edit of its code.
    const MAX: usize = 4096;

    fn contains(&self, digest: &str) -> bool {
        self.0.lock().is_ok_and(|set| set.contains(digest))
    }

    fn insert(&self, digest: &str) {
        // A poisoned lock only costs the shortcut.
        if let Ok(mut set) = self.0.lock() {
            if set.len() >= Self::MAX {
                set.clear();
            }
            set.insert(digest.to_owned());
        }
    }
}

impl Store {
    /// Stores a bundle once; later calls with the same digest do nothing.
    pub async fn save_bundle(&self, digest: &str, data: &[u8]) -> Result<(), Error> {
        if self.saved_bundles.contains(digest) {
            return Ok(());
        }
        dispatch!(self.save_bundle(digest, data))?;
        self.saved_bundles.insert(digest);
        Ok(())
    }

    pub async fn load_bundle(&self, digest: &str) -> Result<Option<Vec<u8>>, Error> {
        dispatch!(self.load_bundle(digest))
    }
}

#[cfg(test)]
mod tests {
    use super::SavedBundles;

    #[test]
    fn remembers_digests_up_to_a_bound() {
        let saved = SavedBundles::default();
        assert!(!saved.contains("a"));
        saved.insert("a");
        assert!(saved.contains("a"));
        for i in 1..SavedBundles::MAX {
            saved.insert(&i.to_string());
        }
        assert!(saved.contains("a"), "full, not over");
        saved.insert("next");
        assert!(saved.contains("next"));
        assert!(!saved.contains("a"), "cleared when it would grow past the bound");
    }
}
