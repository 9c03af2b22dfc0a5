//! `control-plane migrate-store`: moves a deployment's state from one store to
//! another (the single node's SQLite to Postgres) and its archived logs from one
//! log store to another (files to S3). Idempotent: rows and logs already at the
//! destination are left alone, so an interrupted move is finished by running it
//! again, and a second run copies nothing. Users and API tokens move with the runs;
//! sessions and the audit log do not.

use crate::logs::index_key;
use crate::object_store::{self, CopyOutcome, ObjectStore};
use crate::store::{self, Store};
use shared::RunStatus;
use uuid::Uuid;

const PAGE: i64 = 500;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error("copying log {key}: {source}")]
    Log { key: String, source: object_store::Error },
    #[error("{0} run(s) are still running in the source; stop the node (or wait for them to finish) before moving it")]
    StillRunning(usize),
}

/// What a migration did so far; printed as its progress line.
#[derive(Debug, Default, Clone)]
pub struct Totals {
    /// Runs in the source.
    pub runs: i64,
    pub runs_seen: i64,
    pub runs_copied: i64,
    pub attempts_copied: i64,
    pub bundles_copied: i64,
    pub users_copied: i64,
    pub tokens_copied: i64,
    pub logs_copied: i64,
    pub log_bytes_copied: u64,
    pub logs_already_there: i64,
    /// Logs a run names that the source log store does not have.
    pub logs_missing: i64,
}

impl std::fmt::Display for Totals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "runs {}/{} ({} copied), attempts {} copied, code bundles {} copied, users {} copied, API tokens {} copied, \
             logs {} copied ({:.1} MiB), {} already there",
            self.runs_seen,
            self.runs,
            self.runs_copied,
            self.attempts_copied,
            self.bundles_copied,
            self.users_copied,
            self.tokens_copied,
            self.logs_copied,
            self.log_bytes_copied as f64 / (1024.0 * 1024.0),
            self.logs_already_there,
        )?;
        if self.logs_missing > 0 {
            write!(f, ", {} missing in the source", self.logs_missing)?;
        }
        Ok(())
    }
}

/// Copies every code bundle, run and finished attempt from `from` to `to`,
/// and, with `logs`, every archived log (and its line index) from the first
/// log store to the second. `progress` is called after each page of runs.
pub async fn migrate(
    from: &Store,
    to: &Store,
    logs: Option<(&ObjectStore, &ObjectStore)>,
    progress: &mut dyn FnMut(&Totals),
) -> Result<Totals, Error> {
    let mut totals = Totals { runs: from.count_runs().await?, ..Totals::default() };
    refuse_running_runs(from).await?;
    copy_users_and_tokens(from, to, &mut totals).await?;

    let mut after: Option<String> = None;
    loop {
        let bundles = from.export_bundles(after.as_deref(), PAGE).await?;
        let Some(last) = bundles.last() else { break };
        after = Some(last.digest.clone());
        for bundle in &bundles {
            totals.bundles_copied += i64::from(to.import_bundle(bundle).await?);
        }
    }

    let mut after: Option<Uuid> = None;
    loop {
        let runs = from.export_runs(after, PAGE).await?;
        let Some(last) = runs.last() else { break };
        after = Some(last.run.id);
        for record in &runs {
            let run = &record.run;
            // Logs first: a run present at the destination then always has its log.
            let attempts = from.export_attempts(run.id).await?;
            if let Some((src, dst)) = logs
                && run.log_expired_at.is_none()
            {
                let mut archived: Vec<(i32, &str)> =
                    attempts.iter().filter_map(|a| a.log_key.as_deref().map(|k| (a.attempt, k))).collect();
                // A final run's current attempt is also in its attempts; copy it once.
                if let Some(key) = run.log_key.as_deref()
                    && !archived.iter().any(|(attempt, _)| *attempt == run.attempt)
                {
                    archived.push((run.attempt, key));
                }
                for (attempt, key) in archived {
                    copy_log(src, dst, key, &mut totals).await?;
                    copy_log(src, dst, &index_key(run.id, attempt), &mut totals).await?;
                }
            }
            // Attempts reference their run. An interrupted move may leave a run without some
            // attempts: the next run of the command adds them.
            totals.runs_copied += i64::from(to.import_run(record).await?);
            for attempt in &attempts {
                totals.attempts_copied += i64::from(to.import_attempt(run.id, attempt).await?);
            }
            totals.runs_seen += 1;
        }
        progress(&totals);
    }
    progress(&totals);
    Ok(totals)
}

/// Users, then their API tokens (few rows: one page each). Sessions are not moved: users
/// log in again on the target.
async fn copy_users_and_tokens(from: &Store, to: &Store, totals: &mut Totals) -> Result<(), Error> {
    for user in from.export_users().await? {
        totals.users_copied += i64::from(to.import_user(&user).await?);
    }
    for token in from.export_tokens().await? {
        totals.tokens_copied += i64::from(to.import_token(&token).await?);
    }
    Ok(())
}

async fn refuse_running_runs(from: &Store) -> Result<(), Error> {
    let mut running = 0;
    let mut after = None;
    loop {
        let runs = from.export_runs(after, PAGE).await?;
        let Some(last) = runs.last() else {
            return if running > 0 { Err(Error::StillRunning(running)) } else { Ok(()) };
        };
        after = Some(last.run.id);
        running += runs.iter().filter(|r| r.run.status == RunStatus::Running).count();
    }
}

async fn copy_log(src: &ObjectStore, dst: &ObjectStore, key: &str, totals: &mut Totals) -> Result<(), Error> {
    match object_store::copy(src, dst, key).await {
        Ok(CopyOutcome::Copied(bytes)) => {
            totals.logs_copied += 1;
            totals.log_bytes_copied += bytes;
        }
        Ok(CopyOutcome::AlreadyThere) => totals.logs_already_there += 1,
        Err(object_store::Error::NotFound { .. }) => {
            tracing::warn!(key, "a run names a log the source log store does not have");
            totals.logs_missing += 1;
        }
        Err(source) => return Err(Error::Log { key: key.to_owned(), source }),
    }
    Ok(())
}
