//! What the NATS server lets a runner's connection do: publish only on its own
//! subjects and read only its pool's offers, its own notices and its own inbox. The
//! JetStream API is allowed only for what the runner link calls (`runner-agent`'s
//! `link/nats.rs`): its pool's consumer on the jobs stream, an ordered consumer of its
//! own log subjects, and reading the code bucket.

use shared::subjects::{Subjects, pool_consumer};

/// Subjects a connection may publish on and subscribe to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permissions {
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
}

/// An enrolled runner of `pool`.
pub fn runner(subjects: &Subjects, runner_id: &str, pool: &str) -> Permissions {
    let jobs = subjects.jobs_stream();
    let logs = subjects.logs_stream();
    let code = subjects.code_stream();
    let consumer = pool_consumer(pool);
    let own_logs = subjects.log_subjects_of_runner(runner_id);
    let mut publish = vec![
        // Claims, heartbeats and exit reports, under its own id.
        subjects.requests_of_runner(runner_id),
        // Log batches of its attempts.
        own_logs.clone(),
        // Its pool's offers: the durable consumer (created with exactly this filter), fetching, acking.
        format!("$JS.API.STREAM.INFO.{jobs}"),
        format!("$JS.API.CONSUMER.INFO.{jobs}.{consumer}"),
        format!("$JS.API.CONSUMER.CREATE.{jobs}.{consumer}.{}", subjects.job_offers_of_pool(pool)),
        format!("$JS.API.CONSUMER.MSG.NEXT.{jobs}.{consumer}"),
        format!("$JS.ACK.{jobs}.{consumer}.>"),
        // Re-reading what it published itself (after a restart): an ordered consumer of its own subjects.
        format!("$JS.API.STREAM.INFO.{logs}"),
        format!("$JS.API.CONSUMER.CREATE.{logs}.*.{own_logs}"),
        format!("$JS.API.CONSUMER.INFO.{logs}.*"),
        format!("$JS.API.CONSUMER.MSG.NEXT.{logs}.*"),
        format!("$JS.API.CONSUMER.DELETE.{logs}.*"),
    ];
    // Code bundles: read-only access to the bucket.
    publish.extend(code_bucket_reads(&code));
    Permissions {
        publish,
        subscribe: vec![format!("{}.>", subjects.inbox_prefix(runner_id)), subjects.runner_cancel(runner_id)],
    }
}

fn code_bucket_reads(code_stream: &str) -> Vec<String> {
    vec![
        format!("$JS.API.STREAM.INFO.{code_stream}"),
        format!("$JS.API.STREAM.MSG.GET.{code_stream}"),
        format!("$JS.API.DIRECT.GET.{code_stream}"),
        format!("$JS.API.DIRECT.GET.{code_stream}.>"),
        format!("$JS.API.CONSUMER.CREATE.{code_stream}"),
        format!("$JS.API.CONSUMER.CREATE.{code_stream}.>"),
        format!("$JS.API.CONSUMER.INFO.{code_stream}.*"),
        format!("$JS.API.CONSUMER.MSG.NEXT.{code_stream}.*"),
        format!("$JS.API.CONSUMER.DELETE.{code_stream}.*"),
    ]
}

/// A connection presenting a registration token (user `enroll-<nonce>`): it may ask to
/// enroll and read its own replies, nothing else.
pub fn enrolling(subjects: &Subjects, user: &str) -> Permissions {
    Permissions { publish: vec![subjects.enroll()], subscribe: vec![format!("{}.>", subjects.inbox_prefix(user))] }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_runner_publishes_only_under_its_own_id() {
        let subjects = Subjects::new(Some("blue"));
        let p = runner(&subjects, "r1", "gpu");
        assert!(p.publish.contains(&"blue.ff.r.r1.*".to_owned()), "{:?}", p.publish);
        assert!(p.publish.contains(&"blue.logs.*.*.r1".to_owned()));
        assert!(p.publish.iter().all(|s| !s.contains("r2") && !s.starts_with("_INBOX") && s != ">"));
        assert!(
            p.publish.contains(&"$JS.API.CONSUMER.CREATE.FASTFLOW_blue_JOBS.runners-gpu.blue.jobs.gpu.*".to_owned())
        );
        assert_eq!(p.subscribe, vec!["_INBOX.blue.r1.>".to_owned(), "blue.ff.runner.r1.cancel".to_owned()]);
        let e = enrolling(&subjects, "enroll-abc");
        assert_eq!(e.publish, vec!["blue.ff.enroll".to_owned()]);
        assert_eq!(e.subscribe, vec!["_INBOX.blue.enroll-abc.>".to_owned()]);
    }
}
