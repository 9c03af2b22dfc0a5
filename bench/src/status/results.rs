//! Reading `bench/results/*.json` leniently: the schema grew over the rounds (no `commit`
//! before issue 15, no `ratio_per_repetition` before round 4), so every field is optional
//! and a file or row that cannot be read is reported, never fatal.

use std::path::Path;

use serde::Deserialize;

/// One result file, as much of it as could be read.
#[derive(Debug, Default)]
pub struct ResultFile {
    /// File name without `.json` (e.g. `2026-11-24T02-41-02Z`): names the run.
    pub stem: String,
    pub started_at: Option<String>,
    pub profile: Option<String>,
    pub commit: Option<String>,
    pub rows: Vec<ResultRow>,
}

/// The fields of a JSON row the status table uses.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub struct ResultRow {
    pub scenario: String,
    pub configuration: String,
    pub metric: String,
    pub unit: String,
    pub value: Option<Stat>,
    pub floor: Option<Stat>,
    pub ratio: Option<f64>,
    pub ratio_per_repetition: Option<Stat>,
    pub goal: String,
    pub met: Option<bool>,
    pub note: String,
}

/// A figure's median and spread; `min`/`max` fall back to the median when absent.
#[derive(Debug, Clone, Deserialize)]
pub struct Stat {
    pub median: f64,
    pub min: Option<f64>,
    pub max: Option<f64>,
    #[serde(default)]
    pub repetitions: usize,
}

impl Stat {
    pub fn min(&self) -> f64 {
        self.min.unwrap_or(self.median)
    }

    pub fn max(&self) -> f64 {
        self.max.unwrap_or(self.median)
    }
}

#[derive(Deserialize)]
struct RawFile {
    started_at: Option<String>,
    profile: Option<String>,
    commit: Option<String>,
    #[serde(default)]
    rows: Vec<serde_json::Value>,
}

/// Parses one file's text; rows that do not fit are skipped and named in `problems`.
pub fn parse(stem: &str, text: &str, problems: &mut Vec<String>) -> Option<ResultFile> {
    let raw: RawFile = match serde_json::from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            problems.push(format!("{stem}: not a result file ({e})"));
            return None;
        }
    };
    let mut rows = Vec::with_capacity(raw.rows.len());
    for (i, value) in raw.rows.into_iter().enumerate() {
        match serde_json::from_value::<ResultRow>(value) {
            Ok(row) => rows.push(row),
            Err(e) => problems.push(format!("{stem}: row {i} skipped ({e})")),
        }
    }
    Some(ResultFile {
        stem: stem.to_string(),
        started_at: raw.started_at,
        profile: raw.profile,
        commit: raw.commit,
        rows,
    })
}

/// Every `*.json` in `dir`, oldest first (the names are UTC timestamps).
pub fn load_dir(dir: &Path, problems: &mut Vec<String>) -> std::io::Result<Vec<ResultFile>> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    let mut files = Vec::with_capacity(paths.len());
    for path in paths {
        let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        match std::fs::read_to_string(&path) {
            Ok(text) => files.extend(parse(&stem, &text, problems)),
            Err(e) => problems.push(format!("{stem}: cannot read ({e})")),
        }
    }
    Ok(files)
}

/// What the run history (`bench/history/`) says about a result file it names.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Known {
    /// The run's name in the history (e.g. `N`, `M4`), if it has one.
    pub run: Option<String>,
    /// The commit the history says the run's binaries were built from.
    pub commit: Option<String>,
}

/// Reads `runs.tsv`: `file stem <TAB> run name <TAB> commit`, `-` for unknown, `#` comments.
pub fn parse_known(text: &str) -> std::collections::HashMap<String, Known> {
    let field = |s: Option<&str>| s.map(str::trim).filter(|s| !s.is_empty() && *s != "-").map(str::to_string);
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|line| {
            let mut parts = line.split('\t');
            let stem = field(parts.next())?;
            Some((stem, Known { run: field(parts.next()), commit: field(parts.next()) }))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_missing_fields_is_read_with_defaults() {
        let text = r#"{"started_at": "2026-11-24T01:00:00+00:00", "profile": "full",
            "rows": [{"scenario": "API read latency", "configuration": "single-node", "metric": "p99",
                      "value": {"median": 3.1}}]}"#;
        let mut problems = Vec::new();
        let file = parse("2026-11-24T01-00-00Z", text, &mut problems).expect("parsed");
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(file.commit, None);
        let value = file.rows[0].value.as_ref().expect("value");
        assert_eq!((value.min(), value.max(), value.repetitions), (3.1, 3.1, 0));
        assert_eq!(file.rows[0].ratio, None);
    }

    #[test]
    fn a_bad_row_or_file_is_reported_not_fatal() {
        let mut problems = Vec::new();
        let text = r#"{"rows": [{"scenario": "x", "value": "fast"}, {"scenario": "y"}]}"#;
        let file = parse("f", text, &mut problems).expect("parsed");
        assert_eq!(file.rows.len(), 1);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(parse("g", "not json", &mut problems).is_none());
        assert_eq!(problems.len(), 2);
    }

    #[test]
    fn known_runs_skip_comments_and_dashes() {
        let known = parse_known("# stem\trun\tcommit\na\tN\t8fa37ba\nb\tM4\t-\n\n");
        assert_eq!(known["a"], Known { run: Some("N".into()), commit: Some("8fa37ba".into()) });
        assert_eq!(known["b"], Known { run: Some("M4".into()), commit: None });
        assert_eq!(known.len(), 2);
    }
}
