//! A fresh Postgres database per test, created and dropped through the admin URL.

use sqlx::{AssertSqlSafe, Connection, PgConnection};

#[derive(Clone)]
pub(crate) struct TestDatabase {
    pub(crate) name: String,
    /// What the control plane gets as DATABASE_URL.
    pub(crate) url: String,
    admin_url: String,
}

impl TestDatabase {
    /// Creates `t_<uuid>` owned by the user of `app_url` (so the product runs with
    /// its usual credentials, not as superuser).
    pub(crate) async fn create(admin_url: &str, app_url: &str) -> Self {
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        let mut url =
            reqwest::Url::parse(app_url).unwrap_or_else(|e| panic!("DATABASE_URL is not a URL ({e}): {app_url}"));
        url.set_path(&format!("/{name}"));
        let owner = url.username().to_string();

        let mut admin = PgConnection::connect(admin_url)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to FASTFLOW_PG_ADMIN_URL ({e})"));
        let mut sql = format!(r#"CREATE DATABASE "{name}""#);
        if !owner.is_empty() && owner != "postgres" {
            sql.push_str(&format!(r#" OWNER "{}""#, owner.replace('"', "\"\"")));
        }
        sqlx::raw_sql(AssertSqlSafe(sql))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
        let _ = admin.close().await;
        Self { name, url: url.to_string(), admin_url: admin_url.to_string() }
    }

    /// Drops the database, forcibly disconnecting whoever is still connected.
    pub(crate) async fn drop_database(&self) -> Result<(), String> {
        let mut admin = PgConnection::connect(&self.admin_url).await.map_err(|e| e.to_string())?;
        let name = &self.name;
        let forced = format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#);
        if sqlx::raw_sql(AssertSqlSafe(forced)).execute(&mut admin).await.is_err() {
            // Postgres < 13 has no FORCE; every client is killed by now anyway.
            let plain = format!(r#"DROP DATABASE IF EXISTS "{name}""#);
            sqlx::raw_sql(AssertSqlSafe(plain)).execute(&mut admin).await.map_err(|e| e.to_string())?;
        }
        let _ = admin.close().await;
        Ok(())
    }
}
