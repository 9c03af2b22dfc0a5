//! The benchmark's own Postgres database, created and dropped through the admin URL.

use anyhow::Context;
use sqlx::{AssertSqlSafe, Connection, PgConnection};

pub struct BenchDatabase {
    pub name: String,
    /// What the control plane gets as DATABASE_URL.
    pub url: String,
    admin_url: String,
}

impl BenchDatabase {
    /// Creates `bench_<id>` owned by the user of `app_url`.
    pub async fn create(admin_url: &str, app_url: &str, id: &str) -> anyhow::Result<Self> {
        let name = format!("bench_{id}");
        let mut url = reqwest::Url::parse(app_url).context("DATABASE_URL is not a URL")?;
        url.set_path(&format!("/{name}"));
        let owner = url.username().to_string();
        let mut admin = PgConnection::connect(admin_url).await.context("cannot connect to FASTFLOW_PG_ADMIN_URL")?;
        let mut sql = format!(r#"CREATE DATABASE "{name}""#);
        if !owner.is_empty() && owner != "postgres" {
            sql.push_str(&format!(r#" OWNER "{}""#, owner.replace('"', "\"\"")));
        }
        sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut admin).await.with_context(|| format!("cannot create {name}"))?;
        let _ = admin.close().await;
        Ok(Self { name, url: url.to_string(), admin_url: admin_url.to_string() })
    }

    pub async fn connect(&self) -> anyhow::Result<PgConnection> {
        PgConnection::connect(&self.url).await.with_context(|| format!("cannot connect to {}", self.name))
    }

    pub async fn drop_database(&self) -> anyhow::Result<()> {
        let mut admin = PgConnection::connect(&self.admin_url).await?;
        let sql = format!(r#"DROP DATABASE IF EXISTS "{}" WITH (FORCE)"#, self.name);
        sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut admin).await?;
        let _ = admin.close().await;
        Ok(())
    }
}
