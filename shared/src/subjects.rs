//! NATS names used by both sides. Subjects are built only here.

use uuid::Uuid;

/// WorkQueue stream holding one offer per queued attempt.
pub const JOBS_STREAM: &str = "FASTFLOW_JOBS";
/// Stream holding live log batches until the attempt is archived.
pub const LOGS_STREAM: &str = "FASTFLOW_LOGS";
/// JetStream object store bucket of content-addressed pipeline code bundles.
pub const CODE_BUCKET: &str = "fastflow-code";
/// Queue group of the control-plane replicas for runner requests.
pub const CONTROL_PLANE_QUEUE: &str = "control-plane";

/// One claim per request (kept for runners of earlier releases and tools).
pub const CLAIM: &str = "ff.claim";
/// Several claims per request ([`crate::protocol::ClaimBatchRequest`]): what runners use.
pub const CLAIM_BATCH: &str = "ff.claim-batch";
pub const EXIT: &str = "ff.exit";
pub const HEARTBEAT: &str = "ff.heartbeat";

/// The pool of runners and pipelines that name none.
pub const DEFAULT_POOL: &str = "default";

/// Pool names: `^[A-Za-z0-9_-]{1,64}$` (a NATS subject token and consumer name).
pub fn valid_pool(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

pub fn job_offer(pool: &str, run_id: Uuid) -> String {
    format!("jobs.{pool}.{run_id}")
}

pub fn job_offers_of_pool(pool: &str) -> String {
    format!("jobs.{pool}.*")
}

/// Durable consumer shared by every runner of a pool.
pub fn pool_consumer(pool: &str) -> String {
    format!("runners-{pool}")
}

pub fn log_subject(run_id: Uuid, attempt: i32) -> String {
    format!("logs.{run_id}.{attempt}")
}

/// Core-NATS notice to one runner that a run must stop.
pub fn runner_cancel(runner_id: &str) -> String {
    format!("ff.runner.{runner_id}.cancel")
}

/// Core-NATS event published by the control plane when a run reaches a final status.
pub fn run_finished(run_id: Uuid) -> String {
    format!("ff.events.run.{run_id}.finished")
}

/// Message id for JetStream de-duplication of offers.
pub fn offer_msg_id(run_id: Uuid, attempt: i32) -> String {
    format!("{run_id}:{attempt}")
}
