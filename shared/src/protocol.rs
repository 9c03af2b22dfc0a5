//! Messages exchanged over NATS between runners and the control plane (JSON).
//!
//! Every write a runner makes about a run after claiming it carries the run's
//! fencing token; the control plane refuses stale tokens.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use uuid::Uuid;

/// Published on the jobs stream: "this attempt of this run wants a runner".
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct JobOffer {
    pub run_id: Uuid,
    pub attempt: i32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClaimRequest {
    pub run_id: Uuid,
    pub attempt: i32,
    pub runner_id: String,
}

/// Several offers claimed in one exchange (and, on the control plane, in one
/// transaction): how a runner with many free slots claims fast.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClaimBatchRequest {
    pub runner_id: String,
    pub offers: Vec<JobOffer>,
}

/// One answer per offer, in the request's order. It may be shorter than the
/// request: the offers past its end were not decided (the reply would have
/// been too large) and are offered again.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClaimBatchReply {
    pub replies: Vec<ClaimReply>,
}

// The large variant is the common one, decoded once per claim: boxing buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum ClaimReply {
    Granted {
        job: JobSpec,
    },
    /// The run is no longer claimable (already claimed, cancelled, finished, unknown).
    Refused {
        reason: String,
    },
}

/// A content-addressed bundle (tar) of the pipeline's folder, stored in the
/// [`crate::subjects::CODE_BUCKET`] object store under its sha256 digest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CodeBundleRef {
    pub digest: String,
    pub size: u64,
}

/// Everything a runner needs to execute one attempt; frozen when the run is created.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct JobSpec {
    pub run_id: Uuid,
    pub attempt: i32,
    pub fencing_token: i64,
    pub pipeline_name: String,
    pub image: String,
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// Mounted read-only at `/app` when present.
    pub code: Option<CodeBundleRef>,
    /// Mount the runner's uv cache (Python pipelines).
    pub mount_uv_cache: bool,
    pub timeout_seconds: Option<u64>,
    #[serde(default)]
    pub resources: Resources,
    /// Output past this many bytes is dropped (a marker line says how much).
    #[serde(default)]
    pub log_max_bytes: Option<u64>,
    /// What the container may reach. A spec without it (frozen before the field
    /// existed) gets the safe default, `isolated`.
    #[serde(default)]
    pub network: NetworkPolicy,
}

/// A job's network (`network` in pipeline.toml); README "Job networks" says what each allows.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum NetworkPolicy {
    /// No interface but loopback.
    None,
    /// The runner's own bridge: outbound only; not the host, its other containers,
    /// other jobs or the cloud metadata address.
    #[default]
    Isolated,
    /// The engine's default bridge, as before network policies existed: whatever a
    /// container on it reaches (the host's services on non-loopback addresses too).
    HostBridge,
}

impl NetworkPolicy {
    /// The name used in pipeline.toml, labels and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkPolicy::None => "none",
            NetworkPolicy::Isolated => "isolated",
            NetworkPolicy::HostBridge => "host-bridge",
        }
    }
}

/// Container limits of one job. `None` means the runner's default for that limit
/// (`RUNNER_DEFAULT_*`), never "no limit".
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct Resources {
    pub memory_mb: Option<u64>,
    /// CPU share in thousandths of a CPU (1500 = 1.5 CPUs).
    pub cpu_millis: Option<u64>,
    /// Maximum number of processes and threads.
    pub pids: Option<i64>,
}

/// Identifies one attempt as held by one runner.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Hash)]
pub struct AttemptRef {
    pub run_id: Uuid,
    pub attempt: i32,
    pub fencing_token: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ExitOutcome {
    /// The container ran and exited with this code (also after a stop signal).
    Exited { exit_code: i64 },
    /// The container could not be started (image missing, code unavailable, …).
    SetupError { message: String },
}

/// Totals of what the runner published for one attempt, so the control plane can
/// verify that the archive it writes is complete.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct LogTotals {
    pub lines: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExitReport {
    pub attempt: AttemptRef,
    pub runner_id: String,
    pub outcome: ExitOutcome,
    pub log: LogTotals,
    /// The runner stopped the container because its timeout passed.
    #[serde(default)]
    pub timed_out: bool,
    /// The runner stopped the job on a cancel: a user's, or its own forced shutdown.
    #[serde(default)]
    pub cancelled: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum ExitReply {
    /// Final status recorded and the log archived: the container may be removed.
    Accepted,
    /// The token is stale or the run is unknown: forget the attempt.
    Rejected { reason: String },
    /// Something transient failed (archive, database): report again later.
    RetryLater { reason: String },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Heartbeat {
    pub runner_id: String,
    pub version: String,
    pub pool: String,
    pub slots: u32,
    pub running: Vec<AttemptRef>,
    /// The first heartbeat of a runner process, sent after it re-attached to its
    /// containers and before it claims anything: attempts the store assigns to this
    /// runner id but `running` does not list have no container and never will.
    #[serde(default)]
    pub starting: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct HeartbeatReply {
    /// Attempts whose cancellation was requested: stop them.
    pub cancel: Vec<CancelNotice>,
    /// Attempts this runner no longer holds (token stale or run final): stop and forget them.
    pub stale: Vec<AttemptRef>,
    /// The lease length the control plane grants, in milliseconds: the runner stops its
    /// jobs before a lease renewed by this heartbeat can run out (self-fencing, measured
    /// on its own clock from when it sent the heartbeat). `None` from older control planes.
    #[serde(default)]
    pub lease_ms: Option<u64>,
    /// The control plane answered but could not reach its database: nothing was renewed
    /// and `cancel`/`stale` are empty. No replica can expire a lease without the database
    /// either, so the runner may keep its jobs for a bounded extra time (see the runner's
    /// `RUNNER_UNCONFIRMED_LEASE_GRACE_SECONDS`).
    #[serde(default)]
    pub provisional: bool,
}

/// Sent once by a new runner on the enroll subject: a registration token exchanged
/// for the runner's own credentials.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnrollRequest {
    /// The registration token an admin created (`POST /api/v1/runners/registration-tokens`).
    pub token: String,
    /// The id the runner asks for (`RUNNER_ID`, or the default kept in its data dir).
    pub runner_id: String,
    /// `RUNNER_POOL` when set; otherwise the token's pool, else the default pool.
    pub pool: Option<String>,
    pub version: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum EnrollReply {
    /// The runner's identity: it connects with `runner_id` and `secret` from now on,
    /// and serves `pool` only.
    Enrolled {
        runner_id: String,
        pool: String,
        secret: String,
    },
    Refused {
        reason: String,
    },
}

/// Core-NATS notice sent to the runner holding an attempt.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CancelNotice {
    pub attempt: AttemptRef,
    /// Skip the grace period: SIGKILL at once.
    #[serde(default)]
    pub force: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_without_a_network_is_isolated() {
        let spec = serde_json::json!({
            "run_id": Uuid::nil(), "attempt": 1, "fencing_token": 1, "pipeline_name": "p",
            "image": "i", "command": [], "env": {}, "code": null, "mount_uv_cache": false,
            "timeout_seconds": null,
        });
        let job: JobSpec = serde_json::from_value(spec).expect("an older spec still decodes");
        assert_eq!(job.network, NetworkPolicy::Isolated);
        for policy in [NetworkPolicy::None, NetworkPolicy::Isolated, NetworkPolicy::HostBridge] {
            assert_eq!(serde_json::to_value(policy).ok(), Some(serde_json::Value::from(policy.as_str())));
        }
    }
}
