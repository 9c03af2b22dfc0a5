//! Exit reports not yet accepted, kept on disk (`RUNNER_DATA_DIR/exit-reports/`)
//! until the control plane accepts (or rejects) them, so a report survives a
//! runner restart. Written once the attempt's whole log is published; the
//! container (and the engine's copy of its output) stays until the report is
//! accepted. A restarted runner re-sends each one before it claims anything
//! (see `reattach`).

use serde::{Deserialize, Serialize};
use shared::protocol::{AttemptRef, ExitReport};
use std::io::Write;
use std::path::{Path, PathBuf};

const DIR: &str = "exit-reports";

/// A report waiting for the control plane, with the container to remove after it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pending {
    pub report: ExitReport,
    pub container_id: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ExitReports {
    dir: PathBuf,
}

impl ExitReports {
    pub fn in_dir(data_dir: &Path) -> ExitReports {
        ExitReports { dir: data_dir.join(DIR) }
    }

    /// Stores the report durably (written, fsynced, renamed into place, directory
    /// fsynced) before it is first sent.
    pub fn save(&self, pending: &Pending) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let path = self.path(&pending.report.attempt);
        let tmp = path.with_extension("tmp");
        let json = serde_json::to_vec(pending).map_err(std::io::Error::other)?;
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&json)?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(&self.dir)?.sync_all()
    }

    /// The report was answered for good: forget it.
    pub fn remove(&self, at: &AttemptRef) {
        let path = self.path(at);
        if let Err(e) = std::fs::remove_file(&path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), error = %e, "cannot delete a delivered exit report");
        }
    }

    /// Every report still waiting (an unreadable file is logged and set aside).
    pub fn pending(&self) -> Vec<Pending> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
            Err(e) => {
                tracing::error!(dir = %self.dir.display(), error = %e, "cannot read the saved exit reports");
                return Vec::new();
            }
        };
        let mut pending = Vec::new();
        for path in entries.flatten().map(|e| e.path()) {
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let parsed = std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|bytes| serde_json::from_slice::<Pending>(&bytes).map_err(|e| e.to_string()));
            match parsed {
                Ok(p) => pending.push(p),
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "unreadable saved exit report; setting it aside");
                    let _ = std::fs::rename(&path, path.with_extension("unreadable"));
                }
            }
        }
        pending
    }

    fn path(&self, at: &AttemptRef) -> PathBuf {
        self.dir.join(format!("{}.{}.json", at.run_id, at.attempt))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::protocol::{ExitOutcome, LogTotals};

    #[test]
    fn reports_survive_until_removed() {
        let dir = std::env::temp_dir().join(format!("ff-reports-{}", uuid::Uuid::new_v4()));
        let reports = ExitReports::in_dir(&dir);
        assert!(reports.pending().is_empty());
        let at = AttemptRef { run_id: uuid::Uuid::new_v4(), attempt: 2, fencing_token: 9 };
        let report = ExitReport {
            attempt: at.clone(),
            runner_id: "r1".into(),
            outcome: ExitOutcome::Exited { exit_code: 3 },
            log: LogTotals::default(),
            timed_out: false,
            cancelled: true,
        };
        reports.save(&Pending { report, container_id: Some("abc".into()) }).expect("saved");
        std::fs::write(dir.join(DIR).join("junk.json"), b"{").expect("junk");
        let found = reports.pending();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].report.attempt, at);
        assert!(found[0].report.cancelled);
        assert_eq!(found[0].container_id.as_deref(), Some("abc"));
        assert!(dir.join(DIR).join("junk.unreadable").exists(), "set aside");
        reports.remove(&at);
        assert!(reports.pending().is_empty());
        std::fs::remove_dir_all(&dir).ok();
    }
}
