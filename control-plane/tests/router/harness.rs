//! The router over the single node's seams in a temporary directory (SQLite in
//! `DATA_DIR`, log files in `LOGS_DIR`, the in-process bus; no runner is
//! started, so runs stay queued), driven with `tower::ServiceExt::oneshot`.
//! Every route's first tests belong in this crate: `TestApp::new`, one
//! request helper, and `Reply` to read the answer.

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use control_plane::config::Source;
use control_plane::{Config, Context, ControlPlane};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tower::ServiceExt;
use uuid::Uuid;

pub struct TestApp {
    pub app: Context,
    pub dir: PathBuf,
    /// Holds the `DATA_DIR` lock while the test runs.
    _node: ControlPlane,
}

impl TestApp {
    /// A fresh node with the `hello` pipeline and default settings.
    pub async fn new() -> TestApp {
        TestApp::with_env(&[]).await
    }

    /// A fresh node; `vars` are extra environment settings (`MAX_CONCURRENT_RUNS`, …).
    pub async fn with_env(vars: &[(&str, &str)]) -> TestApp {
        let dir = std::env::temp_dir().join(format!("fastflow-router-{}", Uuid::new_v4()));
        write(&dir.join("pipelines/hello/main.py"), "print('hello')\n");
        let mut env: HashMap<String, String> =
            [("DATA_DIR", dir.join("data")), ("LOGS_DIR", dir.join("logs")), ("PIPELINES_DIR", dir.join("pipelines"))]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.display().to_string()))
                .collect();
        env.extend(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let config = Config::from_source(&Source(&move |name| env.get(name).cloned())).expect("valid test config");
        let node = ControlPlane::connect(config).await.expect("single-node seams in a temp dir");
        TestApp { app: node.context().clone(), dir, _node: node }
    }

    /// Adds a pipeline folder: `files` are (path inside the folder, content).
    pub fn add_pipeline(&self, name: &str, files: &[(&str, &str)]) {
        let folder = self.dir.join("pipelines").join(name);
        std::fs::create_dir_all(&folder).expect("pipeline folder");
        for (path, content) in files {
            write(&folder.join(path), content);
        }
    }

    /// Sends one request through the whole router (middleware included).
    pub async fn send(&self, request: Request<Body>) -> Reply {
        let response =
            control_plane::http::router(self.app.clone()).oneshot(request).await.expect("the router is infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), 16 * 1024 * 1024).await.expect("response body");
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply { status, headers, text, json }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(request(Method::GET, path).body(Body::empty()).expect("request")).await
    }

    /// A `POST` with no body and no content type, as `curl -X POST` sends.
    pub async fn post_empty(&self, path: &str) -> Reply {
        self.send(request(Method::POST, path).body(Body::empty()).expect("request")).await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Reply {
        let request = request(Method::POST, path)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .expect("request");
        self.send(request).await
    }

    /// Starts a run of `pipeline` and returns its id.
    pub async fn start_run(&self, pipeline: &str) -> Uuid {
        let reply = self.post_empty(&format!("/api/v1/pipelines/{pipeline}/run")).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
        reply.json["id"].as_str().and_then(|id| id.parse().ok()).expect("a run id")
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A request builder with a loopback `Host`, as a local client sends.
pub fn request(method: Method, path: &str) -> axum::http::request::Builder {
    Request::builder().method(method).uri(path).header(header::HOST, "127.0.0.1:8000")
}

fn write(path: &Path, content: &str) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("test directory");
    }
    std::fs::write(path, content).expect("test file");
}

/// An answer: status, headers, the body as text and as JSON (`Null` when it is not JSON).
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
    pub json: Value,
}

impl Reply {
    /// Asserts the error body's status, `type` and `path`; returns its `details`.
    #[track_caller]
    pub fn error(&self, status: StatusCode, kind: &str) -> &Value {
        assert_eq!(self.status, status, "{}", self.text);
        let error = &self.json["error"];
        assert_eq!(error["type"], kind, "{}", self.text);
        assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()), "{}", self.text);
        assert!(error["path"].as_str().is_some_and(|p| p.starts_with('/')), "{}", self.text);
        assert!(error["timestamp"].is_string(), "{}", self.text);
        &error["details"]
    }

    /// Asserts a 400 `ValidationError` naming `field`.
    #[track_caller]
    pub fn invalid(&self, field: &str) {
        assert_eq!(self.error(StatusCode::BAD_REQUEST, "ValidationError")["field"], field, "{}", self.text);
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}
