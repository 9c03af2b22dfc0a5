//! A client for one control plane: one method per HTTP endpoint (zero2prod style).
//!
//! Methods return what the server said (status + body) without asserting, so tests
//! can check error cases; `Run` is the typed view used by the happy paths.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use reqwest::StatusCode;
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

/// Client for one control-plane replica.
#[derive(Clone, Debug)]
pub struct ControlPlaneClient {
    pub base_url: String,
    http: reqwest::Client,
}

const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

impl ControlPlaneClient {
    pub fn new(base_url: String) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .expect("cannot build HTTP client");
        Self { base_url, http }
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
        let mut request = self.http.post(self.url(&format!("/api/v1/pipelines/{name}/run"))).timeout(REQUEST_TIMEOUT);
        if let Some(body) = body {
            request = request.json(body);
        }
        into_api_response(request.send().await, "POST run").await
    }

    /// `GET /api/v1/runs` with any of `pipeline`, `status`, `limit`, `cursor`.
    pub async fn list_runs(&self, query: &[(&str, &str)]) -> ApiResponse {
        self.get_json("/api/v1/runs", query).await
    }

    pub async fn get_run(&self, id: &str) -> ApiResponse {
        self.get_json(&format!("/api/v1/runs/{id}"), &[]).await
    }

    pub async fn cancel_run(&self, id: &str) -> ApiResponse {
        let request = self.http.post(self.url(&format!("/api/v1/runs/{id}/cancel"))).timeout(REQUEST_TIMEOUT);
        into_api_response(request.send().await, "POST cancel").await
    }

    /// `POST /api/v1/runs/{id}/cancel` with `body` as JSON (e.g. `{"force": true}`).
    pub async fn cancel_run_with_body(&self, id: &str, body: &Value) -> ApiResponse {
        let request =
            self.http.post(self.url(&format!("/api/v1/runs/{id}/cancel"))).json(body).timeout(REQUEST_TIMEOUT);
        into_api_response(request.send().await, "POST cancel").await
    }

    pub async fn list_runners(&self) -> ApiResponse {
        self.get_json("/api/v1/runners", &[]).await
    }

    /// `GET /api/v1/runs/{id}/logs`, whole body in memory.
    pub async fn get_logs(&self, id: &str) -> TextResponse {
        self.get_logs_query(id, &[]).await
    }

    /// `GET /api/v1/runs/{id}/logs?…` (e.g. `attempt=2`).
    pub async fn get_logs_query(&self, id: &str, query: &[(&str, &str)]) -> TextResponse {
        let response = self
            .http
            .get(self.url(&format!("/api/v1/runs/{id}/logs")))
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
            .http
            .get(self.url(&format!("/api/v1/runs/{id}/logs")))
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
        let mut request =
            self.http.get(self.url(&format!("/api/v1/runs/{id}/logs/stream"))).header("accept", "text/event-stream");
        if let Some(last) = last_event_id {
            request = request.header("last-event-id", last);
        }
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
        SseStream::new(response, format!("log stream of run {id} on {}", self.base_url))
    }

    async fn get_json(&self, path: &str, query: &[(&str, &str)]) -> ApiResponse {
        let request = self.http.get(self.url(path)).query(query).timeout(REQUEST_TIMEOUT);
        into_api_response(request.send().await, path).await
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }
}

fn content_type(response: &reqwest::Response) -> Option<String> {
    response.headers().get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string)
}

async fn into_api_response(result: reqwest::Result<reqwest::Response>, what: &str) -> ApiResponse {
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
