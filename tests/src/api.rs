//! A client for one control plane: one method per HTTP endpoint (zero2prod style).
//!
//! Methods return what the server said (status + body) without asserting, so tests
//! can check error cases; `Run` is the typed view used by the happy paths.
//!
//! A client carries its credentials: the API token of [`ControlPlaneClient::with_token`]
//! goes with every request as `Authorization: Bearer`, SSE streams included; one made
//! with [`ControlPlaneClient::new`] or [`ControlPlaneClient::anonymous`] sends none.
//! (Login sessions are [`crate::Session`]s.)

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::Value;

use crate::s3::{Digest, DigestBuilder};
use crate::sse::SseStream;

/// A JSON answer.
#[derive(Debug, Clone)]
pub struct ApiResponse {
    pub status: StatusCode,
    pub body: Value,
    /// The raw body, for messages when it was not JSON.
    pub text: String,
    pub headers: reqwest::header::HeaderMap,
}

/// A non-JSON answer (run logs).
#[derive(Debug, Clone)]
pub struct TextResponse {
    pub status: StatusCode,
    pub content_type: Option<String>,
    pub body: Bytes,
}

/// The run JSON of the API contract. Deserializing it checks the shape.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Run {
    pub id: String,
    pub pipeline_name: String,
    pub status: String,
    pub attempt: i64,
    pub exit_code: Option<i64>,
    pub failure_reason: Option<String>,
    pub error_message: Option<String>,
    pub params: Value,
    pub runner_id: Option<String>,
    /// Who triggered it: `user:<name>` (a session) or `token:<token name>`.
    pub triggered_by: Option<String>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub log_size_bytes: Option<u64>,
}

const RUN_FIELDS: &[&str] = &[
    "id",
    "pipeline_name",
    "status",
    "attempt",
    "exit_code",
    "failure_reason",
    "error_message",
    "params",
    "runner_id",
    "triggered_by",
    "created_at",
    "started_at",
    "finished_at",
    "log_size_bytes",
];

impl Run {
    pub fn is_final(&self) -> bool {
        matches!(self.status.as_str(), "success" | "failed" | "cancelled")
    }

    /// Parses a run, checking every field of the contract is present (serde alone
    /// would accept a missing nullable field).
    pub fn from_json(value: &Value) -> Self {
        let object = value.as_object().unwrap_or_else(|| panic!("a run must be an object: {value:#}"));
        for field in RUN_FIELDS {
            assert!(object.contains_key(*field), "run JSON lacks `{field}`: {value:#}");
        }
        serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("not a run ({e}): {value:#}"))
    }
}

impl ApiResponse {
    /// Asserts the status and returns the body as a run.
    pub fn run(&self, expected: StatusCode) -> Run {
        self.expect(expected);
        Run::from_json(&self.body)
    }

    /// Asserts the status, showing the body otherwise.
    pub fn expect(&self, expected: StatusCode) -> &Value {
        assert_eq!(self.status, expected, "expected HTTP {expected}, got {}: {}", self.status, self.text);
        &self.body
    }

    /// `error.type` of an error body (`""` when there is none).
    pub fn error_type(&self) -> &str {
        self.body["error"]["type"].as_str().unwrap_or_default()
    }

    /// The value of a response header, if present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Asserts `response` is `status` with the contract's error body and `error.type`
/// `kind` (e.g. `Unauthorized`, `Forbidden`, `CsrfRejected`).
pub fn assert_error(response: &ApiResponse, status: StatusCode, kind: &str) {
    assert_error_shape(response, status);
    assert_eq!(response.error_type(), kind, "expected error type {kind}: {}", response.text);
}

/// Asserts `response` is `status` with the contract's error body:
/// `{"error":{"message","type","details","timestamp","path"}}`.
pub fn assert_error_shape(response: &ApiResponse, status: StatusCode) {
    response.expect(status);
    let error =
        response.body.get("error").unwrap_or_else(|| panic!("error body has no `error` object: {}", response.text));
    for field in ["message", "type", "timestamp", "path"] {
        assert!(error.get(field).is_some_and(Value::is_string), "error.{field} must be a string: {}", response.text);
    }
    assert!(error.get("details").is_some_and(Value::is_object), "error.details must be an object: {}", response.text);
    assert!(!error["message"].as_str().unwrap_or_default().is_empty(), "error.message is empty: {}", response.text);
    let timestamp = error["timestamp"].as_str().unwrap_or_default();
    assert!(
        chrono::DateTime::parse_from_rfc3339(timestamp).is_ok(),
        "error.timestamp is not RFC 3339: {}",
        response.text
    );
    assert!(
        error["path"].as_str().unwrap_or_default().starts_with('/'),
        "error.path is not a request path: {}",
        response.text
    );
}

/// Client for one control-plane replica, with an API token or without credentials.
#[derive(Clone)]
pub struct ControlPlaneClient {
    pub base_url: String,
    http: reqwest::Client,
    /// Sent as `Authorization: Bearer <token>` with every request.
    token: Option<String>,
}

/// Never prints the token.
impl std::fmt::Debug for ControlPlaneClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlaneClient")
            .field("base_url", &self.base_url)
            .field("token", &self.token.as_ref().map(|_| "…"))
            .finish()
    }
}

pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) fn http_client() -> reqwest::Client {
    reqwest::Client::builder().connect_timeout(Duration::from_secs(5)).build().expect("cannot build HTTP client")
}

impl ControlPlaneClient {
    /// A client without credentials (only `/health` and the login answer it).
    pub fn new(base_url: String) -> Self {
        Self { base_url, http: http_client(), token: None }
    }

    /// The same replica with the API token `token` (`ff_…`).
    pub fn with_token(&self, token: &str) -> Self {
        Self { token: Some(token.to_string()), ..self.clone() }
    }

    /// The same replica without credentials.
    pub fn anonymous(&self) -> Self {
        Self { token: None, ..self.clone() }
    }

    /// The same credentials, requests sent from the local address `ip` (e.g.
    /// `127.0.0.2`: another client address for the login throttle).
    pub fn from_address(&self, ip: std::net::IpAddr) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .local_address(ip)
            .build()
            .expect("cannot build HTTP client");
        Self { http, ..self.clone() }
    }

    /// The API token this client sends, if any.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// A request to `path` with this client's credentials (nothing else set), for
    /// tests that shape a request themselves; send it with [`Self::send`].
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, self.url(path)).timeout(REQUEST_TIMEOUT);
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Sends `request` and reads the answer (JSON, or empty).
    pub async fn send(&self, request: reqwest::RequestBuilder, what: &str) -> ApiResponse {
        into_api_response(request.send().await, what).await
    }

    /// `method path` with `body` as JSON (None: no body at all).
    pub async fn json(&self, method: Method, path: &str, body: Option<&Value>) -> ApiResponse {
        let what = format!("{method} {path}");
        let mut request = self.request(method, path);
        if let Some(body) = body {
            request = request.json(body);
        }
        self.send(request, &what).await
    }

    pub async fn health(&self) -> ApiResponse {
        self.get_json("/health", &[]).await
    }

    pub async fn list_pipelines(&self) -> ApiResponse {
        self.get_json("/api/v1/pipelines", &[]).await
    }

    pub async fn get_pipeline(&self, name: &str) -> ApiResponse {
        self.get_json(&format!("/api/v1/pipelines/{name}"), &[]).await
    }

    /// `POST /api/v1/pipelines/{name}/run` with `body` as-is (None: no body).
    pub async fn create_run(&self, name: &str, body: Option<&Value>) -> ApiResponse {
        self.json(Method::POST, &format!("/api/v1/pipelines/{name}/run"), body).await
    }

    /// `GET /api/v1/runs` with any of `pipeline`, `status`, `limit`, `cursor`.
    pub async fn list_runs(&self, query: &[(&str, &str)]) -> ApiResponse {
        self.get_json("/api/v1/runs", query).await
    }

    pub async fn get_run(&self, id: &str) -> ApiResponse {
        self.get_json(&format!("/api/v1/runs/{id}"), &[]).await
    }

    pub async fn cancel_run(&self, id: &str) -> ApiResponse {
        self.json(Method::POST, &format!("/api/v1/runs/{id}/cancel"), None).await
    }

    /// `POST /api/v1/runs/{id}/cancel` with `body` as JSON (e.g. `{"force": true}`).
    pub async fn cancel_run_with_body(&self, id: &str, body: &Value) -> ApiResponse {
        self.json(Method::POST, &format!("/api/v1/runs/{id}/cancel"), Some(body)).await
    }

    pub async fn list_runners(&self) -> ApiResponse {
        self.get_json("/api/v1/runners", &[]).await
    }

    /// `POST /api/v1/auth/login` (no cookie is kept: sessions are [`crate::Session`]s).
    pub async fn login(&self, username: &str, password: &str) -> ApiResponse {
        let body = serde_json::json!({ "username": username, "password": password });
        self.json(Method::POST, "/api/v1/auth/login", Some(&body)).await
    }

    /// `GET /api/v1/auth/me`.
    pub async fn me(&self) -> ApiResponse {
        self.get_json("/api/v1/auth/me", &[]).await
    }

    /// `PUT /api/v1/auth/password`.
    pub async fn change_password(&self, current: &str, new: &str) -> ApiResponse {
        let body = serde_json::json!({ "current_password": current, "new_password": new });
        self.json(Method::PUT, "/api/v1/auth/password", Some(&body)).await
    }

    /// `GET /api/v1/users`.
    pub async fn list_users(&self) -> ApiResponse {
        self.get_json("/api/v1/users", &[]).await
    }

    /// `POST /api/v1/users` with `{"username","password","role"}`.
    pub async fn create_user(&self, body: &Value) -> ApiResponse {
        self.json(Method::POST, "/api/v1/users", Some(body)).await
    }

    pub async fn get_user(&self, id: &str) -> ApiResponse {
        self.get_json(&format!("/api/v1/users/{id}"), &[]).await
    }

    /// `PUT /api/v1/users/{id}` with any of `{"role","disabled","password"}`.
    pub async fn update_user(&self, id: &str, body: &Value) -> ApiResponse {
        self.json(Method::PUT, &format!("/api/v1/users/{id}"), Some(body)).await
    }

    pub async fn delete_user(&self, id: &str) -> ApiResponse {
        self.json(Method::DELETE, &format!("/api/v1/users/{id}"), None).await
    }

    /// `GET /api/v1/tokens` (e.g. with `all=true`).
    pub async fn list_tokens(&self, query: &[(&str, &str)]) -> ApiResponse {
        self.get_json("/api/v1/tokens", query).await
    }

    /// `POST /api/v1/tokens` with `{"name","role"?,"expires_at"?}`.
    pub async fn create_token(&self, body: &Value) -> ApiResponse {
        self.json(Method::POST, "/api/v1/tokens", Some(body)).await
    }

    pub async fn revoke_token(&self, id: &str) -> ApiResponse {
        self.json(Method::DELETE, &format!("/api/v1/tokens/{id}"), None).await
    }

    /// `GET /api/v1/audit` with any of `actor`, `action`, `since`, `limit`, `cursor`.
    pub async fn audit(&self, query: &[(&str, &str)]) -> ApiResponse {
        self.get_json("/api/v1/audit", query).await
    }

    /// `GET /api/v1/runs/{id}/logs`, whole body in memory.
    pub async fn get_logs(&self, id: &str) -> TextResponse {
        self.get_logs_query(id, &[]).await
    }

    /// `GET /api/v1/runs/{id}/logs?…` (e.g. `attempt=2`).
    pub async fn get_logs_query(&self, id: &str, query: &[(&str, &str)]) -> TextResponse {
        let response = self
            .request(Method::GET, &format!("/api/v1/runs/{id}/logs"))
            .query(query)
            .timeout(Duration::from_secs(300))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET logs of {id} failed: {e}"));
        let status = response.status();
        let content_type = content_type(&response);
        let body = response.bytes().await.unwrap_or_else(|e| panic!("reading logs of {id} failed: {e}"));
        TextResponse { status, content_type, body }
    }

    /// `GET /api/v1/runs/{id}/logs` streamed into a length + SHA-256 (for huge logs).
    pub async fn get_logs_digest(&self, id: &str) -> (StatusCode, Digest) {
        let response = self
            .request(Method::GET, &format!("/api/v1/runs/{id}/logs"))
            .timeout(Duration::from_secs(600))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET logs of {id} failed: {e}"));
        let status = response.status();
        let mut digest = DigestBuilder::default();
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.unwrap_or_else(|e| panic!("reading logs of {id} failed: {e}"));
            digest.update(&chunk);
        }
        (status, digest.finish())
    }

    /// `GET /api/v1/runs/{id}/logs/stream`, optionally with `Last-Event-ID`.
    /// Panics unless the answer is 200 `text/event-stream`.
    pub async fn stream_logs(&self, id: &str, last_event_id: Option<u64>) -> SseStream {
        self.stream_logs_after(id, last_event_id.map(|l| l.to_string()).as_deref()).await
    }

    /// The log stream resumed after a raw event id (`<line>` or `<attempt>:<line>`).
    pub async fn stream_logs_after(&self, id: &str, last_event_id: Option<&str>) -> SseStream {
        // No overall timeout: the stream lasts as long as the run (the headers are bounded below).
        let mut request =
            self.http.get(self.url(&format!("/api/v1/runs/{id}/logs/stream"))).header("accept", "text/event-stream");
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(last) = last_event_id {
            request = request.header("last-event-id", last);
        }
        open_sse(request, id, &self.base_url).await
    }

    async fn get_json(&self, path: &str, query: &[(&str, &str)]) -> ApiResponse {
        let request = self.request(Method::GET, path).query(query);
        into_api_response(request.send().await, path).await
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }
}

/// Sends a log stream request; panics unless the answer is 200 `text/event-stream`.
pub(crate) async fn open_sse(request: reqwest::RequestBuilder, id: &str, base_url: &str) -> SseStream {
    let response = tokio::time::timeout(REQUEST_TIMEOUT, request.send())
        .await
        .unwrap_or_else(|_| panic!("log stream of {id}: no response headers within {REQUEST_TIMEOUT:?}"))
        .unwrap_or_else(|e| panic!("log stream of {id} failed: {e}"));
    let status = response.status();
    let content_type = content_type(&response);
    if status != StatusCode::OK {
        let text = response.text().await.unwrap_or_default();
        panic!("log stream of {id}: expected 200, got {status}: {text}");
    }
    assert!(
        content_type.as_deref().is_some_and(|c| c.starts_with("text/event-stream")),
        "log stream of {id}: content-type is {content_type:?}, not text/event-stream"
    );
    SseStream::new(response, format!("log stream of run {id} on {base_url}"))
}

fn content_type(response: &reqwest::Response) -> Option<String> {
    response.headers().get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string)
}

pub(crate) async fn into_api_response(result: reqwest::Result<reqwest::Response>, what: &str) -> ApiResponse {
    let response = result.unwrap_or_else(|e| panic!("{what}: request failed: {e}"));
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap_or_else(|e| panic!("{what}: reading the body failed: {e}"));
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: HTTP {status} body is not JSON ({e}): {text}"))
    };
    ApiResponse { status, body, text, headers }
}
