//! The runner's one connection to the control plane: offers, claims,
//! heartbeats, cancel notices, code bundles, log batches and exit reports.
//!
//! Two implementations, chosen at start (DESIGN.md, "exactly two per seam"):
//! [`nats::NatsLink`] for a `runner-agent` process talking to control-plane
//! replicas over NATS JetStream, and the control plane's in-process link for
//! the single-node embedded runner (`control_plane::bus::local`), which calls
//! the same run lifecycle functions directly. Everything above this trait (the
//! claim loop, execution, log pumping, re-attach) is shared code.

pub mod nats;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use shared::protocol::{
    AttemptRef, CancelNotice, ClaimReply, CodeBundleRef, ExitReply, ExitReport, Heartbeat, HeartbeatReply, JobOffer,
};
use std::time::Duration;

/// How long a heartbeat waits for its reply.
pub const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(5);

/// A failed exchange with the control plane; the caller retries or gives up.
#[derive(Debug, thiserror::Error)]
#[error("{context}: {message}")]
pub struct LinkError {
    pub context: &'static str,
    pub message: String,
}

impl LinkError {
    pub fn new(context: &'static str, e: impl std::fmt::Display) -> LinkError {
        LinkError { context, message: e.to_string() }
    }
}

/// Resolves once a published log batch is stored durably enough to be archived.
pub type LogAck = BoxFuture<'static, Result<(), LinkError>>;

/// One offered attempt, held until the runner says what became of it.
pub struct Offer {
    pub job: JobOffer,
    pub handle: Box<dyn OfferHandle>,
}

#[async_trait::async_trait]
pub trait OfferHandle: Send {
    /// Done with it (claimed, refused, or already running here).
    async fn ack(self: Box<Self>);
    /// Nobody decided: offer it again after `delay`.
    async fn retry_later(self: Box<Self>, delay: Duration);
}

#[async_trait::async_trait]
pub trait ControlLink: Send + Sync + 'static {
    /// Up to `max` offers for `pool`: those waiting now, or else the first to
    /// come within a few seconds (empty when none came).
    async fn next_offers(&self, pool: &str, max: usize) -> Result<Vec<Offer>, LinkError>;
    /// Claims these offers in one exchange. One reply per offer, in order; the
    /// list may be shorter, and the offers past its end were not decided.
    async fn claim_batch(&self, runner_id: &str, offers: &[JobOffer]) -> Result<Vec<ClaimReply>, LinkError>;
    async fn heartbeat(&self, beat: &Heartbeat) -> Result<HeartbeatReply, LinkError>;
    async fn report_exit(&self, report: &ExitReport) -> Result<ExitReply, LinkError>;
    /// Immediate cancel notices for this runner (heartbeat replies repeat them).
    async fn cancel_notices(&self, runner_id: &str) -> Result<BoxStream<'static, CancelNotice>, LinkError>;
    /// A code bundle's bytes (at most `max_bytes + 1` are read; the caller checks).
    async fn fetch_bundle(&self, code: &CodeBundleRef, max_bytes: u64) -> Result<Vec<u8>, LinkError>;
    /// Largest log batch payload the link carries.
    fn max_log_payload(&self) -> usize;
    /// Publishes one log batch starting at `first_line`. Re-publishing the same
    /// `first_line` is de-duplicated, so a batch whose ack failed can be sent again.
    async fn publish_log(&self, at: &AttemptRef, first_line: u64, payload: Bytes) -> Result<LogAck, LinkError>;
    /// The batches already published for this exact attempt and fencing token,
    /// in order, as `(first_line, payload)` (used to resume after a restart).
    async fn published_log(
        &self,
        at: &AttemptRef,
    ) -> Result<BoxStream<'static, Result<(u64, Bytes), LinkError>>, LinkError>;
    /// Sends whatever is buffered (best effort, at shutdown).
    async fn flush(&self) {}
}
