//! The Postgres backend: many replicas share one database. Claims are
//! serialised by an advisory lock, sweeps skip rows another replica holds
//! (`for update skip locked`), and every transition is one guarded statement.
//! The policy (what blocks a claim, what a retry resets, the stored strings) is
//! `policy.rs`'s; row decoding is `rows.rs`'s. One file per resource:
//! `runs.rs` (submissions, reads, cancels), `claims.rs` (claims, leases, ends of
//! attempts), `sweeps.rs` (the sweepers' queries), `runners.rs`, `bundles.rs`
//! and `transfer.rs` (export and import), `auth.rs` (users, sessions, tokens, login
//! failures; user changes serialised by an advisory lock) and `audit.rs`.

mod audit;
mod auth;
mod bundles;
mod claims;
mod runner_identity;
mod runners;
mod runs;
mod sweeps;
mod transfer;

use super::Error;
use sqlx::postgres::{PgPool, PgPoolOptions};
use std::time::Duration;

#[derive(Clone)]
pub(super) struct PgStore {
    pool: PgPool,
}

/// A duration as the seconds `make_interval(secs => …)` takes.
fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

impl PgStore {
    pub(super) async fn connect(url: &str) -> Result<PgStore, Error> {
        let pool =
            PgPoolOptions::new().max_connections(16).acquire_timeout(Duration::from_secs(5)).connect(url).await?;
        // The path of the migrations predates SQLite; their content (and so
        // the checksums sqlx recorded in existing databases) is unchanged.
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(PgStore { pool })
    }

    pub(super) async fn ping(&self) -> Result<(), Error> {
        sqlx::query("select 1").execute(&self.pool).await?;
        Ok(())
    }
}
