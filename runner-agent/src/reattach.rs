//! Re-attach after a restart ("zombie reconciliation"): the job containers an
//! earlier process of this runner left running (or exited, unreported) are found
//! by their `fastflow-runner-id` label and taken over, so their runs finish
//! normally instead of being lost when their lease runs out.

use crate::docker;
use crate::execution::{Executor, Orphan, label};
use crate::exit_reports;
use crate::fence;
use crate::heartbeat::{Beat, Heartbeats};
use std::sync::Arc;
use tokio::sync::Semaphore;
use tracing::Instrument;

/// Finds this runner's containers, registers their attempts (so heartbeats renew
/// their leases), asks the control plane once which of them it still holds, and
/// spawns a re-attached execution for each. Call before claiming and before the
/// heartbeat loop starts (`heartbeats` sends the first beat). Returns how many were
/// adopted; `Err` when the first heartbeat shows the fence settings unsafe for the
/// control plane's lease (the runner must not start).
pub async fn adopt_orphans(
    executor: &Executor,
    heartbeats: &Heartbeats,
    slots: &Arc<Semaphore>,
) -> Result<usize, fence::Error> {
    let runner_id = executor.config().runner_id.clone();
    let ids = match executor.docker().containers_with_label(label::RUNNER_ID, &runner_id).await {
        Ok(ids) => ids,
        Err(e) => {
            tracing::error!(error = %e, "cannot list this runner's containers; not re-attaching any");
            return Ok(0);
        }
    };
    // Exit reports an earlier process saved but could not deliver: sent again, and
    // their containers (if any) are not followed again but removed once delivered.
    let mut saved: std::collections::HashMap<_, _> =
        executor.reports().pending().into_iter().map(|p| (p.report.attempt.clone(), p)).collect();
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
        let report = saved.remove(&orphan.attempt);
        adopted.push((Adopted::Container(orphan, report), stop));
    }
    for (attempt, pending) in saved {
        // No container (the attempt failed before one existed, or it is gone): the
        // report alone is what is left of the attempt.
        let Some(stop) = executor.attempts().register(attempt.clone()).await else { continue };
        adopted.push((Adopted::Report(pending), stop));
    }
    // One heartbeat before anything is published or claimed: it renews the leases of
    // the adopted attempts at once, tells which ones the control plane gave up on (stale:
    // their container is removed) or cancelled while this runner was down, and, being
    // the `starting` one, lets the control plane end at once what this runner held
    // without a container (claimed, then the process died before creating it).
    // Unanswered, re-attach anyway; the heartbeat loop and lease expiry will tell.
    if let Beat::Unanswered = heartbeats.beat(complete).await? {
        tracing::warn!("control plane did not answer the first heartbeat; re-attaching anyway");
    }
    if adopted.is_empty() {
        return Ok(0);
    }
    let count = adopted.len();
    for (adopted, stop) in adopted {
        // Re-attached attempts take slots like claimed ones (if there are more than
        // slots, e.g. RUNNER_CONCURRENCY was lowered, the extra ones run without).
        let permit = slots.clone().try_acquire_owned().ok();
        let attempt = adopted.attempt().clone();
        let span = tracing::info_span!("run", run_id = %attempt.run_id, attempt = attempt.attempt);
        let executor = executor.clone();
        tokio::spawn(
            async move {
                match adopted {
                    Adopted::Container(orphan, None) => executor.reattach(orphan, stop).await,
                    Adopted::Container(orphan, Some(mut pending)) => {
                        pending.container_id = Some(orphan.container_id);
                        executor.resend(pending, stop).await
                    }
                    Adopted::Report(pending) => executor.resend(pending, stop).await,
                }
                drop(permit);
            }
            .instrument(span),
        );
    }
    tracing::info!(count, "re-attached to containers of an earlier runner process");
    Ok(count)
}

/// What an earlier process of this runner left to finish.
enum Adopted {
    /// A container, and the exit report saved for it if its log was complete.
    Container(Orphan, Option<exit_reports::Pending>),
    /// A saved exit report without a container.
    Report(exit_reports::Pending),
}

impl Adopted {
    fn attempt(&self) -> &shared::protocol::AttemptRef {
        match self {
            Adopted::Container(orphan, _) => &orphan.attempt,
            Adopted::Report(pending) => &pending.report.attempt,
        }
    }
}
