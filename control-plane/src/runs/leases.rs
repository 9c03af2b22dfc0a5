//! Leases: a runner's heartbeat renews the leases of the attempts it holds and
//! learns which of them to stop (cancel requested) or drop (no longer its own).
//! Both adapters call this: the NATS runner API and the embedded runner's link.

use super::{Error, end_unheld_on_start};
use crate::context::Context;
use shared::protocol::{CancelNotice, Heartbeat, HeartbeatReply};

/// Records the heartbeat and renews the runner's leases. The reply carries
/// cancel notices and the attempts it no longer holds. A restarted runner's
/// first heartbeat (`starting`) also ends, as lost, the attempts the store
/// gives it that it has no container for.
pub async fn heartbeat(ctx: &Context, hb: &Heartbeat) -> Result<HeartbeatReply, Error> {
    ctx.store.record_heartbeat(hb).await?;
    let renewed = ctx.store.renew_leases(&hb.runner_id, &hb.running, ctx.config.lease).await?;
    if hb.starting {
        // Not fatal for the heartbeat: the leases are renewed; the sweeper ends
        // those attempts when their lease runs out.
        match end_unheld_on_start(ctx, &hb.runner_id, &hb.running).await {
            Ok(0) => {}
            Ok(ended) => {
                tracing::info!(runner_id = %hb.runner_id, ended, "ended attempts the restarted runner had no container for")
            }
            Err(e) => {
                tracing::warn!(runner_id = %hb.runner_id, error = %e, "could not end attempts of a restarted runner")
            }
        }
    }
    let mut reply = HeartbeatReply::default();
    for held in &hb.running {
        match renewed.iter().find(|r| &r.attempt == held) {
            Some(state) if state.cancel_requested => {
                reply.cancel.push(CancelNotice { attempt: held.clone(), force: state.cancel_force })
            }
            Some(_) => {}
            None => reply.stale.push(held.clone()),
        }
    }
    Ok(reply)
}
