//! `GET /api/v1/audit` (admins): the audit log, newest first, filtered and
//! keyset-paginated like the run list; and [`record`], how handlers write to it.

use super::error::Error;
use super::extract::QueryMap;
use super::pagination::{Page, decode_cursor};
use super::routing::ApiRouter;
use crate::auth::audit::{self, Action, Actor, Outcome};
use crate::context::Context;
use crate::store::audit::{ActorKind, AuditEvent, AuditFilter};
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::Serialize;

pub fn router() -> ApiRouter {
    ApiRouter::new().get("/api/v1/audit", list)
}

const DEFAULT_LIMIT: i64 = 100;
const MAX_LIMIT: i64 = 500;

/// An audit entry as the API shows it (its own type: a store change cannot change the API).
#[derive(Serialize)]
struct AuditEventResponse {
    id: i64,
    at: DateTime<Utc>,
    actor_kind: ActorKind,
    actor: String,
    actor_id: Option<uuid::Uuid>,
    client_addr: Option<String>,
    action: String,
    target: Option<String>,
    outcome: Outcome,
    details: Option<serde_json::Value>,
}

impl From<AuditEvent> for AuditEventResponse {
    fn from(e: AuditEvent) -> Self {
        AuditEventResponse {
            id: e.id,
            at: e.at,
            actor_kind: e.actor_kind,
            actor: e.actor,
            actor_id: e.actor_id,
            client_addr: e.client_addr,
            action: e.action,
            target: e.target,
            outcome: e.outcome,
            details: e.details,
        }
    }
}

async fn list(State(ctx): State<Context>, QueryMap(query): QueryMap) -> Result<Page<AuditEventResponse>, Error> {
    let text = |key: &str| query.get(key).map(|v| v.trim()).filter(|v| !v.is_empty()).map(str::to_owned);
    let limit = match text("limit") {
        None => DEFAULT_LIMIT,
        Some(raw) => raw
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| Error::invalid("limit", format!("limit must be a number from 1 to {MAX_LIMIT}")))?,
    };
    let since = text("since")
        .map(|raw| {
            DateTime::parse_from_rfc3339(&raw)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| Error::invalid("since", "since must be an RFC 3339 time such as 2026-01-31T00:00:00Z"))
        })
        .transpose()?;
    let action = text("action");
    if let Some(action) = &action
        && !Action::ALL.iter().any(|a| a.as_str() == action.as_str())
    {
        let known: Vec<&str> = Action::ALL.iter().map(|a| a.as_str()).collect();
        return Err(Error::invalid("action", format!("unknown action `{action}`; known: {}", known.join(", "))));
    }
    let before = text("cursor").map(|raw| decode_cursor(&raw)).transpose()?;
    let filter = AuditFilter { actor: text("actor"), action, since, before, limit: limit + 1 };
    let rows = audit::list(&ctx.store, &filter).await?;
    Ok(Page::from_rows(rows, limit, |e| (e.at, e.id), AuditEventResponse::from))
}

/// One audit entry from a handler. A failure to write it is logged, not returned:
/// the action it describes has already happened.
pub async fn record(
    ctx: &Context,
    actor: Actor<'_>,
    client_addr: Option<&str>,
    action: Action,
    target: Option<&str>,
    outcome: Outcome,
    details: Option<serde_json::Value>,
) {
    let entry = audit::Entry { actor, client_addr, action, target, outcome, details };
    if let Err(e) = audit::record(&ctx.store, entry).await {
        tracing::error!(%action, error = %e, "could not write an audit entry");
    }
}
