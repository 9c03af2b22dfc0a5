//! The audit log: inserts and listings only.

use super::{SqliteStore, now, text};
use crate::store::Error;
use crate::store::audit::{AuditEvent, AuditFilter, NewAuditEvent};

impl SqliteStore {
    pub(in crate::store) async fn insert_audit(&self, e: &NewAuditEvent<'_>) -> Result<i64, Error> {
        let (id,): (i64,) = sqlx::query_as(
            "insert into audit_events (at, actor_kind, actor, actor_id, client_addr, action, target, outcome, details)
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9) returning id",
        )
        .bind(now())
        .bind(e.actor_kind.as_str())
        .bind(e.actor)
        .bind(e.actor_id.map(text))
        .bind(e.client_addr)
        .bind(e.action)
        .bind(e.target)
        .bind(e.outcome.as_str())
        .bind(e.details.map(|d| d.to_string()))
        .fetch_one(&self.writer)
        .await?;
        Ok(id)
    }

    /// Newest first; only the filters given appear in the SQL (as for runs).
    pub(in crate::store) async fn list_audit(&self, f: &AuditFilter) -> Result<Vec<AuditEvent>, Error> {
        let mut sql =
            sqlx::QueryBuilder::<sqlx::Sqlite>::new(concat!("select ", audit_columns!(), " from audit_events where 1"));
        if let Some(actor) = &f.actor {
            sql.push(" and actor = ").push_bind(actor.clone());
        }
        if let Some(action) = &f.action {
            sql.push(" and action = ").push_bind(action.clone());
        }
        if let Some(since) = f.since {
            sql.push(" and at >= ").push_bind(since.timestamp_micros());
        }
        if let Some((at, id)) = f.before {
            sql.push(" and (at, id) < (").push_bind(at.timestamp_micros()).push(", ").push_bind(id).push(")");
        }
        sql.push(" order by at desc, id desc limit ").push_bind(f.limit);
        let events = sql.build_query_as::<AuditEvent>().fetch_all(&self.reader).await?;
        Ok(events)
    }
}
