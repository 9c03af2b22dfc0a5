//! NATS names used by both sides. Subjects, stream and bucket names are built only here.
//!
//! Every name of one deployment derives from its [`Subjects`] (from
//! `NATS_SUBJECT_PREFIX`): two deployments with different prefixes on one NATS server
//! share no subject, stream, consumer or bucket. Requests a runner sends carry its
//! id in the subject (`ff.r.<runner>.<op>`): the NATS server lets a runner publish
//! only on its own subjects, so the control plane learns the sender from the subject,
//! never from a field the runner writes.

use uuid::Uuid;

/// Queue group of the control-plane replicas for runner requests.
pub const CONTROL_PLANE_QUEUE: &str = "control-plane";

/// The pool of runners and pipelines that name none.
pub const DEFAULT_POOL: &str = "default";

/// Connect user of a runner exchanging a registration token (`enroll-<nonce>`).
pub const ENROLL_USER_PREFIX: &str = "enroll-";

/// Subject the NATS server sends auth-callout requests to (fixed by NATS).
pub const AUTH_CALLOUT: &str = "$SYS.REQ.USER.AUTH";

/// Pool names: `^[A-Za-z0-9_-]{1,64}$` (a NATS subject token and consumer name).
pub fn valid_pool(name: &str) -> bool {
    valid_token(name, 64)
}

/// Runner ids: `^[A-Za-z0-9_-]{1,64}$` (a subject token).
pub fn valid_runner_id(id: &str) -> bool {
    valid_token(id, 64)
}

/// `NATS_SUBJECT_PREFIX`: `^[A-Za-z0-9_-]{1,32}$` (a subject token and part of stream names).
pub fn valid_prefix(prefix: &str) -> bool {
    valid_token(prefix, 32)
}

fn valid_token(s: &str, max: usize) -> bool {
    (1..=max).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The request a runner makes, the last token of `ff.r.<runner>.<op>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunnerOp {
    /// One claim per request (tools; runners batch).
    Claim,
    /// Several claims per request ([`crate::protocol::ClaimBatchRequest`]).
    ClaimBatch,
    Exit,
    Heartbeat,
}

impl RunnerOp {
    pub const ALL: [RunnerOp; 4] = [RunnerOp::Claim, RunnerOp::ClaimBatch, RunnerOp::Exit, RunnerOp::Heartbeat];

    pub fn as_str(self) -> &'static str {
        match self {
            RunnerOp::Claim => "claim",
            RunnerOp::ClaimBatch => "claim-batch",
            RunnerOp::Exit => "exit",
            RunnerOp::Heartbeat => "heartbeat",
        }
    }
}

/// The names of one deployment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Subjects {
    /// `""` or `"<prefix>."`.
    subject_prefix: String,
    /// `""` or `"_<prefix>"` in stream names, `"-<prefix>"` in the bucket name.
    prefix: Option<String>,
}

impl Subjects {
    /// `prefix` must pass [`valid_prefix`] (callers check it with the setting's name);
    /// `None`: the names of a deployment without a prefix.
    pub fn new(prefix: Option<&str>) -> Subjects {
        match prefix {
            None => Subjects::default(),
            Some(p) => Subjects { subject_prefix: format!("{p}."), prefix: Some(p.to_owned()) },
        }
    }

    /// The prefix, if any.
    pub fn prefix(&self) -> Option<&str> {
        self.prefix.as_deref()
    }

    /// WorkQueue stream holding one offer per queued attempt.
    pub fn jobs_stream(&self) -> String {
        match &self.prefix {
            None => "FASTFLOW_JOBS".into(),
            Some(p) => format!("FASTFLOW_{p}_JOBS"),
        }
    }

    /// Stream holding live log batches until the attempt is archived.
    pub fn logs_stream(&self) -> String {
        match &self.prefix {
            None => "FASTFLOW_LOGS".into(),
            Some(p) => format!("FASTFLOW_{p}_LOGS"),
        }
    }

    /// JetStream object store bucket of content-addressed pipeline code bundles.
    pub fn code_bucket(&self) -> String {
        match &self.prefix {
            None => "fastflow-code".into(),
            Some(p) => format!("fastflow-{p}-code"),
        }
    }

    /// The object store's stream (NATS names it `OBJ_<bucket>`).
    pub fn code_stream(&self) -> String {
        format!("OBJ_{}", self.code_bucket())
    }

    /// Every subject of the jobs stream.
    pub fn jobs_stream_subjects(&self) -> String {
        format!("{}jobs.>", self.subject_prefix)
    }

    /// Every subject of the logs stream.
    pub fn logs_stream_subjects(&self) -> String {
        format!("{}logs.>", self.subject_prefix)
    }

    pub fn job_offer(&self, pool: &str, run_id: Uuid) -> String {
        format!("{}jobs.{pool}.{run_id}", self.subject_prefix)
    }

    pub fn job_offers_of_pool(&self, pool: &str) -> String {
        format!("{}jobs.{pool}.*", self.subject_prefix)
    }

    /// Log batches of one attempt as published by one runner (the only runner allowed to).
    pub fn log_subject(&self, run_id: Uuid, attempt: i32, runner_id: &str) -> String {
        format!("{}logs.{run_id}.{attempt}.{runner_id}", self.subject_prefix)
    }

    /// Every runner's log subject of one attempt: what readers filter on (they keep
    /// only the batches carrying the attempt's fencing token) and purges clear.
    pub fn log_subjects_of_attempt(&self, run_id: Uuid, attempt: i32) -> String {
        format!("{}logs.{run_id}.{attempt}.*", self.subject_prefix)
    }

    /// The log subjects one runner may publish on.
    pub fn log_subjects_of_runner(&self, runner_id: &str) -> String {
        format!("{}logs.*.*.{runner_id}", self.subject_prefix)
    }

    /// A request of one runner.
    pub fn runner_request(&self, runner_id: &str, op: RunnerOp) -> String {
        format!("{}ff.r.{runner_id}.{}", self.subject_prefix, op.as_str())
    }

    /// Every request subject of one runner (what it may publish on).
    pub fn requests_of_runner(&self, runner_id: &str) -> String {
        format!("{}ff.r.{runner_id}.*", self.subject_prefix)
    }

    /// Every runner's requests of one kind: what the control plane subscribes to.
    pub fn runner_requests(&self, op: RunnerOp) -> String {
        format!("{}ff.r.*.{}", self.subject_prefix, op.as_str())
    }

    /// The runner id of a request subject built by [`Self::runner_request`].
    pub fn runner_of_request<'a>(&self, subject: &'a str) -> Option<&'a str> {
        let rest = subject.strip_prefix(self.subject_prefix.as_str())?.strip_prefix("ff.r.")?;
        let (runner, _op) = rest.split_once('.')?;
        valid_runner_id(runner).then_some(runner)
    }

    /// Enrollment requests: a registration token exchanged for a runner identity.
    pub fn enroll(&self) -> String {
        format!("{}ff.enroll", self.subject_prefix)
    }

    /// Core-NATS notice to one runner that a run must stop.
    pub fn runner_cancel(&self, runner_id: &str) -> String {
        format!("{}ff.runner.{runner_id}.cancel", self.subject_prefix)
    }

    /// Core-NATS event published by the control plane when a run reaches a final status.
    pub fn run_finished(&self, run_id: Uuid) -> String {
        format!("{}ff.events.run.{run_id}.finished", self.subject_prefix)
    }

    /// The reply inbox prefix of a connection whose user is `user` (a runner id or an
    /// `enroll-<nonce>` user): each may subscribe only below its own.
    pub fn inbox_prefix(&self, user: &str) -> String {
        format!("_INBOX.{}{user}", self.subject_prefix)
    }
}

/// Durable consumer shared by every runner of a pool.
pub fn pool_consumer(pool: &str) -> String {
    format!("runners-{pool}")
}

/// Message id for JetStream de-duplication of offers.
pub fn offer_msg_id(run_id: Uuid, attempt: i32) -> String {
    format!("{run_id}:{attempt}")
}

/// Message id for JetStream de-duplication of one log batch. It holds the attempt's
/// fencing token, a secret of the runner holding it: no one else can publish a batch
/// with this id first and have the genuine one dropped as a duplicate.
pub fn log_batch_msg_id(run_id: Uuid, attempt: i32, fencing_token: i64, first_line: u64) -> String {
    format!("{run_id}:{attempt}:{fencing_token:x}:{first_line}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_separate_every_name() {
        let plain = Subjects::new(None);
        let acme = Subjects::new(Some("acme"));
        let run = Uuid::nil();
        assert_eq!(plain.jobs_stream(), "FASTFLOW_JOBS");
        assert_eq!(acme.jobs_stream(), "FASTFLOW_acme_JOBS");
        assert_eq!(acme.code_bucket(), "fastflow-acme-code");
        assert_eq!(plain.job_offer("default", run), format!("jobs.default.{run}"));
        assert_eq!(acme.job_offer("default", run), format!("acme.jobs.default.{run}"));
        assert_eq!(acme.runner_request("r1", RunnerOp::Exit), "acme.ff.r.r1.exit");
        assert_eq!(acme.inbox_prefix("r1"), "_INBOX.acme.r1");
        assert_ne!(plain.logs_stream(), acme.logs_stream());
    }

    #[test]
    fn the_sender_is_read_from_the_subject() {
        for subjects in [Subjects::new(None), Subjects::new(Some("p-1"))] {
            for op in RunnerOp::ALL {
                let subject = subjects.runner_request("runner-7", op);
                assert_eq!(subjects.runner_of_request(&subject), Some("runner-7"));
            }
            assert_eq!(subjects.runner_of_request("ff.claim"), None);
            assert_eq!(subjects.runner_of_request("other.ff.r.x.exit"), None);
        }
        assert_eq!(Subjects::new(Some("a")).runner_of_request("ff.r.x.exit"), None);
    }

    #[test]
    fn names_are_subject_tokens() {
        assert!(valid_pool("gpu_1-a"));
        assert!(!valid_pool("a.b") && !valid_pool("") && !valid_pool("a*") && !valid_pool(&"x".repeat(65)));
        assert!(valid_prefix("acme") && !valid_prefix("a.b") && !valid_prefix(&"x".repeat(33)));
        assert!(valid_runner_id("runner-0") && !valid_runner_id("r>"));
    }
}
