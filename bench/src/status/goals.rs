//! The goals of issue 5 (BENCHMARKS.md's Scenarios table), each with the JSON row that
//! measures it per configuration and how to judge that row. The thresholds are checked
//! here again rather than read from a row's `met`, so old files are judged by today's goals.

use super::results::{ResultRow, Stat};
use crate::report::{DISTRIBUTED, SINGLE_NODE, num};

/// Which row of a file measures a goal.
#[derive(Debug, Clone, Copy)]
pub enum Metric {
    Exact(&'static str),
    /// `<size>, <suffix>` or `<size> <suffix>`, e.g. `200 runs, parallelism 4`.
    Suffix(&'static str),
    /// `<who> after <N> runs`: the row with the largest N.
    AfterRuns(&'static str),
    /// `<who> growth from <N/2> to <N> runs`.
    Growth(&'static str),
    /// `clients with all <N> lines + end`.
    Prefix(&'static str),
    /// The row of the scenario that carries a goal (the dispatch goal row changed over time).
    WithGoal,
}

/// How a row is judged.
#[derive(Debug, Clone, Copy)]
pub enum Check {
    ValueAtMost(f64),
    ValueAtLeast(f64),
    RatioAtMost(f64),
    RatioAtLeast(f64),
    /// The largest repetition at most this (RSS peaks).
    MaxAtMost(f64),
    /// The value equals the client count named in the row's goal (`all 200`).
    AllClients,
    /// No figure to check: the row's own `met` (archive digests).
    Stored,
}

#[derive(Debug, Clone, Copy)]
pub struct Measure {
    /// A prefix of the row's scenario (the names gained words over time).
    pub scenario: &'static str,
    pub metric: Metric,
    pub check: Check,
}

pub struct Goal {
    pub label: &'static str,
    pub distributed: Option<Measure>,
    pub single_node: Option<Measure>,
}

impl Goal {
    pub fn measure(&self, configuration: &str) -> Option<Measure> {
        match configuration {
            DISTRIBUTED => self.distributed,
            SINGLE_NODE => self.single_node,
            _ => None,
        }
    }
}

const fn m(scenario: &'static str, metric: Metric, check: Check) -> Option<Measure> {
    Some(Measure { scenario, metric, check })
}

const fn both(label: &'static str, measure: Option<Measure>) -> Goal {
    Goal { label, distributed: measure, single_node: measure }
}

const LATENCY: &str = "Trigger → exited";
const THROUGHPUT: &str = "Throughput";
const DISPATCH: &str = "Dispatch capacity";
const LOG_LATENCY: &str = "Live log latency";
const LOG_THROUGHPUT: &str = "Log throughput";
const API_READ: &str = "API read latency";
const IDLE: &str = "Idle memory";
const NODE: &str = "node (control plane + embedded runner)";
const FANOUT: &str = "SSE fan-out";

/// Every goal, in the order of the Scenarios table.
pub const GOALS: &[Goal] = &[
    both(
        "Trigger → exited: p50 overhead ≤ 30 ms",
        m(LATENCY, Metric::Exact("p50 overhead over floor"), Check::ValueAtMost(30.0)),
    ),
    both("Trigger → exited: p50 ratio to floor ≤ 1.1", m(LATENCY, Metric::Exact("p50"), Check::RatioAtMost(1.1))),
    both(
        "Throughput ≥ 95 % of floor, parallelism 1",
        m(THROUGHPUT, Metric::Suffix("parallelism 1"), Check::RatioAtLeast(0.95)),
    ),
    both(
        "Throughput ≥ 95 % of floor, parallelism 4",
        m(THROUGHPUT, Metric::Suffix("parallelism 4"), Check::RatioAtLeast(0.95)),
    ),
    both(
        "Throughput ≥ 95 % of floor, parallelism 8",
        m(THROUGHPUT, Metric::Suffix("parallelism 8"), Check::RatioAtLeast(0.95)),
    ),
    both("Dispatch ≥ 5,000 claims/s", m(DISPATCH, Metric::WithGoal, Check::ValueAtLeast(5000.0))),
    both(
        "Live log latency p99 ≤ 50 ms at 10 lines/s",
        m(LOG_LATENCY, Metric::Exact("p99 at 10 lines/s"), Check::ValueAtMost(50.0)),
    ),
    both(
        "Live log latency p99 ≤ 50 ms at 10,000 lines/s",
        m(LOG_LATENCY, Metric::Exact("p99 at 10000 lines/s"), Check::ValueAtMost(50.0)),
    ),
    both(
        "Log throughput ≥ 100 MiB/s",
        m(LOG_THROUGHPUT, Metric::Suffix("trigger → archived & final"), Check::ValueAtLeast(100.0)),
    ),
    Goal {
        label: "Log throughput: runner peak RSS ≤ 64 MiB (node ≤ 104 MiB)",
        distributed: m(LOG_THROUGHPUT, Metric::Exact("runner peak RSS"), Check::MaxAtMost(64.0)),
        single_node: m(
            LOG_THROUGHPUT,
            Metric::Exact("node (control plane + embedded runner) peak RSS"),
            Check::MaxAtMost(104.0),
        ),
    },
    both(
        "Log throughput: archive sha256 equal",
        m(LOG_THROUGHPUT, Metric::Exact("archive sha256 = printed bytes"), Check::Stored),
    ),
    both("API read p99 ≤ 10 ms at 2,000 req/s, 100k runs", m(API_READ, Metric::Exact("p99"), Check::ValueAtMost(10.0))),
    Goal {
        label: "Idle memory: runner ≤ 15 MiB (node ≤ 55 MiB)",
        distributed: m(IDLE, Metric::AfterRuns("runner"), Check::ValueAtMost(15.0)),
        single_node: m(IDLE, Metric::AfterRuns(NODE), Check::ValueAtMost(55.0)),
    },
    Goal {
        label: "Idle memory: control plane ≤ 40 MiB",
        distributed: m(IDLE, Metric::AfterRuns("control plane"), Check::ValueAtMost(40.0)),
        single_node: None,
    },
    Goal {
        label: "Idle memory: no growth N/2 → N runs (≤ 1 MiB), runner (node)",
        distributed: m(IDLE, Metric::Growth("runner"), Check::ValueAtMost(1.0)),
        single_node: m(IDLE, Metric::Growth("node"), Check::ValueAtMost(1.0)),
    },
    Goal {
        label: "Idle memory: no growth N/2 → N runs (≤ 1 MiB), control plane",
        distributed: m(IDLE, Metric::Growth("control plane"), Check::ValueAtMost(1.0)),
        single_node: None,
    },
    both("SSE fan-out: all lines to all 200 clients", m(FANOUT, Metric::Prefix("clients with all"), Check::AllClients)),
];

/// The number in `<who> after <N> runs`, when `metric` has that shape.
fn after_runs(metric: &str, who: &str) -> Option<u64> {
    metric.strip_prefix(who)?.strip_prefix(" after ")?.strip_suffix(" runs")?.parse().ok()
}

impl Measure {
    /// The row of `rows` (one file, one configuration) that measures the goal.
    pub fn pick<'a>(&self, rows: impl Iterator<Item = &'a ResultRow>) -> Option<&'a ResultRow> {
        let mut rows = rows.filter(|r| r.scenario.starts_with(self.scenario));
        match self.metric {
            Metric::Exact(name) => rows.find(|r| r.metric == name),
            Metric::Suffix(suffix) => rows.find(|r| r.metric.ends_with(suffix)),
            Metric::Prefix(prefix) => rows.find(|r| r.metric.starts_with(prefix)),
            Metric::WithGoal => rows.find(|r| !r.goal.is_empty()),
            Metric::AfterRuns(who) => {
                rows.filter_map(|r| Some((after_runs(&r.metric, who)?, r))).max_by_key(|(n, _)| *n).map(|(_, r)| r)
            }
            Metric::Growth(who) => rows.find(|r| r.metric.starts_with(&format!("{who} growth from "))),
        }
    }

    /// Whether the row meets the goal; `None` when the row lacks what the check needs.
    pub fn met(&self, row: &ResultRow) -> Option<bool> {
        let value = row.value.as_ref();
        match self.check {
            Check::ValueAtMost(x) => value.map(|v| v.median <= x),
            Check::ValueAtLeast(x) => value.map(|v| v.median >= x),
            Check::RatioAtMost(x) => row.ratio.map(|r| r <= x),
            Check::RatioAtLeast(x) => row.ratio.map(|r| r >= x),
            Check::MaxAtMost(x) => value.map(|v| v.max() <= x),
            Check::AllClients => {
                let clients: f64 = row.goal.strip_prefix("all ")?.trim().parse().ok()?;
                value.map(|v| v.median == clients)
            }
            Check::Stored => row.met,
        }
    }

    /// The figure for the table: what the check looked at, with its spread and context.
    pub fn figure(&self, row: &ResultRow) -> String {
        let unit = &row.unit;
        let figure = match self.check {
            Check::RatioAtMost(_) | Check::RatioAtLeast(_) => {
                let ratio = row.ratio.map(|r| format!("ratio {r:.2}")).unwrap_or_default();
                let spread = match &row.ratio_per_repetition {
                    Some(r) if r.repetitions > 1 => format!(" (per repetition {:.2}–{:.2})", r.min(), r.max()),
                    _ => String::new(),
                };
                let sides = match (&row.value, &row.floor) {
                    (Some(v), Some(f)) => format!("; {} vs floor {} {unit}", num(v.median), num(f.median)),
                    _ => String::new(),
                };
                format!("{ratio}{spread}{sides}")
            }
            Check::MaxAtMost(_) => {
                row.value.as_ref().map(|v| format!("peak {} {unit}", num(v.max()))).unwrap_or_default()
            }
            Check::AllClients => {
                let of = row.goal.strip_prefix("all ").unwrap_or("?");
                row.value.as_ref().map(|v| format!("{}/{of} clients", num(v.median))).unwrap_or_default()
            }
            Check::Stored => stored(row),
            Check::ValueAtMost(_) | Check::ValueAtLeast(_) => {
                let mut figure = row.value.as_ref().map(|v| spread(v, unit)).unwrap_or_default();
                if let (Some(f), Some(r)) = (&row.floor, row.ratio) {
                    figure.push_str(&format!(" (floor {} {unit}, ratio {r:.2})", num(f.median)));
                }
                figure
            }
        };
        match self.context(&row.metric) {
            Some(context) if !figure.is_empty() => format!("{figure}; {context}"),
            _ => figure,
        }
    }

    /// The part of the metric that varies between runs (size, run count), so a reduced-size
    /// run is visible as such.
    fn context(&self, metric: &str) -> Option<String> {
        match self.metric {
            Metric::Suffix(suffix) => {
                let size = metric.strip_suffix(suffix)?.trim_end_matches([',', ' ']);
                (!size.is_empty()).then(|| size.to_string())
            }
            Metric::AfterRuns(who) => after_runs(metric, who).map(|n| format!("after {n} runs")),
            Metric::Growth(who) => metric.strip_prefix(&format!("{who} growth ")).map(str::to_string),
            Metric::WithGoal => Some(metric.to_string()),
            Metric::Exact(_) | Metric::Prefix(_) => None,
        }
    }
}

/// `median [min–max] unit (reps)`, as in the harness's own table.
fn spread(v: &Stat, unit: &str) -> String {
    if v.repetitions > 1 {
        format!("{} [{}–{}] {unit} ({})", num(v.median), num(v.min()), num(v.max()), v.repetitions)
    } else {
        format!("{} {unit}", num(v.median))
    }
}

/// The archive row has no figure: its note starts with `2 of 2 archives equal: …`.
fn stored(row: &ResultRow) -> String {
    match row.note.split_once(':') {
        Some((head, _)) if head.chars().next().is_some_and(|c| c.is_ascii_digit()) => head.to_string(),
        _ => match row.met {
            Some(true) => "equal".into(),
            Some(false) => "differ".into(),
            None => String::new(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(scenario: &str, metric: &str, median: f64) -> ResultRow {
        ResultRow {
            scenario: scenario.into(),
            configuration: DISTRIBUTED.into(),
            metric: metric.into(),
            unit: "MiB".into(),
            value: Some(Stat { median, min: None, max: Some(median + 1.0), repetitions: 1 }),
            ..ResultRow::default()
        }
    }

    #[test]
    fn idle_memory_takes_the_row_after_the_most_runs() {
        let rows = [
            row(IDLE, "runner after start", 9.0),
            row(IDLE, "runner after 1000 runs", 16.0),
            row(IDLE, "runner after 500 runs", 12.0),
        ];
        let measure = GOALS[12].distributed.expect("distributed");
        let picked = measure.pick(rows.iter()).expect("picked");
        assert_eq!(picked.metric, "runner after 1000 runs");
        assert_eq!(measure.met(picked), Some(false));
        assert_eq!(measure.figure(picked), "16.0 MiB; after 1000 runs");
    }

    #[test]
    fn ratio_goals_judge_the_ratio_and_missing_ratios_are_unknown() {
        let measure =
            Measure { scenario: THROUGHPUT, metric: Metric::Suffix("parallelism 4"), check: Check::RatioAtLeast(0.95) };
        let mut r = row("Throughput, trivial runs", "200 runs, parallelism 4", 5.7);
        assert_eq!(measure.met(&r), None);
        r.ratio = Some(0.947);
        r.floor = Some(Stat { median: 6.0, min: None, max: None, repetitions: 3 });
        assert_eq!(measure.met(&r), Some(false));
        r.ratio = Some(0.95);
        assert_eq!(measure.met(&r), Some(true));
        assert_eq!(measure.figure(&r), "ratio 0.95; 5.70 vs floor 6.00 MiB; 200 runs");
    }

    #[test]
    fn peaks_are_judged_by_the_largest_repetition_and_fanout_by_its_client_count() {
        let peak = Measure {
            scenario: LOG_THROUGHPUT,
            metric: Metric::Exact("runner peak RSS"),
            check: Check::MaxAtMost(64.0),
        };
        assert_eq!(peak.met(&row(LOG_THROUGHPUT, "runner peak RSS", 63.5)), Some(false));
        let fanout = GOALS[16].single_node.expect("single node");
        let mut r = row(FANOUT, "clients with all 5000 lines + end", 200.0);
        assert_eq!(fanout.met(&r), None, "no goal text, no client count");
        r.goal = "all 200".into();
        assert_eq!(fanout.met(&r), Some(true));
        r.value = Some(Stat { median: 199.0, min: None, max: None, repetitions: 1 });
        assert_eq!(fanout.met(&r), Some(false));
    }

    #[test]
    fn the_archive_goal_uses_the_stored_verdict_and_the_note() {
        let measure = GOALS[10].distributed.expect("distributed");
        let mut r = row(LOG_THROUGHPUT, "archive sha256 = printed bytes", 0.0);
        r.value = None;
        r.met = Some(true);
        r.note = "2 of 2 archives equal: 1073741824 bytes".into();
        assert_eq!(measure.met(&r), Some(true));
        assert_eq!(measure.figure(&r), "2 of 2 archives equal");
    }
}
