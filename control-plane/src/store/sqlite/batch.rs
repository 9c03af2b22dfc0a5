//! Group commit of run submissions on the SQLite backend.
//!
//! With `synchronous = FULL` every commit costs one fsync of the WAL, and every write goes
//! through the one writer connection, so one transaction per submission bounded submissions
//! by the disk's fsync rate. Instead, one task owns a queue of pending inserts: it takes the
//! first one and whatever else is already queued (at most [`MAX_GROUP`]), writes them in ONE
//! `begin immediate … commit` on the writer, and only after the commit answers each caller.
//! One fsync per group, and an answer still means the run is on disk. There is no waiting
//! window: a lone submission is written at once, as before; groups form only while the
//! writer is busy with the previous group or anything else.
//!
//! A constraint violation (a duplicate id) fails that insert alone: SQLite backs out the one
//! statement and the transaction goes on, so the others are committed. A failed BEGIN or
//! COMMIT, or any other error (which may have ended the transaction), fails every insert of
//! the group. A group of one is a plain autocommit insert, as before.

use super::{BEGIN, now, text};
use crate::store::Error;
use crate::store::policy::sql;
use crate::store::runs::{NewRun, Run};
use sqlx::Connection;
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{Sqlite, SqliteConnection, SqlitePool};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Most inserts written in one transaction.
const MAX_GROUP: usize = 256;
/// Submissions queued for the task beyond this wait to enqueue (back-pressure, bounded memory).
const QUEUE_CAPACITY: usize = 4096;

/// One submission, owned, with its JSON already serialised by the caller.
struct Pending {
    id: String,
    pipeline_name: String,
    pool: String,
    params: String,
    spec: String,
    timeout_seconds: Option<i64>,
    triggered_by: Option<String>,
    reply: oneshot::Sender<Result<Run, Error>>,
}

/// The submitting side. The task ends when the last clone is dropped (the store with it);
/// it is not tracked by the app, so it never holds up shutdown.
#[derive(Clone)]
pub(super) struct RunInserter {
    queue: mpsc::Sender<Pending>,
}

impl RunInserter {
    /// Starts the task on the current Tokio runtime.
    pub(super) fn start(writer: SqlitePool) -> RunInserter {
        let (queue, pending) = mpsc::channel(QUEUE_CAPACITY);
        tokio::spawn(write_groups(writer, pending));
        RunInserter { queue }
    }

    /// Inserts the run `queued`; returns once the transaction holding it has committed.
    pub(super) async fn insert(&self, new: NewRun<'_>) -> Result<Run, Error> {
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            id: text(new.id),
            pipeline_name: new.pipeline_name.to_string(),
            pool: new.pool.to_string(),
            params: new.params.to_string(),
            spec: new.spec.to_string(),
            timeout_seconds: new.timeout_seconds,
            triggered_by: new.triggered_by.map(str::to_owned),
            reply,
        };
        self.queue.send(pending).await.map_err(|_| Error::WriterStopped)?;
        answer.await.map_err(|_| Error::WriterStopped)?
    }
}

async fn write_groups(writer: SqlitePool, mut queue: mpsc::Receiver<Pending>) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    while queue.recv_many(&mut group, MAX_GROUP).await > 0 {
        // A caller that gave up before its turn (a dropped request) gets no run, as before.
        group.retain(|p: &Pending| !p.reply.is_closed());
        if group.is_empty() {
            continue;
        }
        let results = write_group(&writer, &group).await;
        for (pending, result) in group.drain(..).zip(results) {
            // The caller may have gone since; the run is stored either way.
            let _ = pending.reply.send(result);
        }
    }
}

/// One result per pending insert, in order.
async fn write_group(writer: &SqlitePool, group: &[Pending]) -> Vec<Result<Run, Error>> {
    let mut conn: PoolConnection<Sqlite> = match writer.acquire().await {
        Ok(conn) => conn,
        Err(e) => return all_failed(e, group.len()),
    };
    if let [alone] = group {
        // Nothing to share the commit with: one autocommit statement, exactly as without grouping.
        return vec![insert(&mut conn, alone).await.map_err(Error::from)];
    }
    match write_in_one_transaction(&mut conn, group).await {
        Ok(results) => results,
        Err(e) => {
            // Nothing of the group is committed. Whatever state the connection is left in
            // (the error may have ended the transaction), the next writer gets a fresh one.
            conn.close_on_drop();
            all_failed(e, group.len())
        }
    }
}

/// `Err` when the group as a whole failed (nothing of it is committed).
async fn write_in_one_transaction(
    conn: &mut SqliteConnection,
    group: &[Pending],
) -> Result<Vec<Result<Run, Error>>, sqlx::Error> {
    let mut tx = conn.begin_with(BEGIN).await?;
    let mut results = Vec::with_capacity(group.len());
    for pending in group {
        match insert(&mut tx, pending).await {
            Ok(run) => results.push(Ok(run)),
            Err(e) if fails_alone(&e) => results.push(Err(Error::from(e))),
            // Anything else may have rolled the whole transaction back (SQLite does so on
            // SQLITE_FULL, IOERR, BUSY, NOMEM): the group fails, the transaction is dropped.
            Err(e) => return Err(e),
        }
    }
    tx.commit().await?;
    Ok(results)
}

/// SQLITE_CONSTRAINT, the primary result code of every constraint violation.
const SQLITE_CONSTRAINT: i32 = 19;

/// Errors after which the transaction goes on without this insert. A constraint violation
/// (a duplicate id, a strict-table type error): the default conflict resolution (ABORT; the
/// schema declares no other) backs out that one statement and keeps the transaction, so no
/// savepoint is needed. A row that does not decode: the insert itself succeeded; as without
/// grouping, the run is stored and its caller gets `Error::Corrupt`.
fn fails_alone(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => db
            .code()
            .and_then(|code| code.parse::<i32>().ok())
            .is_some_and(|extended| extended & 0xff == SQLITE_CONSTRAINT),
        sqlx::Error::Decode(_) | sqlx::Error::ColumnDecode { .. } => true,
        _ => false,
    }
}

async fn insert(conn: &mut SqliteConnection, p: &Pending) -> Result<Run, sqlx::Error> {
    sqlx::query_as::<_, Run>(sql!(
        "insert into runs (id, pipeline_name, pool, status, params, spec, created_at, timeout_seconds,
             triggered_by)
         values ($1, $2, $3, {status.queued}, $4, $5, $6, $7, $8)
         returning ",
        run_columns!()
    ))
    .bind(&p.id)
    .bind(&p.pipeline_name)
    .bind(&p.pool)
    .bind(&p.params)
    .bind(&p.spec)
    .bind(now())
    .bind(p.timeout_seconds)
    .bind(&p.triggered_by)
    .fetch_one(&mut *conn)
    .await
}

/// The group's error for each of its `n` callers; a lone caller gets it as it is.
fn all_failed(e: sqlx::Error, n: usize) -> Vec<Result<Run, Error>> {
    if n == 1 {
        return vec![Err(Error::from(e))];
    }
    let e = Arc::new(e);
    (0..n).map(|_| Err(Error::GroupCommit(Arc::clone(&e)))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;
    use uuid::Uuid;

    fn temp_db() -> (std::path::PathBuf, String) {
        let dir = std::env::temp_dir().join(format!("fastflow-batch-{}", Uuid::new_v4().simple()));
        let path = dir.join("fastflow.db").to_string_lossy().into_owned();
        (dir, path)
    }

    fn pending(id: Uuid, pipeline: &str) -> (Pending, oneshot::Receiver<Result<Run, Error>>) {
        let (reply, answer) = oneshot::channel();
        let p = Pending {
            id: text(id),
            pipeline_name: pipeline.to_string(),
            pool: "default".into(),
            params: "{}".into(),
            spec: "{}".into(),
            timeout_seconds: None,
            triggered_by: None,
            reply,
        };
        (p, answer)
    }

    /// One group, one transaction: the duplicate in the middle fails alone, the inserts
    /// before and after it are committed.
    #[tokio::test]
    async fn a_failing_insert_fails_alone_in_its_group() {
        let (dir, path) = temp_db();
        let store = SqliteStore::connect(&path).await.expect("connect");
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let group = [pending(a, "first").0, pending(a, "duplicate").0, pending(b, "third").0];
        let results = write_group(&store.writer, &group).await;
        let stored = store.get_runs(&[a, b]).await.expect("get_runs");
        let _ = std::fs::remove_dir_all(&dir);

        assert_eq!(results.len(), 3, "one result per insert");
        assert_eq!(results[0].as_ref().map(|r| r.pipeline_name.as_str()).ok(), Some("first"));
        match &results[1] {
            Err(Error::Database(sqlx::Error::Database(db))) => assert!(db.is_unique_violation(), "{db}"),
            other => panic!("the duplicate must fail with its own constraint error, got {other:?}"),
        }
        assert_eq!(results[2].as_ref().map(|r| r.pipeline_name.as_str()).ok(), Some("third"));
        let mut names: Vec<&str> = stored.iter().map(|r| r.pipeline_name.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["first", "third"], "both committed, the duplicate left nothing");
    }

    /// Once the task is gone (its runtime shut down), a submission gets a typed error.
    #[test]
    fn submissions_after_the_task_stopped_get_an_error() {
        let (dir, path) = temp_db();
        let first = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let store = first.block_on(SqliteStore::connect(&path)).expect("connect");
        drop(first);
        let second = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let new = NewRun {
            id: Uuid::now_v7(),
            pipeline_name: "p",
            pool: "default",
            params: serde_json::json!({}),
            spec: serde_json::json!({}),
            timeout_seconds: None,
            triggered_by: None,
        };
        let result = second.block_on(store.inserts.insert(new));
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
        assert!(matches!(result, Err(Error::WriterStopped)), "got {result:?}");
    }
}
