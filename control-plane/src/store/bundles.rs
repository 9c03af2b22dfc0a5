//! Content-addressed pipeline code bundles.

use super::{Error, Store, dispatch};

impl Store {
    /// Stores a bundle once; later calls with the same digest do nothing.
    pub async fn save_bundle(&self, digest: &str, data: &[u8]) -> Result<(), Error> {
        dispatch!(self.save_bundle(digest, data))
    }

    pub async fn load_bundle(&self, digest: &str) -> Result<Option<Vec<u8>>, Error> {
        dispatch!(self.load_bundle(digest))
    }
}
