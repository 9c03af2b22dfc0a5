//! Content-addressed code bundles.

use super::{SqliteStore, now};
use crate::store::Error;

impl SqliteStore {
    pub(in crate::store) async fn save_bundle(&self, digest: &str, data: &[u8]) -> Result<(), Error> {
        sqlx::query(
            "insert into code_bundles (digest, data, created_at) values ($1, $2, $3) on conflict (digest) do nothing",
        )
        .bind(digest)
        .bind(data)
        .bind(now())
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    pub(in crate::store) async fn load_bundle(&self, digest: &str) -> Result<Option<Vec<u8>>, Error> {
        let row: Option<(Vec<u8>,)> = sqlx::query_as("select data from code_bundles where digest = $1")
            .bind(digest)
            .fetch_optional(&self.reader)
            .await?;
        Ok(row.map(|(data,)| data))
    }
}
