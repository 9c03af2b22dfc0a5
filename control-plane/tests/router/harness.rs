//! The router over the single node's seams in a temporary directory (SQLite in
//! `DATA_DIR`, log files in `LOGS_DIR`, the in-process bus; no runner is
//! started, so runs stay queued), driven with `tower::ServiceExt::oneshot`.
//! Every route's first tests belong in this crate: `TestApp::new`, one
//! request helper, and `Reply` to read the answer.
//!
//! Requests are authenticated like a real client's: `send` adds the bearer token of
//! an admin created through the auth domain (as `control-plane user create` does);
//! `send_as` picks other credentials, `send_anonymous` none.

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use control_plane::auth::{Role, tokens, users};
use control_plane::config::Source;
use control_plane::http::ApiState;
use control_plane::{Config, Context, ControlPlane};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tower::ServiceExt;
use uuid::Uuid;

pub struct TestApp {
    pub app: Context,
    pub api: ApiState,
    pub dir: PathBuf,
    /// The bearer token of the admin `root` that `send` uses.
    pub admin_token: String,
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
        let app = node.context().clone();
        let root = users::create(
            &app.store,
            &users::NewUserRequest { username: "root", password: ADMIN_PASSWORD, role: Role::Admin },
        )
        .await
        .expect("the first admin");
        let request = tokens::NewTokenRequest { name: "router-tests", role: None, expires_at: None };
        let token = tokens::create(&app.store, &root, Role::Admin, &request).await.expect("an admin token");
        TestApp { app, api: node.api_state(), dir, admin_token: token.token.into_inner(), _node: node }
    }

    /// Adds a pipeline folder: `files` are (path inside the folder, content).
    pub fn add_pipeline(&self, name: &str, files: &[(&str, &str)]) {
        let folder = self.dir.join("pipelines").join(name);
        std::fs::create_dir_all(&folder).expect("pipeline folder");
        for (path, content) in files {
            write(&folder.join(path), content);
        }
    }

    /// Sends one request as the admin (unless it carries credentials of its own).
    pub async fn send(&self, mut request: Request<Body>) -> Reply {
        let headers = request.headers_mut();
        if !headers.contains_key(header::AUTHORIZATION) && !headers.contains_key(header::COOKIE) {
            let bearer = format!("Bearer {}", self.admin_token);
            headers.insert(header::AUTHORIZATION, bearer.parse().expect("header value"));
        }
        self.send_anonymous(request).await
    }

    /// Sends one request with the bearer token `token`.
    pub async fn send_as(&self, token: &str, mut request: Request<Body>) -> Reply {
        let bearer = format!("Bearer {token}");
        request.headers_mut().insert(header::AUTHORIZATION, bearer.parse().expect("header value"));
        self.send_anonymous(request).await
    }

    /// Sends one request exactly as built (no credentials unless it has its own).
    pub async fn send_anonymous(&self, request: Request<Body>) -> Reply {
        let response =
            control_plane::http::router(self.api.clone()).oneshot(request).await.expect("the router is infallible");
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

    /// A user with `role` (password [`USER_PASSWORD`]) and a bearer token of theirs.
    pub async fn user_with_token(&self, name: &str, role: Role) -> (Uuid, String) {
        let request = users::NewUserRequest { username: name, password: USER_PASSWORD, role };
        let user = users::create(&self.app.store, &request).await.expect("a user");
        let request = tokens::NewTokenRequest { name: "tests", role: None, expires_at: None };
        let token = tokens::create(&self.app.store, &user, role, &request).await.expect("a token");
        (user.id, token.token.into_inner())
    }

    /// Logs `username` in through the API; returns the cookie pair and the CSRF token.
    pub async fn login(&self, username: &str, password: &str) -> (String, String) {
        let reply = self
            .send_anonymous(
                request(Method::POST, "/api/v1/auth/login")
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Body::from(serde_json::json!({ "username": username, "password": password }).to_string()))
                    .expect("request"),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        let set_cookie = reply.header("set-cookie").expect("a session cookie").to_owned();
        let pair = set_cookie.split(';').next().expect("name=value").to_owned();
        (pair, reply.json["csrf_token"].as_str().expect("a CSRF token").to_owned())
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

/// The password of the harness's admin `root`.
pub const ADMIN_PASSWORD: &str = "root password for router tests";
/// The password of users made by [`TestApp::user_with_token`].
pub const USER_PASSWORD: &str = "user password for router tests";

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
