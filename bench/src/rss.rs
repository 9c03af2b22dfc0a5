//! Resident memory of the product's processes, from /proc/<pid>/status (VmRSS).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::task::JoinHandle;

/// VmRSS of `pid` in MiB; `None` when the process or the field is gone.
pub fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Samples a process's VmRSS every 50 ms and keeps the peak, until stopped.
pub struct PeakSampler {
    peak_kib: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl PeakSampler {
    pub fn start(pid: Option<u32>) -> Self {
        let peak_kib = Arc::new(AtomicU64::new(0));
        let peak = peak_kib.clone();
        let task = tokio::spawn(async move {
            let Some(pid) = pid else { return };
            loop {
                if let Some(mib) = rss_mib(pid) {
                    peak.fetch_max((mib * 1024.0) as u64, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        Self { peak_kib, task }
    }

    /// The peak in MiB (0 when nothing could be read).
    pub fn stop(self) -> f64 {
        self.task.abort();
        self.peak_kib.load(Ordering::Relaxed) as f64 / 1024.0
    }
}
