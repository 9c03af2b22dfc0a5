use super::*;

/// A result file with latency rows for the given configurations (p50 ratio, overhead).
fn latency_file(stem: &str, profile: &str, commit: Option<&str>, rows: &[(&str, f64, Option<f64>)]) -> ResultFile {
    let rows: Vec<String> = rows
        .iter()
        .flat_map(|(config, overhead, ratio)| {
            let ratio = ratio.map_or("null".to_string(), |r| r.to_string());
            [
                format!(
                    r#"{{"scenario": "Trigger → exited (sequential)", "configuration": "{config}", "metric": "p50",
                        "unit": "ms", "value": {{"median": 300.0, "min": 290.0, "max": 310.0, "repetitions": 3, "values": []}},
                        "floor": {{"median": 290.0}}, "ratio": {ratio}, "goal": "ratio ≤ 1.1", "met": true, "note": ""}}"#
                ),
                format!(
                    r#"{{"scenario": "Trigger → exited (sequential)", "configuration": "{config}",
                        "metric": "p50 overhead over floor", "unit": "ms", "value": {{"median": {overhead}}}}}"#
                ),
            ]
        })
        .collect();
    let commit = commit.map_or(String::new(), |c| format!(r#""commit": "{c}","#));
    let text = format!(
        r#"{{"started_at": "2026-11-2{}T01:00:00+00:00", "profile": "{profile}", {commit} "rows": [{}]}}"#,
        &stem[9..10],
        rows.join(",")
    );
    let mut problems = Vec::new();
    let file = results::parse(stem, &text, &mut problems).expect("sample parses");
    assert!(problems.is_empty(), "{problems:?}");
    file
}

fn line<'a>(table: &'a str, goal: &str) -> &'a str {
    table.lines().find(|l| l.starts_with(&format!("| {goal} |"))).expect("goal row")
}

#[test]
fn each_configuration_takes_the_latest_file_that_measured_the_goal() {
    let files = vec![
        latency_file(
            "2026-11-23T01-00-00Z",
            "full",
            None,
            &[("distributed", 12.0, Some(1.04)), ("single-node", 4.0, Some(1.2))],
        ),
        latency_file("2026-11-24T01-00-00Z", "full", Some("abc1234"), &[("distributed", 40.0, Some(1.02))]),
        latency_file("2026-11-25T01-00-00Z", "quick", Some("fff0000"), &[("distributed", 1.0, Some(1.0))]),
    ];
    let known = results::parse_known("2026-11-23T01-00-00Z\tE\t-\n");
    let mut problems = Vec::new();
    let table = table(&files, &known, "bench/results", &mut problems);
    assert!(problems.is_empty(), "{problems:?}");

    let overhead = line(&table, "Trigger → exited: p50 overhead ≤ 30 ms");
    assert!(overhead.contains("| 40.0 ms | 4.00 ms |"), "{overhead}");
    assert!(overhead.contains("| distributed **no**, single node yes |"), "{overhead}");
    assert!(
        overhead.contains("distributed: [`2026-11-24T01-00-00Z`](bench/results/2026-11-24T01-00-00Z.json)"),
        "{overhead}"
    );
    assert!(
        overhead.contains("single node: [`2026-11-23T01-00-00Z`](bench/results/2026-11-23T01-00-00Z.json) (run E)"),
        "{overhead}"
    );
    assert!(overhead.contains("distributed: `abc1234`<br>single node: unknown"), "{overhead}");
    assert!(overhead.contains("distributed: 2026-11-24<br>single node: 2026-11-23"), "{overhead}");

    let ratio = line(&table, "Trigger → exited: p50 ratio to floor ≤ 1.1");
    assert!(ratio.contains("ratio 1.02; 300 vs floor 290 ms"), "{ratio}");
    assert!(ratio.contains("| distributed yes, single node **no** |"), "{ratio}");

    let dispatch = line(&table, "Dispatch ≥ 5,000 claims/s");
    assert!(dispatch.contains("| not measured | not measured | not measured |"), "{dispatch}");
    let control_plane = line(&table, "Idle memory: control plane ≤ 40 MiB");
    assert!(control_plane.contains("| not measured | — | not measured |"), "{control_plane}");
}

#[test]
fn a_row_without_what_its_goal_needs_is_reported_and_an_older_file_used() {
    let files = vec![
        latency_file("2026-11-23T01-00-00Z", "full", Some("1111111"), &[("distributed", 12.0, Some(1.04))]),
        latency_file("2026-11-24T01-00-00Z", "full", Some("2222222"), &[("distributed", 11.0, None)]),
    ];
    let mut problems = Vec::new();
    let table = table(&files, &HashMap::new(), "r", &mut problems);
    let ratio = line(&table, "Trigger → exited: p50 ratio to floor ≤ 1.1");
    assert!(ratio.contains("ratio 1.04") && ratio.contains("`1111111`"), "{ratio}");
    let overhead = line(&table, "Trigger → exited: p50 overhead ≤ 30 ms");
    assert!(overhead.contains("`2222222`"), "{overhead}");
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].starts_with("2026-11-24T01-00-00Z: distributed row"), "{problems:?}");
}

#[test]
fn the_table_replaces_only_the_text_between_the_markers() {
    let document = format!("# Benchmarks\n\n{BEGIN}\nold table\n{END}\n\n## How to run\n");
    let once = replace_between_markers(&document, "| new |\n").expect("markers");
    assert_eq!(once, format!("# Benchmarks\n\n{BEGIN}\n| new |\n{END}\n\n## How to run\n"));
    let twice = replace_between_markers(&once, "| new |\n").expect("markers");
    assert_eq!(twice, once, "regenerating the same table changes nothing");
    assert!(replace_between_markers("# Benchmarks\n", "x").is_err());
    assert!(replace_between_markers(&format!("{END}\n{BEGIN}\n"), "x").is_err(), "end before begin");
}

#[test]
fn links_are_relative_to_the_document() {
    assert_eq!(relative(Path::new("/a/b"), Path::new("/a/b/bench/results")), "bench/results");
    assert_eq!(relative(Path::new("/a/b/docs"), Path::new("/a/b/bench/results")), "../bench/results");
    assert_eq!(relative(Path::new("/a/b"), Path::new("/a/b")), ".");
}
