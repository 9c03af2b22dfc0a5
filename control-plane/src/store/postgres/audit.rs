//! The audit log: inserts and listings only.

use super::PgStore;
use crate::store::Error;
use crate::store::audit::{AuditEvent, AuditFilter, NewAuditEvent};

impl PgStore {
    pub(in crate::store) async fn insert_audit(&self, e: &NewAuditEvent<'_>) -> Result<i64, Error> {
        let (id,): (i64,) = sqlx::query_as(
            "insert into audit_events (actor_kind, actor, actor_id, client_addr, action, target, outcome, details)
             values ($1, $2, $3, $4, $5, $6, $7, $8) returning id",
        )
        .bind(e.actor_kind.as_str())
        .bind(e.actor)
        .bind(e.actor_id)
        .bind(e.client_addr)
        .bind(e.action)
        .bind(e.target)
        .bind(e.outcome.as_str())
        .bind(e.details)
        .fetch_one(&self.pool)
        .await?;
        Ok(id)
    }

    /// Newest first; only the filters given appear in the SQL (as for runs).
    pub(in crate::store) async fn list_audit(&self, f: &AuditFilter) -> Result<Vec<AuditEvent>, Error> {
        let mut sql = sqlx::QueryBuilder::<sqlx::Postgres>::new(concat!(
            "select ",
            audit_columns!(),
            " from audit_events where true"
        ));
        if let Some(actor) = &f.actor {
            sql.push(" and actor = ").push_bind(actor.clone());
        }
        if let Some(action) = &f.action {
            sql.push(" and action = ").push_bind(action.clone());
        }
        if let Some(since) = f.since {
            sql.push(" and at >= ").push_bind(since);
        }
        if let Some((at, id)) = f.before {
            sql.push(" and (at, id) < (").push_bind(at).push(", ").push_bind(id).push(")");
        }
        sql.push(" order by at desc, id desc limit ").push_bind(f.limit);
        let events = sql.build_query_as::<AuditEvent>().fetch_all(&self.pool).await?;
        Ok(events)
    }
}
