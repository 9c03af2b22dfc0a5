//! Store behaviour: the same test bodies against both backends. `both!(name)`
//! makes `name::sqlite` (a database in a temp dir) and `name::postgres` (a
//! private database created through `FASTFLOW_PG_ADMIN_URL`, dropped after).
//! Without that variable the Postgres variants fail: they never pass silently.
//! The harness is `support/test_db.rs`, shared with `store_auth.rs`.

#[macro_use]
#[path = "support/test_db.rs"]
mod test_db;

use control_plane::store::runs::{
    ArchivedLog, Claim, ClaimResult, NewRun, Outcome, Run, RunFilter, Trigger, WaitingReason,
};
use control_plane::store::transfer::{BundleRecord, RunRecord};
use control_plane::store::{Error, Store};
use serde_json::json;
use shared::protocol::{AttemptRef, Heartbeat};
use shared::{FailureReason, RunStatus};
use std::future::Future;
use std::time::Duration;
use test_db::{TestDb, run_on};
use uuid::Uuid;

const LEASE: Duration = Duration::from_secs(60);

// ---- helpers ----

async fn submit(store: &Store, pipeline: &str, pool: &str, spec: serde_json::Value) -> Run {
    let run = store
        .insert_run(NewRun {
            id: Uuid::now_v7(),
            pipeline_name: pipeline,
            pool,
            params: json!({"who": "world", "n": 3}),
            // As `runs::submit` does: the template's timeout, in its own column.
            timeout_seconds: spec["timeout_seconds"].as_i64(),
            triggered_by: None,
            spec,
        })
        .await
        .expect("insert_run");
    // Distinct creation times, so "newest first" is the insertion order reversed.
    tokio::time::sleep(Duration::from_millis(2)).await;
    run
}

fn claim_of<'a>(run: &'a Run, runner: &'a str, lease: Duration) -> Claim<'a> {
    Claim {
        run_id: run.id,
        attempt: run.attempt,
        runner_id: runner,
        pipeline_name: &run.pipeline_name,
        lease,
        max_running: None,
        max_running_of_pipeline: None,
    }
}

/// One claim, in a batch of its own.
async fn claim_one(store: &Store, claim: &Claim<'_>) -> Result<ClaimResult, Error> {
    let mut results = store.claim_batch(std::slice::from_ref(claim)).await?;
    assert_eq!(results.len(), 1, "one result per claim");
    Ok(results.pop().expect("one result"))
}

async fn claimed(store: &Store, run: &Run, runner: &str, lease: Duration) -> Run {
    match claim_one(store, &claim_of(run, runner, lease)).await.expect("claim") {
        ClaimResult::Granted(run) => *run,
        ClaimResult::Waiting(reason) => panic!("claim of {} waits: {reason}", run.id),
        ClaimResult::Gone => panic!("claim of {} is gone", run.id),
    }
}

fn failed() -> Outcome {
    Outcome {
        status: RunStatus::Failed,
        reason: Some(FailureReason::ExitCode),
        exit_code: Some(3),
        error_message: Some("exit 3".into()),
    }
}

fn success() -> Outcome {
    Outcome { status: RunStatus::Success, reason: None, exit_code: Some(0), error_message: None }
}

fn heartbeat(runner: &str, pool: &str, running: Vec<AttemptRef>) -> Heartbeat {
    Heartbeat {
        runner_id: runner.into(),
        version: "1.2.3".into(),
        pool: pool.into(),
        slots: 4,
        running,
        starting: false,
    }
}

async fn get(store: &Store, id: Uuid) -> Run {
    store.get_run(id).await.expect("get_run").expect("the run exists")
}

fn spec() -> serde_json::Value {
    json!({"image": "python:3.12", "command": ["python", "main.py"], "timeout_seconds": 3600})
}

// ---- the tests ----

both!(connect_and_kind);
async fn connect_and_kind(store: Store) {
    assert!(["sqlite", "postgres"].contains(&store.kind()));
    store.ping().await.expect("ping");
    match Store::connect("mysql://user:secret@host/db").await {
        Err(Error::UnsupportedUrl(scheme)) => assert_eq!(scheme, "mysql"),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("mysql:// must be refused"),
    }
}

both!(insert_get_list);
async fn insert_get_list(store: Store) {
    let mut inserted = Vec::new();
    for i in 0..5 {
        let pipeline = if i % 2 == 0 { "even" } else { "odd" };
        inserted.push(submit(&store, pipeline, "default", spec()).await);
    }
    let first = &inserted[0];
    assert_eq!(first.status, RunStatus::Queued);
    assert_eq!(first.attempt, 1);
    assert_eq!(first.trigger, Trigger::Api);
    assert_eq!(first.fencing_token, 0);
    assert_eq!(first.params, json!({"who": "world", "n": 3}));
    assert_eq!(first.spec, spec());
    assert_eq!(&get(&store, first.id).await, first);
    assert!(store.get_run(Uuid::new_v4()).await.expect("get_run").is_none());

    // Pages of two, newest first, by keyset.
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = store.list_runs(&RunFilter { before, limit: 2, ..Default::default() }).await.expect("list");
        assert!(page.len() <= 2);
        let Some(last) = page.last() else { break };
        before = Some((last.created_at, last.id));
        seen.extend(page.into_iter().map(|r| r.id));
    }
    let newest_first: Vec<Uuid> = inserted.iter().rev().map(|r| r.id).collect();
    assert_eq!(seen, newest_first);

    let even = store
        .list_runs(&RunFilter { pipeline: Some("even".into()), limit: 10, ..Default::default() })
        .await
        .expect("list even");
    assert_eq!(even.iter().map(|r| r.id).collect::<Vec<_>>(), vec![inserted[4].id, inserted[2].id, inserted[0].id]);

    claimed(&store, &inserted[1], "r1", LEASE).await;
    let running = store
        .list_runs(&RunFilter { status: Some(RunStatus::Running), limit: 10, ..Default::default() })
        .await
        .expect("list running");
    assert_eq!(running.iter().map(|r| r.id).collect::<Vec<_>>(), vec![inserted[1].id]);
    let none = store
        .list_runs(&RunFilter {
            pipeline: Some("even".into()),
            status: Some(RunStatus::Running),
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("list even running");
    assert!(none.is_empty());

    // Every filter at once, paged by keyset: the queued runs of `even`, one per page.
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let filter = RunFilter { pipeline: Some("even".into()), status: Some(RunStatus::Queued), before, limit: 1 };
        let page = store.list_runs(&filter).await.expect("list even queued");
        let Some(last) = page.last() else { break };
        assert_eq!(page.len(), 1);
        before = Some((last.created_at, last.id));
        seen.push(last.id);
    }
    assert_eq!(seen, vec![inserted[4].id, inserted[2].id, inserted[0].id]);
    let queued_after_newest = store
        .list_runs(&RunFilter {
            status: Some(RunStatus::Queued),
            before: Some((inserted[4].created_at, inserted[4].id)),
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("list queued after the newest");
    // inserted[1] is running now.
    assert_eq!(
        queued_after_newest.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![inserted[3].id, inserted[2].id, inserted[0].id]
    );
    assert_eq!(store.count_runs().await.expect("count_runs"), 5);
}

both!(concurrent_submissions_each_get_their_own_run);
/// Many submissions at once (on SQLite they share commits: group commit). Each caller gets
/// its own run back, every run is stored with its own fields, and an insert that fails (an
/// id already stored, an id submitted twice) fails alone.
async fn concurrent_submissions_each_get_their_own_run(store: Store) {
    let existing = submit(&store, "p", "default", spec()).await;
    let fresh: Vec<Uuid> = (0..200).map(|_| Uuid::now_v7()).collect();
    let twice = fresh[150];
    let mut ids = fresh.clone();
    ids.insert(50, existing.id);
    ids.insert(120, twice);
    let submissions = ids.iter().enumerate().map(|(i, id)| {
        let store = store.clone();
        let id = *id;
        async move {
            let pipeline = format!("p{}", i % 7);
            let pool = if i % 2 == 0 { "default" } else { "gpu" };
            let result = store
                .insert_run(NewRun {
                    id,
                    pipeline_name: &pipeline,
                    pool,
                    params: json!({ "i": i }),
                    spec: spec(),
                    timeout_seconds: Some(3600),
                    triggered_by: None,
                })
                .await;
            (i, id, pipeline, pool, result)
        }
    });
    let results = futures::future::join_all(submissions).await;

    let is_duplicate = |e: &Error| matches!(e, Error::Database(sqlx::Error::Database(db)) if db.is_unique_violation());
    let mut stored = std::collections::HashMap::new();
    let mut twice_ok = 0;
    for (i, id, pipeline, pool, result) in results {
        match result {
            Ok(run) => {
                assert_eq!(run.id, id, "submission {i} gets its own run back");
                assert_eq!(run.pipeline_name, pipeline);
                assert_eq!(run.pool, pool);
                assert_eq!(run.params, json!({ "i": i }));
                assert_eq!(run.spec, spec());
                assert_eq!(run.status, RunStatus::Queued);
                assert_eq!(run.attempt, 1);
                assert_eq!(run.fencing_token, 0);
                if id == twice {
                    twice_ok += 1;
                }
                assert!(stored.insert(id, run).is_none(), "{id} answered twice");
            }
            Err(e) if id == existing.id => assert!(is_duplicate(&e), "the stored id fails as a duplicate: {e}"),
            Err(e) if id == twice => assert!(is_duplicate(&e), "the second of one id fails as a duplicate: {e}"),
            Err(e) => panic!("submission {i} ({id}) failed: {e}"),
        }
    }
    assert_eq!(twice_ok, 1, "an id submitted twice is stored once");
    assert_eq!(stored.len(), 200, "every fresh id stored, each once");

    let mut in_store = store.get_runs(&fresh).await.expect("get_runs");
    assert_eq!(in_store.len(), 200);
    in_store.sort_by_key(|r| r.id);
    for run in &in_store {
        assert_eq!(Some(run), stored.get(&run.id), "the stored row is the one answered");
    }
    assert_eq!(get(&store, existing.id).await, existing, "the duplicate left the stored run alone");
    assert_eq!(store.count_runs().await.expect("count_runs"), 201);
}

both!(claim_exactly_once);
async fn claim_exactly_once(store: Store) {
    let run = submit(&store, "p", "default", spec()).await;
    let (claim_a, claim_b) = (claim_of(&run, "runner-a", LEASE), claim_of(&run, "runner-b", LEASE));
    let (a, b) = tokio::join!(claim_one(&store, &claim_a), claim_one(&store, &claim_b));
    let results = [a.expect("claim a"), b.expect("claim b")];
    let granted: Vec<&Run> = results
        .iter()
        .filter_map(|r| match r {
            ClaimResult::Granted(run) => Some(&**run),
            _ => None,
        })
        .collect();
    assert_eq!(granted.len(), 1, "exactly one claim is granted");
    assert_eq!(results.iter().filter(|r| matches!(r, ClaimResult::Gone)).count(), 1);
    let holder = granted[0];
    assert_eq!(holder.status, RunStatus::Running);
    assert_ne!(holder.fencing_token, 0, "a drawn token");
    assert!(holder.started_at.is_some());
    assert!(matches!(holder.runner_id.as_deref(), Some("runner-a" | "runner-b")));
    assert_eq!(&get(&store, run.id).await, holder);
    // A later claim, and a claim of another attempt number, find nothing queued.
    assert!(matches!(claim_one(&store, &claim_of(&run, "runner-c", LEASE)).await.expect("claim"), ClaimResult::Gone));
    let other = submit(&store, "p", "default", spec()).await;
    let mut wrong_attempt = claim_of(&other, "runner-c", LEASE);
    wrong_attempt.attempt = 2;
    assert!(matches!(claim_one(&store, &wrong_attempt).await.expect("claim"), ClaimResult::Gone));
}

both!(claim_batch_in_one_transaction);
async fn claim_batch_in_one_transaction(store: Store) {
    let runs = [
        submit(&store, "p", "default", spec()).await,
        submit(&store, "p", "default", spec()).await,
        submit(&store, "p", "default", spec()).await,
        submit(&store, "p", "default", spec()).await,
    ];
    let fetched = store.get_runs(&[runs[2].id, runs[0].id, Uuid::new_v4()]).await.expect("get_runs");
    let mut fetched_ids: Vec<Uuid> = fetched.iter().map(|r| r.id).collect();
    fetched_ids.sort();
    let mut expected = vec![runs[0].id, runs[2].id];
    expected.sort();
    assert_eq!(fetched_ids, expected, "the known runs, the unknown id left out");
    assert!(store.get_runs(&[]).await.expect("get_runs of none").is_empty());

    claimed(&store, &runs[1], "runner-x", LEASE).await;
    let mut wrong_attempt = claim_of(&runs[3], "runner-a", LEASE);
    wrong_attempt.attempt = 2;
    let batch = [claim_of(&runs[0], "runner-a", LEASE), claim_of(&runs[1], "runner-a", LEASE), wrong_attempt];
    let results = store.claim_batch(&batch).await.expect("claim_batch");
    assert_eq!(results.len(), 3, "one result per claim, in order");
    match &results[0] {
        ClaimResult::Granted(run) => {
            assert_eq!(run.id, runs[0].id);
            assert_eq!(run.runner_id.as_deref(), Some("runner-a"));
            assert!(run.fencing_token > 0, "a drawn token: {}", run.fencing_token);
        }
        _ => panic!("the queued run is granted"),
    }
    assert!(matches!(results[1], ClaimResult::Gone), "claimed by runner-x before");
    assert!(matches!(results[2], ClaimResult::Gone), "another attempt number");
    assert_eq!(get(&store, runs[1].id).await.runner_id.as_deref(), Some("runner-x"));
    assert_eq!(get(&store, runs[3].id).await.status, RunStatus::Queued);

    // A run named twice in one batch is granted once.
    let twice = submit(&store, "q", "default", spec()).await;
    let results = store
        .claim_batch(&[claim_of(&twice, "runner-a", LEASE), claim_of(&twice, "runner-a", LEASE)])
        .await
        .expect("claim_batch twice");
    assert!(matches!(results[0], ClaimResult::Granted(_)));
    assert!(matches!(results[1], ClaimResult::Gone));

    // Under a limit the claims of one batch count each other: 3 running + 1 granted = 4.
    let more = [submit(&store, "p", "default", spec()).await, submit(&store, "p", "default", spec()).await];
    let limited: Vec<Claim> = [&runs[3], &more[0], &more[1]]
        .into_iter()
        .map(|run| Claim { max_running: Some(4), ..claim_of(run, "runner-b", LEASE) })
        .collect();
    let results = store.claim_batch(&limited).await.expect("limited claim_batch");
    assert!(matches!(results[0], ClaimResult::Granted(_)));
    assert!(matches!(results[1], ClaimResult::Waiting(WaitingReason::MaxConcurrentRuns)));
    assert!(matches!(results[2], ClaimResult::Waiting(WaitingReason::MaxConcurrentRuns)));
    assert_eq!(get(&store, more[1].id).await.waiting_reason, Some(WaitingReason::MaxConcurrentRuns));
    assert_eq!(store.count_active("p").await.expect("count"), (7, 6));
}

both!(concurrency_limits);
async fn concurrency_limits(store: Store) {
    let a = submit(&store, "p", "default", spec()).await;
    let b = submit(&store, "q", "default", spec()).await;
    let c = submit(&store, "p", "default", spec()).await;
    assert_eq!(store.count_active("p").await.expect("count"), (3, 2));
    claimed(&store, &a, "r1", LEASE).await;

    let mut overall = claim_of(&b, "r1", LEASE);
    overall.max_running = Some(1);
    assert!(matches!(
        claim_one(&store, &overall).await.expect("claim"),
        ClaimResult::Waiting(WaitingReason::MaxConcurrentRuns)
    ));
    assert_eq!(get(&store, b.id).await.waiting_reason, Some(WaitingReason::MaxConcurrentRuns));
    assert_eq!(get(&store, b.id).await.status, RunStatus::Queued);

    let mut of_pipeline = claim_of(&c, "r1", LEASE);
    of_pipeline.max_running = Some(5);
    of_pipeline.max_running_of_pipeline = Some(1);
    assert!(matches!(
        claim_one(&store, &of_pipeline).await.expect("claim"),
        ClaimResult::Waiting(WaitingReason::PipelineMaxConcurrent)
    ));
    // `b` is of another pipeline: the limit of `p` does not hold it back.
    let mut other_pipeline = claim_of(&b, "r1", LEASE);
    other_pipeline.max_running_of_pipeline = Some(1);

    let waiting: Vec<Uuid> = store.waiting_runs(10).await.expect("waiting").into_iter().map(|w| w.0).collect();
    assert_eq!(waiting, vec![b.id, c.id]);

    let granted = match claim_one(&store, &other_pipeline).await.expect("claim") {
        ClaimResult::Granted(run) => run,
        _ => panic!("b should be granted"),
    };
    assert_eq!(granted.waiting_reason, None, "a granted claim clears the waiting reason");
    assert_eq!(store.count_active("p").await.expect("count"), (3, 2));
    assert_eq!(store.count_active("q").await.expect("count"), (3, 1));
}

both!(renew_leases_only_for_held_tokens);
async fn renew_leases_only_for_held_tokens(store: Store) {
    let run = submit(&store, "p", "default", spec()).await;
    let held = claimed(&store, &run, "r1", Duration::ZERO).await;
    let at = held.attempt_ref();
    assert!(store.renew_leases("r1", &[], LEASE).await.expect("renew nothing").is_empty());

    let stale = AttemptRef { fencing_token: at.fencing_token ^ 1, ..at.clone() };
    let wrong_attempt = AttemptRef { attempt: at.attempt + 1, ..at.clone() };
    assert!(store.renew_leases("r1", &[stale.clone(), wrong_attempt], LEASE).await.expect("renew").is_empty());
    assert!(store.renew_leases("r2", std::slice::from_ref(&at), LEASE).await.expect("renew").is_empty());
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(store.expired_leases(10).await.expect("expired").len(), 1, "nothing renewed the zero lease");

    let renewed = store.renew_leases("r1", &[stale, at.clone()], LEASE).await.expect("renew");
    assert_eq!(renewed.len(), 1);
    assert_eq!(renewed[0].attempt, at);
    assert!(!renewed[0].cancel_requested && !renewed[0].cancel_force);
    assert!(store.expired_leases(10).await.expect("expired").is_empty(), "the lease was extended");

    store.request_cancel(run.id, true).await.expect("cancel").expect("running");
    let renewed = store.renew_leases("r1", std::slice::from_ref(&at), LEASE).await.expect("renew");
    assert!(renewed[0].cancel_requested && renewed[0].cancel_force);

    store.end_attempt(&at, &failed(), None, None).await.expect("end").expect("held");
    assert!(store.renew_leases("r1", &[at], LEASE).await.expect("renew").is_empty(), "a final run is not renewed");
}

both!(ended_attempts_are_listed_by_their_end_and_continue_after_the_last);
async fn ended_attempts_are_listed_by_their_end_and_continue_after_the_last(store: Store) {
    let mut ended = Vec::new();
    for _ in 0..3 {
        let run = submit(&store, "p", "default", spec()).await;
        let held = claimed(&store, &run, "r1", LEASE).await;
        store.end_attempt(&held.attempt_ref(), &success(), None, None).await.expect("end").expect("held");
        ended.push(run.id);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let running = submit(&store, "p", "default", spec()).await;
    claimed(&store, &running, "r1", LEASE).await;
    let hour = Duration::from_secs(3600);
    let ids = |listed: &[control_plane::store::runs::EndedAttempt]| listed.iter().map(|a| a.run_id).collect::<Vec<_>>();

    let all = store.ended_attempts(None, Duration::ZERO, hour, 10).await.expect("list");
    assert_eq!(ids(&all), ended, "oldest end first; the running attempt is not listed");
    assert!(all.iter().all(|a| a.attempt == 1));
    assert!(store.ended_attempts(None, hour, 2 * hour, 10).await.expect("list").is_empty(), "none ended an hour ago");
    let after_first = store.ended_attempts(Some(&all[0]), Duration::ZERO, hour, 10).await.expect("list");
    assert_eq!(ids(&after_first), ended[1..]);
    let one = store.ended_attempts(Some(&all[0]), Duration::ZERO, hour, 1).await.expect("list");
    assert_eq!(ids(&one), ended[1..2], "bounded by the limit");
    assert!(store.ended_attempts(Some(&all[2]), Duration::ZERO, hour, 10).await.expect("list").is_empty());
}

both!(end_attempt_final_retry_and_stale);
async fn end_attempt_final_retry_and_stale(store: Store) {
    let run = submit(&store, "p", "default", spec()).await;
    let first = claimed(&store, &run, "r1", LEASE).await;
    let at1 = first.attempt_ref();

    // A stale token changes nothing.
    let stale = AttemptRef { fencing_token: at1.fencing_token ^ 7, ..at1.clone() };
    assert!(store.end_attempt(&stale, &success(), None, None).await.expect("end").is_none());
    assert_eq!(get(&store, run.id).await, first);
    assert!(store.attempts(run.id).await.expect("attempts").is_empty());

    // Retry with a short back-off.
    let log1 = ArchivedLog { key: "runs/x/1.log".into(), size: 42 };
    let retried = store
        .end_attempt(&at1, &failed(), Some(&log1), Some(Duration::from_millis(1)))
        .await
        .expect("end")
        .expect("held");
    assert_eq!(retried.status, RunStatus::Queued);
    assert_eq!(retried.attempt, 2);
    assert_eq!(retried.runner_id, None);
    assert_eq!(retried.exit_code, None);
    assert_eq!(retried.log_key, None);
    assert_eq!(retried.started_at, None);
    assert_eq!(retried.waiting_reason, Some(WaitingReason::RetryBackoff));
    assert_eq!(retried.fencing_token, at1.fencing_token, "the token moves on at the next claim");
    let attempts = store.attempts(run.id).await.expect("attempts");
    assert_eq!(attempts.len(), 1);
    let a1 = &attempts[0];
    assert_eq!((a1.attempt, a1.status.as_str()), (1, "failed"));
    assert_eq!(a1.failure_reason, Some(FailureReason::ExitCode));
    assert_eq!(a1.exit_code, Some(3));
    assert_eq!(a1.error_message.as_deref(), Some("exit 3"));
    assert_eq!(a1.runner_id.as_deref(), Some("r1"));
    assert_eq!(a1.started_at, first.started_at);
    assert!(a1.finished_at.is_some());
    assert_eq!((a1.log_key.as_deref(), a1.log_size_bytes), (Some("runs/x/1.log"), 42));
    // The old token can end nothing any more.
    assert!(store.end_attempt(&at1, &success(), None, None).await.expect("end").is_none());
    assert_eq!(store.attempts(run.id).await.expect("attempts").len(), 1);

    tokio::time::sleep(Duration::from_millis(5)).await;
    let second = claimed(&store, &retried, "r2", LEASE).await;
    assert_eq!(second.attempt, 2);
    assert_ne!(second.fencing_token, at1.fencing_token, "each claim draws a fresh token");
    let log2 = ArchivedLog { key: "runs/x/2.log".into(), size: 7 };
    let done =
        store.end_attempt(&second.attempt_ref(), &success(), Some(&log2), None).await.expect("end").expect("held");
    assert_eq!(done.status, RunStatus::Success);
    assert_eq!(done.exit_code, Some(0));
    assert_eq!((done.log_key.as_deref(), done.log_size_bytes), (Some("runs/x/2.log"), 7));
    assert!(done.finished_at.is_some());
    let attempts = store.attempts(run.id).await.expect("attempts");
    assert_eq!(
        attempts.iter().map(|a| (a.attempt, a.status.as_str())).collect::<Vec<_>>(),
        [(1, "failed"), (2, "success")]
    );
    assert_eq!(attempts[1].finished_at, done.finished_at);
    // A final run cannot be ended again.
    assert!(store.end_attempt(&second.attempt_ref(), &failed(), None, None).await.expect("end").is_none());

    // A long back-off: the claim waits, and the run is no re-offer candidate yet.
    let other = submit(&store, "p", "default", spec()).await;
    let held = claimed(&store, &other, "r1", LEASE).await;
    let backing_off =
        store.end_attempt(&held.attempt_ref(), &failed(), None, Some(Duration::from_secs(3600))).await.expect("end");
    let backing_off = backing_off.expect("held");
    assert!(matches!(
        claim_one(&store, &claim_of(&backing_off, "r1", LEASE)).await.expect("claim"),
        ClaimResult::Waiting(WaitingReason::RetryBackoff)
    ));
    assert!(store.waiting_runs(10).await.expect("waiting").is_empty());
    assert!(store.stale_queued(Duration::ZERO, 10).await.expect("stale").is_empty());
}

both!(cancel_guards);
async fn cancel_guards(store: Store) {
    let queued = submit(&store, "p", "default", spec()).await;
    assert!(store.request_cancel(queued.id, false).await.expect("request").is_none(), "not running");
    let cancelled = store.cancel_queued(queued.id).await.expect("cancel").expect("queued");
    assert_eq!(cancelled.status, RunStatus::Cancelled);
    assert_eq!(cancelled.failure_reason, Some(FailureReason::Cancelled));
    assert!(cancelled.cancel_requested_at.is_some() && cancelled.finished_at.is_some());
    assert!(store.cancel_queued(queued.id).await.expect("cancel").is_none(), "already final");
    assert!(matches!(claim_one(&store, &claim_of(&queued, "r1", LEASE)).await.expect("claim"), ClaimResult::Gone));

    let run = submit(&store, "p", "default", spec()).await;
    claimed(&store, &run, "r1", LEASE).await;
    assert!(store.cancel_queued(run.id).await.expect("cancel").is_none(), "running, not queued");
    let asked = store.request_cancel(run.id, false).await.expect("request").expect("running");
    assert_eq!(asked.status, RunStatus::Running);
    assert!(!asked.cancel_force);
    let first_request = asked.cancel_requested_at.expect("requested");
    tokio::time::sleep(Duration::from_millis(2)).await;
    let forced = store.request_cancel(run.id, true).await.expect("request").expect("running");
    assert!(forced.cancel_force);
    assert_eq!(forced.cancel_requested_at, Some(first_request), "the first request time stays");
    let again = store.request_cancel(run.id, false).await.expect("request").expect("running");
    assert!(again.cancel_force, "force is never withdrawn");
    assert!(store.request_cancel(Uuid::new_v4(), false).await.expect("request").is_none());
}

both!(lease_and_timeout_sweeps);
async fn lease_and_timeout_sweeps(store: Store) {
    let lost = submit(&store, "p", "default", spec()).await;
    let alive = submit(&store, "p", "default", spec()).await;
    let lost = claimed(&store, &lost, "r1", Duration::ZERO).await;
    claimed(&store, &alive, "r1", LEASE).await;

    let instant = submit(&store, "p", "default", json!({"image": "x", "timeout_seconds": 0})).await;
    let slow = submit(&store, "p", "default", json!({"image": "x", "timeout_seconds": 3600})).await;
    let unlimited = submit(&store, "p", "default", json!({"image": "x"})).await;
    let null_timeout = submit(&store, "p", "default", json!({"image": "x", "timeout_seconds": null})).await;
    let not_started = submit(&store, "p", "default", json!({"image": "x", "timeout_seconds": 0})).await;
    for run in [&instant, &slow, &unlimited, &null_timeout] {
        claimed(&store, run, "r1", LEASE).await;
    }
    tokio::time::sleep(Duration::from_millis(5)).await;

    let expired: Vec<Uuid> = store.expired_leases(10).await.expect("expired").into_iter().map(|r| r.id).collect();
    assert_eq!(expired, vec![lost.id]);
    let overdue: Vec<Uuid> =
        store.overdue_runs(Duration::ZERO, 10).await.expect("overdue").into_iter().map(|r| r.id).collect();
    assert_eq!(overdue, vec![instant.id]);
    assert!(store.overdue_runs(Duration::from_secs(60), 10).await.expect("overdue").is_empty(), "within slack");

    let stale: Vec<Uuid> =
        store.stale_queued(Duration::ZERO, 10).await.expect("stale").into_iter().map(|r| r.0).collect();
    assert_eq!(stale, vec![not_started.id]);
    assert!(store.stale_queued(Duration::from_secs(3600), 10).await.expect("stale").is_empty());
}

both!(overdue_reads_the_timeout_column);
/// The timeout is the run's own column: a run whose template lacks the field is overdue
/// by its column, and one whose template has it but whose column is empty is not.
async fn overdue_reads_the_timeout_column(store: Store) {
    let new_run = |timeout_seconds, spec| NewRun {
        id: Uuid::now_v7(),
        pipeline_name: "p",
        pool: "default",
        params: json!({}),
        spec,
        timeout_seconds,
        triggered_by: None,
    };
    let by_column = store.insert_run(new_run(Some(0), json!({"image": "x"}))).await.expect("insert");
    let by_json_only =
        store.insert_run(new_run(None, json!({"image": "x", "timeout_seconds": 0}))).await.expect("insert");
    claimed(&store, &by_column, "r1", LEASE).await;
    claimed(&store, &by_json_only, "r1", LEASE).await;
    tokio::time::sleep(Duration::from_millis(5)).await;

    let overdue: Vec<Uuid> =
        store.overdue_runs(Duration::ZERO, 10).await.expect("overdue").into_iter().map(|r| r.id).collect();
    assert_eq!(overdue, vec![by_column.id]);
    let exported = store.export_runs(None, 10).await.expect("export");
    let timeouts: Vec<(Uuid, Option<i64>)> = exported.iter().map(|r| (r.run.id, r.timeout_seconds)).collect();
    assert_eq!(timeouts, [(by_column.id, Some(0)), (by_json_only.id, None)], "export carries the column");
}

both!(running_on_runner_lists_only_that_runners_running_attempts);
async fn running_on_runner_lists_only_that_runners_running_attempts(store: Store) {
    let mine = submit(&store, "p", "default", spec()).await;
    let other = submit(&store, "p", "default", spec()).await;
    let queued = submit(&store, "p", "default", spec()).await;
    let mine = claimed(&store, &mine, "r1", LEASE).await;
    claimed(&store, &other, "r2", LEASE).await;
    let held: Vec<Uuid> = store.running_on_runner("r1").await.expect("list").into_iter().map(|r| r.id).collect();
    assert_eq!(held, vec![mine.id]);
    assert!(store.running_on_runner("r3").await.expect("list").is_empty());
    assert!(!held.contains(&queued.id));
}

both!(fail_unrunnable_without_runners);
async fn fail_unrunnable_without_runners(store: Store) {
    store.record_heartbeat(&heartbeat("r1", "gpu", Vec::new())).await.expect("heartbeat");
    let orphan = submit(&store, "p", "nobody", spec()).await;
    let served = submit(&store, "p", "gpu", spec()).await;
    let running = submit(&store, "p", "nobody", spec()).await;
    claimed(&store, &running, "r9", LEASE).await;
    tokio::time::sleep(Duration::from_millis(5)).await;

    assert!(store.fail_unrunnable(Duration::from_secs(3600), LEASE, 10).await.expect("sweep").is_empty(), "too new");
    let failed = store.fail_unrunnable(Duration::ZERO, LEASE, 10).await.expect("sweep");
    assert_eq!(failed.iter().map(|r| r.id).collect::<Vec<_>>(), vec![orphan.id]);
    let failed = &failed[0];
    assert_eq!(failed.status, RunStatus::Failed);
    assert_eq!(failed.failure_reason, Some(FailureReason::NoRunner));
    assert_eq!(failed.error_message.as_deref(), Some("no runner of pool `nobody` was available"));
    assert!(failed.finished_at.is_some() && failed.waiting_reason.is_none());
    assert_eq!(get(&store, served.id).await.status, RunStatus::Queued);
    assert_eq!(get(&store, running.id).await.status, RunStatus::Running);
    assert!(store.fail_unrunnable(Duration::ZERO, LEASE, 10).await.expect("sweep").is_empty(), "once");
    // A silent runner does not count.
    let failed = store.fail_unrunnable(Duration::ZERO, Duration::ZERO, 10).await.expect("sweep");
    assert_eq!(failed.iter().map(|r| r.id).collect::<Vec<_>>(), vec![served.id]);
}

both!(expire_logs_by_count_and_age);
async fn expire_logs_by_count_and_age(store: Store) {
    assert!(store.expire_logs(None, None, 10).await.expect("expire").is_empty());
    let mut finished = Vec::new();
    for i in 0..3 {
        let run = submit(&store, "logs", "default", spec()).await;
        let held = claimed(&store, &run, "r1", LEASE).await;
        let log = ArchivedLog { key: format!("runs/{i}.log"), size: 10 };
        store.end_attempt(&held.attempt_ref(), &success(), Some(&log), None).await.expect("end").expect("held");
        finished.push(run.id);
    }
    let other = submit(&store, "other", "default", spec()).await;
    let held = claimed(&store, &other, "r1", LEASE).await;
    let log = ArchivedLog { key: "runs/other.log".into(), size: 10 };
    store.end_attempt(&held.attempt_ref(), &success(), Some(&log), None).await.expect("end").expect("held");
    let still_running = submit(&store, "logs", "default", spec()).await;
    claimed(&store, &still_running, "r1", LEASE).await;

    // Keep the newest run of each pipeline.
    let mut expired = store.expire_logs(Some(1), None, 10).await.expect("expire");
    expired.sort_by_key(|e| e.2.clone());
    assert_eq!(expired, vec![(finished[0], 1, "runs/0.log".to_string()), (finished[1], 1, "runs/1.log".to_string())]);
    assert!(get(&store, finished[0]).await.log_expired_at.is_some());
    assert!(get(&store, finished[2]).await.log_expired_at.is_none());
    assert!(store.expire_logs(Some(1), None, 10).await.expect("expire").is_empty(), "each log once");

    assert!(store.expire_logs(None, Some(Duration::from_secs(3600)), 10).await.expect("expire").is_empty());
    tokio::time::sleep(Duration::from_millis(5)).await;
    let by_age = store.expire_logs(None, Some(Duration::ZERO), 1).await.expect("expire");
    assert_eq!(by_age.len(), 1, "the limit holds");
    let rest = store.expire_logs(None, Some(Duration::ZERO), 10).await.expect("expire");
    let mut keys: Vec<String> = by_age.into_iter().chain(rest).map(|e| e.2).collect();
    keys.sort();
    assert_eq!(keys, ["runs/2.log", "runs/other.log"]);
}

both!(heartbeats_and_runners);
async fn heartbeats_and_runners(store: Store) {
    store.record_heartbeat(&heartbeat("r2", "default", Vec::new())).await.expect("heartbeat");
    store.record_heartbeat(&heartbeat("r1", "default", Vec::new())).await.expect("heartbeat");
    let first = store.list_runners(60).await.expect("list");
    assert_eq!(first.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["r1", "r2"]);
    tokio::time::sleep(Duration::from_millis(5)).await;
    let at = AttemptRef { run_id: Uuid::new_v4(), attempt: 1, fencing_token: 1 };
    store.record_heartbeat(&heartbeat("r1", "gpu", vec![at])).await.expect("heartbeat");
    let runners = store.list_runners(60).await.expect("list");
    let r1 = &runners[0];
    assert_eq!((r1.pool.as_str(), r1.version.as_str(), r1.slots, r1.running), ("gpu", "1.2.3", 4, 1));
    assert_eq!(r1.started_at, first[0].started_at, "the first registration time stays");
    assert!(r1.last_heartbeat_at > first[0].last_heartbeat_at);
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(store.list_runners(0).await.expect("list").is_empty(), "nobody was heard within 0 s");
}

both!(bundles);
async fn bundles(store: Store) {
    assert_eq!(store.load_bundle("nope").await.expect("load"), None);
    let data: Vec<u8> = (0..=255).collect();
    store.save_bundle("b", &data).await.expect("save");
    store.save_bundle("b", b"other").await.expect("save twice");
    assert_eq!(store.load_bundle("b").await.expect("load"), Some(data.clone()));
    store.save_bundle("a", b"").await.expect("save");
    store.save_bundle("c", b"c").await.expect("save");
    let page = store.export_bundles(None, 2).await.expect("export");
    assert_eq!(page.iter().map(|b| b.digest.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(page[1].data, data);
    let rest = store.export_bundles(Some("b"), 2).await.expect("export");
    assert_eq!(rest.iter().map(|b| b.digest.as_str()).collect::<Vec<_>>(), ["c"]);
}

// ---- export / import across backends ----

/// Runs in every state an export must carry: queued, waiting, running with a
/// lease and a cancel request, retried (not_before, an attempt row), finished
/// with an archived log that expired, cancelled, failed for want of runners.
async fn populate(store: &Store) {
    submit(store, "p", "default", spec()).await;
    let waiting = submit(store, "q", "gpu", spec()).await;
    let running = submit(store, "p", "default", spec()).await;
    let retried = submit(store, "p", "default", spec()).await;
    let finished = submit(store, "logs", "default", spec()).await;
    let cancelled = submit(store, "p", "default", spec()).await;
    let orphan = submit(store, "p", "nowhere", spec()).await;

    let mut limited = claim_of(&waiting, "r1", LEASE);
    limited.max_running = Some(0);
    assert!(matches!(claim_one(store, &limited).await.expect("claim"), ClaimResult::Waiting(_)));
    claimed(store, &running, "r1", LEASE).await;
    store.request_cancel(running.id, true).await.expect("cancel").expect("running");
    let held = claimed(store, &retried, "r1", LEASE).await;
    let log = ArchivedLog { key: "runs/retried/1.log".into(), size: 5 };
    store.end_attempt(&held.attempt_ref(), &failed(), Some(&log), Some(Duration::from_secs(3600))).await.expect("end");
    let held = claimed(store, &finished, "r2", LEASE).await;
    let log = ArchivedLog { key: "runs/finished/1.log".into(), size: 9 };
    store.end_attempt(&held.attempt_ref(), &success(), Some(&log), None).await.expect("end");
    assert_eq!(store.expire_logs(Some(0), None, 10).await.expect("expire").len(), 1);
    store.cancel_queued(cancelled.id).await.expect("cancel").expect("queued");
    // Only the pool nobody serves fails for want of runners.
    store.record_heartbeat(&heartbeat("r1", "default", Vec::new())).await.expect("heartbeat");
    store.record_heartbeat(&heartbeat("r2", "gpu", Vec::new())).await.expect("heartbeat");
    tokio::time::sleep(Duration::from_millis(2)).await;
    let failed = store.fail_unrunnable(Duration::ZERO, LEASE, 10).await.expect("sweep");
    assert_eq!(failed.iter().map(|r| r.id).collect::<Vec<_>>(), [orphan.id]);
    store.save_bundle("sha256:aa", b"tar one").await.expect("bundle");
    store.save_bundle("sha256:bb", &[0, 1, 2, 255]).await.expect("bundle");
    store.save_bundle("sha256:cc", b"").await.expect("bundle");
}

struct Snapshot {
    runs: Vec<RunRecord>,
    attempts: Vec<(Uuid, control_plane::store::runs::AttemptRecord)>,
    bundles: Vec<BundleRecord>,
}

/// Everything in the store, read in small pages (so the keyset paging is used).
async fn snapshot(store: &Store) -> Snapshot {
    let mut runs = Vec::new();
    loop {
        let page = store.export_runs(runs.last().map(|r: &RunRecord| r.run.id), 2).await.expect("export runs");
        if page.is_empty() {
            break;
        }
        runs.extend(page);
    }
    let mut attempts = Vec::new();
    for r in &runs {
        for a in store.export_attempts(r.run.id).await.expect("export attempts") {
            attempts.push((r.run.id, a));
        }
    }
    let mut bundles: Vec<BundleRecord> = Vec::new();
    loop {
        let after = bundles.last().map(|b| b.digest.clone());
        let page = store.export_bundles(after.as_deref(), 2).await.expect("export bundles");
        if page.is_empty() {
            break;
        }
        bundles.extend(page);
    }
    Snapshot { runs, attempts, bundles }
}

/// Imports a snapshot; returns how many rows were inserted.
async fn import(store: &Store, s: &Snapshot) -> usize {
    let mut inserted = 0;
    for r in &s.runs {
        inserted += usize::from(store.import_run(r).await.expect("import run"));
    }
    for (run_id, a) in &s.attempts {
        inserted += usize::from(store.import_attempt(*run_id, a).await.expect("import attempt"));
    }
    for b in &s.bundles {
        inserted += usize::from(store.import_bundle(b).await.expect("import bundle"));
    }
    inserted
}

fn assert_same(a: &Snapshot, b: &Snapshot) {
    assert_eq!(a.runs, b.runs);
    assert_eq!(a.attempts, b.attempts);
    assert_eq!(a.bundles, b.bundles);
}

/// SQLite → Postgres → a second SQLite file: every column survives both ways,
/// and importing again inserts nothing.
#[tokio::test]
async fn export_import_round_trip_sqlite_postgres() {
    let (target_db, target) = TestDb::postgres().await;
    let (source_db, source) = TestDb::sqlite().await;
    let (back_db, back) = TestDb::sqlite().await;
    let outcome = tokio::spawn(async move {
        populate(&source).await;
        let original = snapshot(&source).await;
        assert_eq!(original.runs.len(), 7);
        assert_eq!(original.attempts.len(), 2);
        assert_eq!(original.bundles.len(), 3);
        assert!(original.runs.iter().any(|r| r.not_before.is_some()));
        assert!(original.runs.iter().any(|r| r.lease_expires_at.is_some()));
        assert!(original.runs.iter().any(|r| r.run.log_expired_at.is_some()));
        assert!(original.runs.iter().any(|r| r.run.cancel_force));

        let rows = original.runs.len() + original.attempts.len() + original.bundles.len();
        assert_eq!(import(&target, &original).await, rows);
        assert_eq!(import(&target, &original).await, 0, "a second import inserts nothing");
        assert_eq!(target.count_runs().await.expect("count"), 7);
        let copied = snapshot(&target).await;
        assert_same(&original, &copied);

        assert_eq!(import(&back, &copied).await, rows);
        assert_same(&original, &snapshot(&back).await);
        // The copy behaves like the original: the running attempt can still end.
        let running = copied.runs.iter().find(|r| r.run.status == RunStatus::Running).expect("a running run");
        let ended = target.end_attempt(&running.run.attempt_ref(), &success(), None, None).await.expect("end");
        assert_eq!(ended.map(|r| r.status), Some(RunStatus::Success));
    })
    .await;
    source_db.remove().await;
    target_db.remove().await;
    back_db.remove().await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// Old runs, as stored before the `timeout_seconds` column: (id, spec JSON, expected column).
fn old_runs() -> [(Uuid, &'static str, Option<i64>); 3] {
    [
        (Uuid::now_v7(), r#"{"image": "x", "timeout_seconds": 30}"#, Some(30)),
        (Uuid::now_v7(), r#"{"image": "x"}"#, None),
        (Uuid::now_v7(), r#"{"image": "x", "timeout_seconds": null}"#, None),
    ]
}

/// The migrations before the one that adds `timeout_seconds` (named `*_timeout_seconds`).
fn before_timeout_column(mut all: sqlx::migrate::Migrator) -> sqlx::migrate::Migrator {
    let kept: Vec<_> =
        all.migrations.iter().take_while(|m| !m.description.contains("timeout seconds")).cloned().collect();
    assert!(kept.len() < all.migrations.len(), "the timeout_seconds migration exists");
    all.migrations = kept.into();
    all
}

/// Connecting the store migrates the old runs: each has its template's timeout in the column.
async fn assert_backfilled(url: &str, old: &[(Uuid, &str, Option<i64>)]) {
    let store = Store::connect(url).await.expect("connect and migrate");
    let exported = store.export_runs(None, 10).await.expect("export");
    let timeouts: Vec<(Uuid, Option<i64>)> = exported.iter().map(|r| (r.run.id, r.timeout_seconds)).collect();
    let expected: Vec<(Uuid, Option<i64>)> = old.iter().map(|(id, _, timeout)| (*id, *timeout)).collect();
    assert_eq!(timeouts, expected);
}

/// Runs `body`, removes the database, re-raises the body's panic.
async fn then_remove(db: TestDb, body: impl Future<Output = ()> + Send + 'static) {
    let outcome = tokio::spawn(body).await;
    db.remove().await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

#[tokio::test]
async fn timeout_column_is_backfilled_on_sqlite() {
    let (db, url) = TestDb::sqlite_url();
    let path = url.trim_start_matches("sqlite://").to_string();
    then_remove(db, async move {
        let old = old_runs();
        if let Some(dir) = std::path::Path::new(&path).parent() {
            std::fs::create_dir_all(dir).expect("create the directory");
        }
        let options = sqlx::sqlite::SqliteConnectOptions::new().filename(&path).create_if_missing(true);
        let pool = sqlx::SqlitePool::connect_with(options).await.expect("open the file");
        before_timeout_column(sqlx::migrate!("./migrations/sqlite")).run(&pool).await.expect("earlier migrations");
        for (id, spec, _) in &old {
            sqlx::query(
                "insert into runs (id, pipeline_name, status, spec, created_at) values ($1, 'p', 'queued', $2, 0)",
            )
            .bind(id.hyphenated().to_string())
            .bind(*spec)
            .execute(&pool)
            .await
            .expect("insert an old run");
        }
        pool.close().await;
        assert_backfilled(&url, &old).await;
    })
    .await;
}

#[tokio::test]
async fn timeout_column_is_backfilled_on_postgres() {
    let (db, url) = TestDb::postgres_url().await;
    then_remove(db, async move {
        let old = old_runs();
        let pool = sqlx::PgPool::connect(&url).await.expect("connect");
        before_timeout_column(sqlx::migrate!("./migrations/postgres")).run(&pool).await.expect("earlier migrations");
        for (id, spec, _) in &old {
            sqlx::query("insert into runs (id, pipeline_name, status, spec) values ($1, 'p', 'queued', $2::jsonb)")
                .bind(id)
                .bind(*spec)
                .execute(&pool)
                .await
                .expect("insert an old run");
        }
        pool.close().await;
        assert_backfilled(&url, &old).await;
    })
    .await;
}

/// The file keeps committed state across a reopen (and a second connect does
/// not re-run the schema).
#[tokio::test]
async fn sqlite_file_survives_reopen() {
    let dir = std::env::temp_dir().join(format!("fastflow-store-{}", Uuid::new_v4().simple()));
    let url = format!("sqlite://{}/a/b/fastflow.db", dir.display());
    let id = {
        let store = Store::connect(&url).await.expect("first open");
        assert_eq!(store.kind(), "sqlite");
        submit(&store, "p", "default", spec()).await.id
    };
    let store = Store::connect(&url).await.expect("second open");
    let run = store.get_run(id).await.expect("get");
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(run.map(|r| r.id), Some(id));
}
