//! Content-addressed pipeline code bundles.

use super::{Error, Store};

impl Store {
    /// Stores a bundle once; later calls with the same digest do nothing.
    pub async fn save_bundle(&self, digest: &str, data: &[u8]) -> Result<(), Error> {
        sqlx::query("insert into code_bundles (digest, data) values ($1, $2) on conflict (digest) do nothing")
            .bind(digest)
            .bind(data)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    pub async fn load_bundle(&self, digest: &str) -> Result<Option<Vec<u8>>, Error> {
        let row: Option<(Vec<u8>,)> = sqlx::query_as("select data from code_bundles where digest = $1")
            .bind(digest)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.map(|(data,)| data))
    }
}
