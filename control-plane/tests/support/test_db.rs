//! The test databases of the store tests (`store.rs`, `store_auth.rs`): `both!(name)`
//! makes `name::sqlite` (a database in a temp dir) and `name::postgres` (a private
//! database created through `FASTFLOW_PG_ADMIN_URL`, dropped after). Without that
//! variable the Postgres variants fail: they never pass silently. Included with
//! `#[macro_use] #[path = "support/test_db.rs"] mod test_db;`.
#![allow(dead_code)] // Each test file uses its own part.

use control_plane::store::Store;
use sqlx::{AssertSqlSafe, Connection, PgConnection};
use std::future::Future;
use std::path::PathBuf;
use uuid::Uuid;

/// A database that exists for one test.
pub enum TestDb {
    Sqlite { dir: PathBuf },
    Postgres { admin_url: String, name: String },
}

impl TestDb {
    pub async fn sqlite() -> (TestDb, Store) {
        let (db, url) = TestDb::sqlite_url();
        let store = Store::connect(&url).await.unwrap_or_else(|e| panic!("cannot open {url}: {e}"));
        (db, store)
    }

    /// A SQLite database yet to be created, and its URL.
    pub fn sqlite_url() -> (TestDb, String) {
        let dir = std::env::temp_dir().join(format!("fastflow-store-{}", Uuid::new_v4().simple()));
        // A missing parent directory is created by connect.
        let url = format!("sqlite://{}/nested/fastflow.db", dir.display());
        (TestDb::Sqlite { dir }, url)
    }

    pub async fn postgres() -> (TestDb, Store) {
        let (db, url) = TestDb::postgres_url().await;
        let store = Store::connect(&url).await.unwrap_or_else(|e| panic!("cannot open {url}: {e}"));
        (db, store)
    }

    /// An empty Postgres database (no schema yet), and its URL.
    pub async fn postgres_url() -> (TestDb, String) {
        let admin_url = std::env::var("FASTFLOW_PG_ADMIN_URL").unwrap_or_else(|_| {
            panic!(
                "FASTFLOW_PG_ADMIN_URL is not set: the Postgres variants of the store tests need an admin URL \
                 such as postgres://postgres@127.0.0.1:55432/postgres (`source /var/tmp/fastflow-dev/env.sh`)"
            )
        });
        let name = format!("s_{}", Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to FASTFLOW_PG_ADMIN_URL: {e}"));
        sqlx::raw_sql(AssertSqlSafe(format!(r#"create database "{name}""#)))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|e| panic!("cannot create database {name}: {e}"));
        let _ = admin.close().await;
        let url = database_url(&admin_url, &name);
        (TestDb::Postgres { admin_url, name }, url)
    }

    pub async fn remove(self) {
        match self {
            TestDb::Sqlite { dir } => {
                let _ = std::fs::remove_dir_all(dir);
            }
            TestDb::Postgres { admin_url, name } => {
                if let Ok(mut admin) = PgConnection::connect(&admin_url).await {
                    let sql = format!(r#"drop database if exists "{name}" with (force)"#);
                    if let Err(e) = sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut admin).await {
                        eprintln!("cannot drop test database {name}: {e}");
                    }
                    let _ = admin.close().await;
                }
            }
        }
    }
}

/// The admin URL with its database replaced.
fn database_url(admin_url: &str, name: &str) -> String {
    let (base, query) = admin_url.split_once('?').map_or((admin_url, None), |(b, q)| (b, Some(q)));
    let after_scheme = base.find("://").map_or(0, |i| i + 3);
    let server = match base[after_scheme..].find('/') {
        Some(i) => &base[..after_scheme + i],
        None => base,
    };
    match query {
        Some(q) => format!("{server}/{name}?{q}"),
        None => format!("{server}/{name}"),
    }
}

/// Runs `body` on the store, removes the database whatever happens, then
/// re-raises the body's panic.
pub async fn run_on<F, Fut>(db: (TestDb, Store), body: F)
where
    F: FnOnce(Store) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (db, store) = db;
    let outcome = tokio::spawn(body(store)).await;
    db.remove().await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

macro_rules! both {
    ($name:ident) => {
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                super::run_on(super::TestDb::sqlite().await, super::$name).await;
            }

            #[tokio::test]
            async fn postgres() {
                super::run_on(super::TestDb::postgres().await, super::$name).await;
            }
        }
    };
}
