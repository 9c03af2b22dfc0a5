//! Router tests: every route's validation and error answers, without Postgres,
//! NATS or Docker (see `harness.rs`). Run with `cargo test -p control-plane --test router`.

mod auth;
mod harness;

use axum::body::Body;
use axum::http::{Method, StatusCode, header};
use control_plane::store::runs::{ArchivedLog, Claim, ClaimResult, Outcome};
use harness::{TestApp, request};
use serde_json::json;
use shared::RunStatus;
use std::collections::BTreeSet;
use std::time::Duration;
use uuid::Uuid;

#[tokio::test]
async fn health_and_unknown_paths() {
    let t = TestApp::new().await;
    let health = t.get("/health").await;
    assert_eq!(health.status, StatusCode::OK, "{}", health.text);
    assert_eq!(health.json["checks"], json!({ "database": "ok", "bus": "ok", "log_store": "ok" }));
    let missing = t.get("/api/v1/nope").await;
    missing.error(StatusCode::NOT_FOUND, "NotFound");
    assert_eq!(missing.json["error"]["path"], "/api/v1/nope");
    assert_eq!(t.get("/api/v1/runners").await.json, json!([]));
}

#[tokio::test]
async fn method_not_allowed_names_the_route_methods() {
    let t = TestApp::new().await;
    let reply = t.get("/api/v1/pipelines/hello/run").await;
    reply.error(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed");
    assert_eq!(reply.header("allow"), Some("POST"));
    let reply = t.post_empty("/api/v1/runs").await;
    reply.error(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed");
    assert_eq!(reply.header("allow"), Some("GET,HEAD"));
    let id = Uuid::new_v4();
    let reply = t.send(request(Method::DELETE, &format!("/api/v1/runs/{id}")).body(Body::empty()).expect("req")).await;
    assert_eq!(reply.header("allow"), Some("GET,HEAD"), "{}", reply.text);
}

#[tokio::test]
async fn malformed_ids_and_unknown_runs() {
    let t = TestApp::new().await;
    for path in ["/api/v1/runs/nope", "/api/v1/runs/nope/logs", "/api/v1/runs/nope/logs/stream"] {
        t.get(path).await.invalid("id");
    }
    t.post_empty("/api/v1/runs/nope/cancel").await.invalid("id");
    let id = Uuid::new_v4();
    for path in
        [format!("/api/v1/runs/{id}"), format!("/api/v1/runs/{id}/logs"), format!("/api/v1/runs/{id}/logs/stream")]
    {
        t.get(&path).await.error(StatusCode::NOT_FOUND, "NotFound");
    }
    t.post_empty(&format!("/api/v1/runs/{id}/cancel")).await.error(StatusCode::NOT_FOUND, "NotFound");
}

#[tokio::test]
async fn run_listing_checks_its_query() {
    let t = TestApp::new().await;
    t.get("/api/v1/runs?status=done").await.invalid("status");
    t.get("/api/v1/runs?limit=0").await.invalid("limit");
    t.get("/api/v1/runs?limit=501").await.invalid("limit");
    t.get("/api/v1/runs?limit=x").await.invalid("limit");
    t.get("/api/v1/runs?cursor=garbage").await.invalid("cursor");
    t.get("/api/v1/runs?sort=asc").await.invalid("sort");
    let empty = t.get("/api/v1/runs?pipeline=&status=").await;
    assert_eq!(empty.json, json!({ "items": [], "next_cursor": null }), "{}", empty.text);
}

#[tokio::test]
async fn pages_follow_the_cursor_newest_first() {
    let t = TestApp::new().await;
    let mut started = Vec::new();
    for _ in 0..5 {
        started.push(t.start_run("hello").await.to_string());
    }
    started.reverse();
    let mut seen = Vec::new();
    let mut cursor = String::new();
    for expected_len in [2, 2, 1] {
        let page = t.get(&format!("/api/v1/runs?limit=2&cursor={cursor}")).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.text);
        let items = page.json["items"].as_array().expect("items");
        assert_eq!(items.len(), expected_len, "{}", page.text);
        seen.extend(items.iter().map(|r| r["id"].as_str().unwrap_or_default().to_owned()));
        cursor = page.json["next_cursor"].as_str().unwrap_or_default().to_owned();
    }
    assert!(cursor.is_empty(), "the last page has no next_cursor");
    assert_eq!(seen, started);
    let queued = t.get("/api/v1/runs?status=queued&pipeline=hello&limit=500").await;
    assert_eq!(queued.json["items"].as_array().map(Vec::len), Some(5));
    let other = t.get("/api/v1/runs?pipeline=other").await;
    assert_eq!(other.json["items"], json!([]));
}

#[tokio::test]
async fn a_run_has_the_documented_fields() {
    let t = TestApp::new().await;
    let created = t.post_json("/api/v1/pipelines/hello/run", &json!({ "params": { "NAME": "x" } })).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let keys: BTreeSet<&str> = created.json.as_object().expect("object").keys().map(String::as_str).collect();
    let expected: BTreeSet<&str> = [
        "id",
        "pipeline_name",
        "pool",
        "status",
        "attempt",
        "trigger",
        "triggered_by",
        "params",
        "runner_id",
        "exit_code",
        "failure_reason",
        "error_message",
        "cancel_requested_at",
        "waiting_reason",
        "created_at",
        "started_at",
        "finished_at",
        "log_size_bytes",
        "log_expired_at",
    ]
    .into();
    assert_eq!(keys, expected);
    assert_eq!(created.json["status"], "queued");
    assert_eq!(created.json["triggered_by"], "token:router-tests", "who asked: the harness's admin token");
    assert_eq!(created.json["params"], json!({ "NAME": "x" }));
    let id = created.json["id"].as_str().expect("id");
    let shown = t.get(&format!("/api/v1/runs/{id}")).await;
    assert_eq!(shown.status, StatusCode::OK, "{}", shown.text);
    assert_eq!(shown.json["attempts"][0]["status"], "queued", "{}", shown.text);
    assert_eq!(shown.json["attempts"][0]["attempt"], 1);
    assert!(shown.json["attempts"][0].get("log_key").is_none());
    let log = t.get(&format!("/api/v1/runs/{id}/logs")).await;
    assert_eq!((log.status, log.text.as_str()), (StatusCode::OK, ""));
    assert_eq!(log.header("content-type"), Some("text/plain; charset=utf-8"));
    t.get(&format!("/api/v1/runs/{id}/logs?attempt=2")).await.invalid("attempt");
}

#[tokio::test]
async fn pipelines_catalog_and_bad_folders() {
    let t = TestApp::new().await;
    t.add_pipeline("broken", &[("pipeline.toml", "nonsense = 1\n")]);
    let list = t.get("/api/v1/pipelines").await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.text);
    let hello = t.get("/api/v1/pipelines/hello").await;
    assert_eq!(hello.json["name"], "hello", "{}", hello.text);
    assert_eq!(hello.json["resources"], json!({ "memory_mb": null, "cpus": null, "pids": null }));
    assert!(hello.json.get("env").is_none() && hello.json.get("dir").is_none());
    t.get("/api/v1/pipelines/nope").await.error(StatusCode::NOT_FOUND, "NotFound");
    t.post_empty("/api/v1/pipelines/nope/run").await.error(StatusCode::NOT_FOUND, "NotFound");
    t.get("/api/v1/pipelines/bad%20name").await.invalid("name");
    t.post_empty("/api/v1/pipelines/.hidden/run").await.invalid("name");
    t.get("/api/v1/pipelines/broken").await.error(StatusCode::UNPROCESSABLE_ENTITY, "PipelineMisconfigured");
    t.post_empty("/api/v1/pipelines/broken/run").await.error(StatusCode::UNPROCESSABLE_ENTITY, "PipelineMisconfigured");
}

#[tokio::test]
async fn start_checks_its_body() {
    let t = TestApp::new().await;
    let path = "/api/v1/pipelines/hello/run";
    t.post_json(path, &json!({ "bogus": 1 })).await.invalid("body");
    t.post_json(path, &json!({ "params": ["x"] })).await.invalid("params");
    t.post_json(path, &json!({ "params": { "1BAD": "x" } })).await.invalid("params.1BAD");
    t.post_json(path, &json!({ "params": { "N": 1 } })).await.invalid("params.N");
    let syntax = request(Method::POST, path).header(header::CONTENT_TYPE, "application/json").body(Body::from("{"));
    t.send(syntax.expect("req")).await.invalid("body");
    assert_eq!(t.post_json(path, &json!({ "params": null })).await.status, StatusCode::CREATED);
    assert_eq!(t.post_json(path, &json!({})).await.status, StatusCode::CREATED);
}

#[tokio::test]
async fn bodies_must_be_declared_json() {
    let t = TestApp::new().await;
    let id = t.start_run("hello").await;
    for path in ["/api/v1/pipelines/hello/run".to_owned(), format!("/api/v1/runs/{id}/cancel")] {
        for (content_type, body) in [
            (Some("text/plain"), "{}"),
            (Some("application/x-www-form-urlencoded"), ""),
            (Some("multipart/form-data; boundary=x"), ""),
            (None, "{}"),
        ] {
            let mut builder = request(Method::POST, &path);
            if let Some(content_type) = content_type {
                builder = builder.header(header::CONTENT_TYPE, content_type);
            }
            let reply = t.send(builder.body(Body::from(body)).expect("req")).await;
            reply.error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "UnsupportedMediaType");
        }
    }
    let declared = request(Method::POST, "/api/v1/pipelines/hello/run")
        .header(header::CONTENT_TYPE, "application/json; charset=utf-8")
        .body(Body::from("{}"));
    assert_eq!(t.send(declared.expect("req")).await.status, StatusCode::CREATED);
    // Without a content type only an empty body passes, as `curl -X POST` sends.
    let length = request(Method::POST, "/api/v1/pipelines/hello/run").header(header::CONTENT_LENGTH, "2");
    let reply = t.send(length.body(Body::from("{}")).expect("req")).await;
    reply.error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "UnsupportedMediaType");
    assert_eq!(t.post_empty(&format!("/api/v1/runs/{id}/cancel")).await.status, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn foreign_hosts_are_refused() {
    let t = TestApp::new().await;
    let with_host = |host: &str, path: &str| {
        axum::http::Request::builder().uri(path).header(header::HOST, host).body(Body::empty()).expect("req")
    };
    for host in ["localhost", "localhost:8000", "127.0.0.1:8000", "127.1.2.3", "[::1]:8000"] {
        assert_eq!(t.send(with_host(host, "/health")).await.status, StatusCode::OK, "{host}");
    }
    for path in ["/health", "/api/v1/runs", "/api/v1/nope"] {
        let reply = t.send(with_host("evil.example:8000", path)).await;
        let details = reply.error(StatusCode::MISDIRECTED_REQUEST, "MisdirectedRequest");
        assert_eq!(details["host"], "evil.example:8000");
    }
    let no_host = axum::http::Request::builder().uri("/health").body(Body::empty()).expect("req");
    t.send(no_host).await.error(StatusCode::MISDIRECTED_REQUEST, "MisdirectedRequest");

    let named = TestApp::with_env(&[("PUBLIC_URL", "https://ff.example.com"), ("ALLOWED_HOSTS", "ci.internal")]).await;
    for host in ["ff.example.com", "ff.example.com:443", "ci.internal:8000", "localhost"] {
        assert_eq!(named.send(with_host(host, "/api/v1/runs")).await.status, StatusCode::OK, "{host}");
    }
    assert_eq!(named.send(with_host("evil.example", "/health")).await.status, StatusCode::MISDIRECTED_REQUEST);
    let any = TestApp::with_env(&[("ALLOWED_HOSTS", "*")]).await;
    assert_eq!(any.send(with_host("evil.example", "/health")).await.status, StatusCode::OK);
}

#[tokio::test]
async fn cancelling_a_finished_run_conflicts() {
    let t = TestApp::new().await;
    let id = t.start_run("hello").await;
    let cancel = format!("/api/v1/runs/{id}/cancel");
    t.post_json(&cancel, &json!({ "force": "yes" })).await.invalid("body");
    t.post_json(&cancel, &json!({ "bogus": true })).await.invalid("body");
    let cancelled = t.post_json(&cancel, &json!({ "force": true })).await;
    assert_eq!(cancelled.status, StatusCode::ACCEPTED, "{}", cancelled.text);
    assert_eq!(cancelled.json["status"], "cancelled");
    let again = t.post_empty(&cancel).await;
    assert_eq!(again.error(StatusCode::CONFLICT, "Conflict")["status"], "cancelled");
}

#[tokio::test]
async fn a_full_node_rejects_under_the_reject_policy() {
    let t = TestApp::with_env(&[("MAX_CONCURRENT_RUNS", "1"), ("CONCURRENCY_POLICY", "reject")]).await;
    t.start_run("hello").await;
    let refused = t.post_empty("/api/v1/pipelines/hello/run").await;
    let details = refused.error(StatusCode::TOO_MANY_REQUESTS, "TooManyRuns");
    assert_eq!(details["max"], 1);
    assert_eq!(details["limit"], "MAX_CONCURRENT_RUNS");
    assert_eq!(refused.header("retry-after"), Some("5"));
}

#[tokio::test]
async fn an_expired_log_is_gone() {
    let t = TestApp::new().await;
    let id = t.start_run("hello").await;
    let store = &t.app.store;
    let run = store.get_run(id).await.expect("read").expect("the run");
    let claim = Claim {
        run_id: id,
        attempt: run.attempt,
        runner_id: "r1",
        pipeline_name: &run.pipeline_name,
        lease: Duration::from_secs(30),
        max_running: None,
        max_running_of_pipeline: None,
    };
    let claimed = store.claim_batch(&[claim]).await.expect("claim").pop();
    let Some(ClaimResult::Granted(held)) = claimed else { panic!("not granted") };
    let outcome = Outcome { status: RunStatus::Success, reason: None, exit_code: Some(0), error_message: None };
    let log = ArchivedLog { key: format!("runs/{id}/1.log"), size: 3 };
    store.end_attempt(&held.attempt_ref(), &outcome, Some(&log), None).await.expect("end").expect("held");
    assert_eq!(store.expire_logs(None, Some(Duration::ZERO), 10).await.expect("expire").len(), 1);
    for path in [format!("/api/v1/runs/{id}/logs"), format!("/api/v1/runs/{id}/logs/stream")] {
        let gone = t.get(&path).await;
        assert!(gone.error(StatusCode::GONE, "LogExpired")["log_expired_at"].is_string(), "{}", gone.text);
    }
    let shown = t.get(&format!("/api/v1/runs/{id}")).await;
    assert_eq!(shown.json["status"], "success");
    assert!(shown.json["log_expired_at"].is_string(), "{}", shown.text);
}
