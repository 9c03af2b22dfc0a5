//! Leases: a runner's heartbeat renews the leases of the attempts it holds and
//! learns which of them to stop (cancel requested) or drop (no longer its own).
//! Both adapters call this: the NATS runner API and the embedded runner's link.

use super::{Error, end_unheld_on_start};
use crate::context::Context;
use crate::store::runs::LeaseState;
use shared::protocol::{CancelNotice, Heartbeat, HeartbeatReply};
use std::time::Duration;

/// Records the heartbeat and renews the runner's leases. The reply carries
/// cancel notices, the attempts it no longer holds and the lease length (the
/// runner fences itself by it). A restarted runner's first heartbeat
/// (`starting`) also ends, as lost, the attempts the store gives it that it has
/// no container for.
///
/// When the store cannot be reached the reply is `provisional`: nothing was
/// renewed, but no replica can expire a lease without the store either, and
/// after an outage the sweeper waits one lease before expiring any (see
/// `sweeper`), so the runner may keep its jobs for its bounded extra time
/// instead of killing every running job at its fence.
pub async fn heartbeat(ctx: &Context, hb: &Heartbeat) -> Result<HeartbeatReply, Error> {
    let lease_ms = Some(u64::try_from(ctx.config.lease.as_millis()).unwrap_or(u64::MAX));
    let renewed = match tokio::time::timeout(STORE_PATIENCE, renew(ctx, hb)).await {
        Ok(Ok(renewed)) => renewed,
        Ok(Err(e)) => return Ok(provisional(ctx, hb, lease_ms, &e)),
        Err(_) => return Ok(provisional(ctx, hb, lease_ms, &format!("no answer within {STORE_PATIENCE:?}"))),
    };
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
    let mut reply = HeartbeatReply { lease_ms, ..HeartbeatReply::default() };
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

/// A heartbeat's store work normally takes milliseconds; past this the runner's own
/// wait (5 s) would run out before any answer, so it is answered provisionally.
const STORE_PATIENCE: Duration = Duration::from_secs(2);

/// The store cannot be reached: nothing renewed, the runner may keep its jobs for its
/// bounded grace, and this replica holds lease expiry until the store is back for a lease.
fn provisional(ctx: &Context, hb: &Heartbeat, lease_ms: Option<u64>, error: &dyn std::fmt::Display) -> HeartbeatReply {
    tracing::warn!(runner_id = %hb.runner_id, %error, "store unreachable: heartbeat answered provisionally");
    ctx.outages.seen();
    HeartbeatReply { lease_ms, provisional: true, ..HeartbeatReply::default() }
}

async fn renew(ctx: &Context, hb: &Heartbeat) -> Result<Vec<LeaseState>, Error> {
    ctx.store.record_heartbeat(hb).await?;
    Ok(ctx.store.renew_leases(&hb.runner_id, &hb.running, ctx.config.lease).await?)
}
