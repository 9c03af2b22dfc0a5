//! The result rows, as a Markdown table (stdout) and JSON (`bench/results/<date>.json`).

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;

use crate::stats::Summary;

pub const DISTRIBUTED: &str = "distributed";
pub const SINGLE_NODE: &str = "single-node";

/// One measured figure of one scenario in one configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub scenario: String,
    pub configuration: String,
    pub metric: String,
    pub unit: String,
    pub value: Option<Summary>,
    pub floor: Option<Summary>,
    /// Fast-Flow's median over the floor's median (for rates: floor over Fast-Flow is
    /// not used; the ratio is always value / floor).
    pub ratio: Option<f64>,
    /// Where product and floor were measured in pairs (one of each per repetition): the
    /// ratio of each pair. Shown as min–max in the Note column.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio_per_repetition: Option<Summary>,
    pub goal: String,
    pub met: Option<bool>,
    pub note: String,
}

impl Row {
    pub fn new(scenario: &str, metric: &str, unit: &str) -> Self {
        Self {
            scenario: scenario.into(),
            configuration: DISTRIBUTED.into(),
            metric: metric.into(),
            unit: unit.into(),
            value: None,
            floor: None,
            ratio: None,
            ratio_per_repetition: None,
            goal: String::new(),
            met: None,
            note: String::new(),
        }
    }

    pub fn value(mut self, value: Option<Summary>) -> Self {
        self.value = value;
        self
    }

    /// Sets the floor and the ratio value / floor of the medians.
    pub fn floor(mut self, floor: Option<Summary>) -> Self {
        self.ratio = match (&self.value, &floor) {
            (Some(v), Some(f)) if f.median != 0.0 => Some(v.median / f.median),
            _ => None,
        };
        self.floor = floor;
        self
    }

    /// The ratio of each (product, floor) pair, repetition by repetition.
    pub fn paired_ratios(mut self, product: &[f64], floor: &[f64]) -> Self {
        let ratios: Vec<f64> = product.iter().zip(floor).filter(|(_, f)| **f != 0.0).map(|(p, f)| p / f).collect();
        self.ratio_per_repetition = Summary::of(&ratios);
        self
    }

    /// The goal, and whether the median meets it (`check` gets the row).
    pub fn goal(mut self, goal: &str, check: impl Fn(&Row) -> Option<bool>) -> Self {
        self.goal = goal.into();
        self.met = check(&self);
        self
    }

    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.note = note.into();
        self
    }

    /// The row for a scenario that could not be measured.
    pub fn failed(scenario: &str, error: &anyhow::Error) -> Self {
        Row::new(scenario, "(not measured)", "").note(format!("error: {error:#}"))
    }
}

#[derive(Serialize)]
pub struct Report<'a> {
    pub started_at: String,
    pub profile: &'a str,
    /// Every size the scenarios used (`Profile` as Debug).
    pub sizes: String,
    /// The commit the harness was built from (`git rev-parse --short HEAD`, `-dirty` with
    /// uncommitted changes to tracked files); absent where git could not tell.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    pub machine: Machine,
    pub duration_seconds: f64,
    pub rows: &'a [Row],
}

#[derive(Serialize)]
pub struct Machine {
    pub nproc: usize,
    pub cpu_model: String,
    pub mem_total_mib: u64,
    pub kernel: String,
    pub load_average_at_start: String,
}

impl Machine {
    pub fn probe() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name").map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_string())
            })
            .unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_total_mib = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map(|kib| kib / 1024)
            .unwrap_or_default();
        Self {
            nproc: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            cpu_model,
            mem_total_mib,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string(),
            load_average_at_start: std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim().to_string(),
        }
    }
}

/// The checkout's commit, asked of git in the source directory the harness was built from
/// (`scripts/bench.sh` builds it from the checkout it benchmarks).
pub fn git_commit() -> Option<String> {
    let dir = env!("CARGO_MANIFEST_DIR");
    let git = |args: &[&str]| std::process::Command::new("git").arg("-C").arg(dir).args(args).output().ok();
    let head = git(&["rev-parse", "--short", "HEAD"]).filter(|o| o.status.success())?;
    let commit = String::from_utf8_lossy(&head.stdout).trim().to_string();
    if commit.is_empty() {
        return None;
    }
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
        .is_some_and(|o| o.status.success() && !o.stdout.is_empty());
    Some(if dirty { format!("{commit}-dirty") } else { commit })
}

pub fn markdown(rows: &[Row]) -> String {
    let mut out = String::from(
        "| Scenario | Config | Metric | Fast-Flow median [min–max] (reps) | Floor median [min–max] | Ratio | Goal | Met | Note |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    for row in rows {
        let met = match row.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "",
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            row.scenario,
            row.configuration,
            row.metric,
            cell(row.value.as_ref(), &row.unit),
            cell(row.floor.as_ref(), &row.unit),
            row.ratio.map(|r| format!("{r:.2}")).unwrap_or_default(),
            row.goal,
            met,
            note(row).replace('|', "\\|").replace('\n', " "),
        ));
    }
    out
}

/// The row's note, after the spread of its per-repetition ratios when there are several.
fn note(row: &Row) -> String {
    match &row.ratio_per_repetition {
        Some(r) if r.repetitions > 1 => {
            let spread = format!("ratio per repetition {:.2}–{:.2}", r.min, r.max);
            if row.note.is_empty() { spread } else { format!("{spread}; {}", row.note) }
        }
        _ => row.note.clone(),
    }
}

fn cell(summary: Option<&Summary>, unit: &str) -> String {
    match summary {
        None => String::new(),
        Some(s) if s.repetitions <= 1 => format!("{} {unit}", num(s.median)),
        Some(s) => format!("{} [{}–{}] {unit} ({})", num(s.median), num(s.min), num(s.max), s.repetitions),
    }
}

pub(crate) fn num(x: f64) -> String {
    if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

/// Writes the JSON next to earlier results; returns its path.
pub fn write_json(dir: &Path, profile: &str, report: &Report<'_>) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let suffix = if profile == "full" { String::new() } else { format!("-{profile}") };
    let name = format!("{}{suffix}.json", chrono::Utc::now().format("%Y-%m-%dT%H-%M-%SZ"));
    let path = dir.join(name);
    let json = serde_json::to_vec_pretty(report).context("cannot serialise the report")?;
    std::fs::write(&path, json).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paired_ratios_spread_goes_to_the_note() {
        let row = Row::new("s", "m", "runs/s")
            .value(Summary::of(&[4.0, 2.0, 3.0]))
            .floor(Summary::of(&[4.0, 4.0, 3.0]))
            .paired_ratios(&[4.0, 2.0, 3.0], &[4.0, 4.0, 3.0])
            .note("200 runs per repetition");
        assert_eq!(row.ratio, Some(0.75));
        let ratios = row.ratio_per_repetition.as_ref().expect("ratios");
        assert_eq!(ratios.values, vec![1.0, 0.5, 1.0]);
        let table = markdown(&[row]);
        assert!(table.contains("3.00 [2.00–4.00] runs/s (3)"), "{table}");
        assert!(table.contains("ratio per repetition 0.50–1.00; 200 runs per repetition"), "{table}");
    }

    #[test]
    fn one_repetition_has_no_ratio_spread() {
        let row = Row::new("s", "m", "runs/s")
            .value(Summary::of(&[2.0]))
            .floor(Summary::of(&[4.0]))
            .paired_ratios(&[2.0], &[4.0]);
        let table = markdown(&[row]);
        assert!(!table.contains("ratio per repetition"), "{table}");
        assert!(table.contains("| 0.50 |"), "{table}");
    }
}
