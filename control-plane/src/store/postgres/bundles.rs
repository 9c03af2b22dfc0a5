//! Content-addressed code bundles.

use super::PgStore;
use crate::store::Error;

impl PgStore {
    pub(in crate::store) async fn save_bundle(&self, digest: &str, data: &[u8]) -> Result<(), Error> {
        sqlx::query("insert into code_bundles (digest, data) values ($1, $2) on conflict (digest) do nothing")
            .bind(digest)
            .bind(data)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub(in crate::store) async fn load_bundle(&self, digest: &str) -> Result<Option<Vec<u8>>, Error> {
        let row: Option<(Vec<u8>,)> = sqlx::query_as("select data from code_bundles where digest = $1")
            .bind(digest)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|(data,)| data))
    }
}
