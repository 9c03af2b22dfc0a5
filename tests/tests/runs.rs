//! Runs end to end: statuses, exit codes, params, cancel, setup errors, API errors,
//! listing. Each test has its own deployment (see `tests::TestEnv`), and every test
//! runs in both modes (`in_both_modes!`): distributed and single node.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tests::checks::{assert_finished, assert_logs_agree};
use tests::{TestEnv, assert_error_shape, in_both_modes};

/// First Python runs start a container from the worker image; give them room.
const PYTHON_RUN: Duration = Duration::from_secs(120);
const SHELL_RUN: Duration = Duration::from_secs(60);

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

in_both_modes! {
    async fn hello_succeeds_and_its_log_agrees_over_http_sse_and_the_archive(options) {
        let env = TestEnv::start(options).await;

        let plain = env.run_pipeline("hello", &[]).await;
        let ada = env.run_pipeline("hello", &[("NAME", "Ada")]).await;
        assert_eq!(ada.params, json!({"NAME": "Ada"}), "params not echoed: {ada:?}");

        for (created, greeting) in [(plain, "Hello, world!\n"), (ada, "Hello, Ada!\n")] {
            // Subscribe before the end so the stream covers the live path too.
            let mut stream = env.stream_logs(&created.id, None).await;
            let sse = stream.collect_until_end(PYTHON_RUN).await;
            let run = env.wait_final(&created.id, PYTHON_RUN).await;

            assert_finished(&run, "success", None);
            assert_eq!(run.exit_code, Some(0), "{run:#?}");
            assert_eq!(run.attempt, 1, "{run:#?}");
            assert_eq!(run.runner_id.as_deref(), Some(env.runner_id(0)), "{run:#?}");
            assert!(run.started_at.is_some(), "started_at not set: {run:#?}");
            assert!(run.error_message.is_none(), "{run:#?}");

            let log = env.logs(&run.id).await;
            assert!(text(&log).contains(greeting), "log of {} lacks {greeting:?}: {:?}", run.id, text(&log));
            assert_eq!(run.log_size_bytes, Some(log.len() as u64), "{run:#?}");
            let archive = env.archived_log(&run.id, 1).await;
            assert_logs_agree(&run, &log, &archive, &sse);
            assert_eq!(sse.end["status"], "success");
        }
    }
}

in_both_modes! {
    async fn a_failing_pipeline_reports_its_exit_code_and_params(options) {
        let env = TestEnv::start(options).await;

        let created = env.run_pipeline("fails", &[("REASON", "disk full")]).await;
        let run = env.wait_final(&created.id, PYTHON_RUN).await;

        assert_finished(&run, "failed", Some("exit_code"));
        assert_eq!(run.exit_code, Some(3), "{run:#?}");
        let log = text(&env.logs(&run.id).await);
        assert!(log.contains("about to fail: disk full\n"), "log: {log:?}");
        assert!(log.contains("exiting with code 3\n"), "stderr line missing: {log:?}");
    }
}

in_both_modes! {
    async fn a_container_sees_the_pipeline_env_and_the_run_params(options) {
        let env = TestEnv::start(options).await;

        let created = env.run_pipeline("env_echo", &[("WHO", "Ada Lovelace")]).await;
        let run = env.wait_final(&created.id, SHELL_RUN).await;

        assert_finished(&run, "success", None);
        let log = text(&env.logs(&run.id).await);
        assert_eq!(log, "GREETING=hello from pipeline.toml\nWHO=Ada Lovelace\n");
    }
}

in_both_modes! {
    async fn a_busybox_pipeline_keeps_stdout_and_stderr_apart(options) {
        let env = TestEnv::start(options).await;

        let created = env.run_pipeline("shell", &[]).await;
        let sse = env.stream_logs(&created.id, None).await.collect_until_end(SHELL_RUN).await;
        let run = env.wait_final(&created.id, SHELL_RUN).await;

        assert_finished(&run, "success", None);
        // Docker reads a container's stdout and stderr pipes independently, so only
        // the order within each stream is guaranteed, not the interleaving.
        let lines_of = |stream: &str| -> Vec<&str> {
            sse.logs.iter().filter(|(_, l)| l.stream == stream).map(|(_, l)| l.line.as_str()).collect()
        };
        assert_eq!(lines_of("stdout"), vec!["hello from busybox", "line 1", "line 2", "line 3"]);
        assert_eq!(lines_of("stderr"), vec!["to stderr"]);
        let log = text(&env.logs(&run.id).await);
        assert!(log.contains("to stderr\n"), "GET logs lacks the stderr line: {log:?}");
    }
}

in_both_modes! {
    async fn requirements_are_installed_before_the_script_runs(options) {
        let env = TestEnv::start(options).await;

        let created = env.run_pipeline("with_requirements", &[]).await;
        // uv may have to download `six` the first time (cached afterwards).
        let run = env.wait_final(&created.id, Duration::from_secs(240)).await;

        let log = text(&env.logs(&run.id).await);
        assert_finished(&run, "success", None);
        assert!(log.contains("six 1.16.0 imported from"), "log: {log:?}");
    }
}

in_both_modes! {
    async fn cancelling_a_running_job_stops_and_removes_its_container(options) {
        let env = TestEnv::start(options).await;

        let created = env.run_pipeline("slow", &[]).await;
        env.wait_for_log(&created.id, "tick 1/60", PYTHON_RUN).await;

        let accepted = env.cp(0).cancel_run(&created.id).await.run(StatusCode::ACCEPTED);
        assert_eq!(accepted.id, created.id);

        let run = env.wait_for_status(&created.id, |r| r.is_final(), Duration::from_secs(15)).await;
        assert_finished(&run, "cancelled", Some("cancelled"));
        assert!(!text(&env.logs(&run.id).await).contains("tick 60/60"), "the job ran to completion despite the cancel");

        tests::poll_until(
            "the cancelled run's container to be removed",
            Duration::from_secs(15),
            Duration::from_millis(250),
            || async {
                let left = env.docker_containers_with_label(&run.id).await;
                if left.is_empty() { Ok(()) } else { Err(format!("containers left: {left:?}")) }
            },
        )
        .await;

        let again = env.cp(0).cancel_run(&run.id).await;
        assert_error_shape(&again, StatusCode::CONFLICT);
    }
}

in_both_modes! {
    async fn a_missing_image_is_a_setup_error_with_a_system_log_line(options) {
        let env = TestEnv::start(options).await;

        let created = env.run_pipeline("missing_image", &[]).await;
        let sse = env.stream_logs(&created.id, None).await.collect_until_end(SHELL_RUN).await;
        let run = env.wait_final(&created.id, SHELL_RUN).await;

        assert_finished(&run, "failed", Some("setup_error"));
        let message = run.error_message.clone().unwrap_or_default();
        assert!(message.contains("fastflow-no-such-image"), "error_message does not name the image: {run:#?}");
        assert!(
            sse.logs.iter().any(|(_, l)| l.stream == "system" && l.line.contains("fastflow-no-such-image")),
            "no system log line names the missing image: {:#?}",
            sse.logs
        );
        assert!(
            env.docker_containers_with_label(&run.id).await.is_empty(),
            "a container exists for a run whose image is missing"
        );
    }
}

in_both_modes! {
    async fn bad_requests_get_json_errors(options) {
        let env = TestEnv::start(options.runners(0)).await;
        let cp = env.cp(0);

        assert_error_shape(&cp.get_pipeline("no_such_pipeline").await, StatusCode::NOT_FOUND);
        assert_error_shape(&cp.create_run("no_such_pipeline", None).await, StatusCode::NOT_FOUND);
        assert_error_shape(&cp.get_pipeline("bad.name").await, StatusCode::BAD_REQUEST);
        assert_error_shape(&cp.create_run("bad.name", None).await, StatusCode::BAD_REQUEST);

        assert_error_shape(&cp.get_run("not-a-run-id").await, StatusCode::BAD_REQUEST);
        let unknown = uuid::Uuid::new_v4().to_string();
        assert_error_shape(&cp.get_run(&unknown).await, StatusCode::NOT_FOUND);
        assert_error_shape(&cp.cancel_run(&unknown).await, StatusCode::NOT_FOUND);

        assert_error_shape(&cp.list_runs(&[("status", "bogus")]).await, StatusCode::BAD_REQUEST);
        for limit in ["0", "-1", "abc"] {
            let response = cp.list_runs(&[("limit", limit)]).await;
            assert_error_shape(&response, StatusCode::BAD_REQUEST);
        }

        let bad_params: [Value; 12] = [
            json!({"params": {"1X": "a"}}),
            json!({"params": {"PATH": "/tmp"}}),
            json!({"params": {"LD_PRELOAD": "/tmp/x.so"}}),
            // Start-up hooks of the shells, Python and uv (issue 16).
            json!({"params": {"BASH_ENV": "/tmp/hook.sh"}}),
            json!({"params": {"ENV": "/tmp/hook.sh"}}),
            json!({"params": {"PYTHONSTARTUP": "/tmp/hook.py"}}),
            json!({"params": {"pythonpath": "/tmp"}}),
            json!({"params": {"UV_PROJECT": "/tmp"}}),
            json!({"params": {"A": 1}}),
            json!({"params": {"A": null}}),
            json!({"params": ["A"]}),
            json!({"params": "A=b"}),
        ];
        for body in &bad_params {
            let response = cp.create_run("hello", Some(body)).await;
            assert!(
                response.status == StatusCode::BAD_REQUEST,
                "params {body} should be rejected with 400, got {}: {}",
                response.status,
                response.text
            );
            assert_error_shape(&response, StatusCode::BAD_REQUEST);
        }

        let error = &cp.get_pipeline("no_such_pipeline").await.body["error"];
        assert_eq!(error["path"], "/api/v1/pipelines/no_such_pipeline", "{error}");
        // Nothing was created by the rejected requests.
        let runs = cp.list_runs(&[]).await;
        assert_eq!(runs.expect(StatusCode::OK)["items"], json!([]), "{}", runs.text);
    }
}

in_both_modes! {
    async fn pipelines_are_listed_with_their_settings(options) {
        let env = TestEnv::start(options.runners(0)).await;
        let cp = env.cp(0);

        let list = cp.list_pipelines().await;
        let pipelines = list.expect(StatusCode::OK).as_array().expect("an array").clone();
        let names: Vec<&str> = pipelines.iter().filter_map(|p| p["name"].as_str()).collect();
        for name in ["hello", "fails", "slow", "shell", "with_requirements", "quick", "counter"] {
            assert!(names.contains(&name), "{name} missing from {names:?}");
        }
        for p in &pipelines {
            for field in ["name", "description", "image", "command", "has_requirements", "timeout_seconds"] {
                assert!(p.get(field).is_some(), "pipeline lacks {field}: {p}");
            }
        }

        let shell = cp.get_pipeline("shell").await;
        let shell = shell.expect(StatusCode::OK);
        assert_eq!(shell["image"], env.dev.busybox_image.as_str(), "{shell}");
        assert_eq!(shell["command"], json!(["sh", "/app/run.sh"]), "{shell}");
        assert_eq!(shell["timeout_seconds"], 60, "{shell}");
        assert_eq!(shell["has_requirements"], false, "{shell}");

        let with_requirements = cp.get_pipeline("with_requirements").await;
        let with_requirements = with_requirements.expect(StatusCode::OK);
        assert_eq!(with_requirements["has_requirements"], true, "{with_requirements}");
        assert_eq!(with_requirements["image"], env.dev.worker_base_image.as_str(), "{with_requirements}");
    }
}

in_both_modes! {
    async fn runs_are_listed_newest_first_across_pages(options) {
        // No runner: the runs stay queued, which is all listing needs.
        let env = TestEnv::start(options.runners(0)).await;
        let cp = env.cp(0);

        let mut created = Vec::new();
        for i in 0..5 {
            let mark = format!("page-{i}");
            created.push(env.run_pipeline("quick", &[("FASTFLOW_MARK", &mark)]).await.id);
        }
        let newest_first: Vec<String> = created.iter().rev().cloned().collect();

        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        let mut page_sizes = Vec::new();
        loop {
            let mut query = vec![("limit", "2".to_string()), ("pipeline", "quick".to_string())];
            if let Some(c) = &cursor {
                query.push(("cursor", c.clone()));
            }
            let query: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let page = cp.list_runs(&query).await;
            let body = page.expect(StatusCode::OK);
            let items = body["items"].as_array().expect("items array");
            page_sizes.push(items.len());
            seen.extend(items.iter().map(|r| tests::Run::from_json(r).id));
            cursor = match &body["next_cursor"] {
                Value::Null => None,
                Value::String(c) => Some(c.clone()),
                other => panic!("next_cursor is neither null nor a string: {other}"),
            };
            if cursor.is_none() || page_sizes.len() > 5 {
                break;
            }
        }
        assert_eq!(seen, newest_first, "pages (sizes {page_sizes:?}) are not the runs newest first");
        assert_eq!(page_sizes, vec![2, 2, 1]);

        let queued = cp.list_runs(&[("status", "queued"), ("limit", "10")]).await;
        assert_eq!(queued.expect(StatusCode::OK)["items"].as_array().map(Vec::len), Some(5), "{}", queued.text);
        let none = cp.list_runs(&[("pipeline", "hello")]).await;
        assert_eq!(none.expect(StatusCode::OK)["items"], json!([]));
    }
}
