//! Re-attach after a restart ("zombie reconciliation"): the job containers an
//! earlier process of this runner left running (or exited, unreported) are found
//! by their `fastflow-runner-id` label and taken over, so their runs finish
//! normally instead of being lost when their lease runs out.

use crate::docker;
use crate::execution::{Executor, Orphan, label};
use crate::heartbeat::Heartbeats;
use std::sync::Arc;
use tokio::sync::Semaphore;
use tracing::Instrument;

/// Finds this runner's containers, registers their attempts (so heartbeats renew
/// their leases), asks the control plane once which of them it still holds, and
/// spawns a re-attached execution for each. Call before claiming and before the
/// heartbeat loop starts (`heartbeats` sends the first beat). Returns how many were adopted.
pub async fn adopt_orphans(executor: &Executor, heartbeats: &Heartbeats, slots: &Arc<Semaphore>) -> usize {
    let runner_id = executor.config().runner_id.clone();
    let ids = match executor.docker().containers_with_label(label::RUNNER_ID, &runner_id).await {
        Ok(ids) => ids,
        Err(e) => {
            tracing::error!(error = %e, "cannot list this runner's containers; not re-attaching any");
            return 0;
        }
    };
    let mut adopted = Vec::new();
    // Whether every container of this runner was looked at: only then may the first
    // heartbeat say that what it does not list has no container.
    let mut complete = true;
    for id in ids {
        let container = match executor.docker().inspect(&id).await {
            Ok(c) => c,
            Err(docker::Error::NotFound(_)) => continue,
            Err(e) => {
                tracing::warn!(container = %id, error = %e, "cannot inspect a container of this runner; leaving it");
                complete = false;
                continue;
            }
        };
        if container.state == docker::State::Removing {
            continue;
        }
        let Some(orphan) = Orphan::from_container(&container) else {
            // Without its attempt it can never be reported: nobody else will remove it.
            tracing::warn!(container = %id, labels = ?container.labels, "container lacks the labels to re-attach; removing it");
            executor.removals().remove_now(&id).await;
            continue;
        };
        let Some(stop) = executor.attempts().register(orphan.attempt.clone()).await else {
            tracing::warn!(container = %id, run_id = %orphan.attempt.run_id, "a second container for one run; leaving it");
            complete = false;
            continue;
        };
        adopted.push((orphan, stop));
    }
    // One heartbeat before anything is published or claimed: it renews the leases of
    // the adopted attempts at once, tells which ones the control plane gave up on (stale:
    // their container is removed) or cancelled while this runner was down, and, being
    // the `starting` one, lets the control plane end at once what this runner held
    // without a container (claimed, then the process died before creating it).
    // Unanswered, re-attach anyway; the heartbeat loop and lease expiry will tell.
    if !heartbeats.beat(complete).await {
        tracing::warn!("control plane did not answer the first heartbeat; re-attaching anyway");
    }
    if adopted.is_empty() {
        return 0;
    }
    let count = adopted.len();
    for (orphan, stop) in adopted {
        // Re-attached attempts take slots like claimed ones (if there are more than
        // slots, e.g. RUNNER_CONCURRENCY was lowered, the extra ones run without).
        let permit = slots.clone().try_acquire_owned().ok();
        let span = tracing::info_span!(
            "run",
            run_id = %orphan.attempt.run_id,
            attempt = orphan.attempt.attempt,
            pipeline = %orphan.pipeline,
        );
        let executor = executor.clone();
        tokio::spawn(
            async move {
                executor.reattach(orphan, stop).await;
                drop(permit);
            }
            .instrument(span),
        );
    }
    tracing::info!(count, "re-attached to containers of an earlier runner process");
    count
}
