//! The control plane's HTTP API, as the benchmark uses it: like any script, with an API
//! token (`Authorization: Bearer`, on every request, log streams included).

use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::sse::SseStream;

/// Any single request (not a stream) that takes longer is an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone)]
pub struct Api {
    pub base_url: String,
    http: reqwest::Client,
    /// Sent with every request; `None` only for checks that credentials are required.
    token: Option<String>,
}

/// The fields of a run the benchmark reads.
#[derive(Debug, Clone, Deserialize)]
pub struct Run {
    pub id: String,
    pub status: String,
    #[serde(default)]
    pub failure_reason: Option<String>,
    #[serde(default)]
    pub error_message: Option<String>,
    /// When the claim took it (set by the control plane).
    #[serde(default)]
    pub started_at: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(default)]
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl Run {
    /// An error naming why the run did not succeed.
    pub fn expect_success(&self) -> anyhow::Result<()> {
        if self.status != "success" {
            bail!("run {} ended {} ({:?}: {:?})", self.id, self.status, self.failure_reason, self.error_message);
        }
        Ok(())
    }
}

#[derive(Deserialize)]
struct Page {
    items: Vec<Run>,
    #[serde(default)]
    next_cursor: Option<String>,
}

impl Api {
    /// A client of `base_url` sending `token` (an `ff_…` API token) with every request.
    pub fn new(base_url: String, token: Option<&str>) -> anyhow::Result<Self> {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = token {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .context("the API token is not a valid header value")?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        // Loopback only: never route through a proxy from the environment.
        let http = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(256)
            .default_headers(headers)
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Self { base_url, http, token: token.map(str::to_string) })
    }

    /// The same control plane without credentials.
    pub fn without_token(&self) -> anyhow::Result<Self> {
        Self::new(self.base_url.clone(), None)
    }

    /// Whether this client sends an API token.
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    pub async fn health_ok(&self) -> bool {
        let request = self.http.get(format!("{}/health", self.base_url)).timeout(Duration::from_secs(5));
        request.send().await.is_ok_and(|r| r.status().is_success())
    }

    pub async fn runner_ids(&self) -> anyhow::Result<Vec<String>> {
        let url = format!("{}/api/v1/runners", self.base_url);
        let body: Value = self.get_json(&url).await?;
        let ids = body
            .as_array()
            .or_else(|| body.get("items").and_then(Value::as_array))
            .map(|runners| runners.iter().filter_map(|r| r.get("id")?.as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        Ok(ids)
    }

    /// `POST /api/v1/runners/registration-tokens` (admins) with `body`, e.g.
    /// `{"single_use": false}`; the token's value (shown only in this answer).
    pub async fn create_registration_token(&self, body: &Value) -> anyhow::Result<String> {
        let url = format!("{}/api/v1/runners/registration-tokens", self.base_url);
        let response = self
            .http
            .post(&url)
            .json(body)
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .with_context(|| format!("POST {url}"))?;
        let status = response.status();
        let text = response.text().await.with_context(|| format!("POST {url}: reading the body"))?;
        if status.as_u16() != 201 {
            bail!("POST {url}: HTTP {status}: {text}");
        }
        let created: Value = serde_json::from_str(&text).with_context(|| format!("POST {url}: unexpected body"))?;
        created
            .get("token")
            .and_then(Value::as_str)
            .map(str::to_string)
            .with_context(|| format!("POST {url}: the answer holds no token"))
    }

    /// `POST /api/v1/pipelines/{name}/run`; the created run.
    pub async fn create_run(&self, pipeline: &str, params: &[(&str, String)]) -> anyhow::Result<Run> {
        let params: serde_json::Map<String, Value> = params.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
        let url = format!("{}/api/v1/pipelines/{pipeline}/run", self.base_url);
        let response = self
            .http
            .post(&url)
            .json(&json!({ "params": params }))
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .with_context(|| format!("POST {url}"))?;
        let status = response.status();
        let text = response.text().await.with_context(|| format!("POST {url}: reading the body"))?;
        if status.as_u16() != 201 {
            bail!("POST {url}: HTTP {status}: {text}");
        }
        serde_json::from_str(&text).with_context(|| format!("POST {url}: unexpected body {text}"))
    }

    pub async fn get_run(&self, id: &str) -> anyhow::Result<Run> {
        self.get_json(&format!("{}/api/v1/runs/{id}", self.base_url)).await
    }

    /// One page of `GET /api/v1/runs` with the given query string.
    pub async fn list_runs(&self, query: &str) -> anyhow::Result<Vec<Run>> {
        let page: Page = self.get_json(&format!("{}/api/v1/runs?{query}", self.base_url)).await?;
        Ok(page.items)
    }

    /// Every run matching `query` (e.g. `pipeline=x`), newest first, 500 a page.
    pub async fn list_all_runs(&self, query: &str) -> anyhow::Result<Vec<Run>> {
        let mut runs = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut url = format!("{}/api/v1/runs?{query}&limit=500", self.base_url);
            if let Some(cursor) = &cursor {
                url.push_str(&format!("&cursor={cursor}"));
            }
            let page: Page = self.get_json(&url).await?;
            runs.extend(page.items);
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(runs),
            }
        }
    }

    /// One timed `GET` whose body is read and dropped; `Ok(status)` or a transport error.
    pub async fn get_status(&self, path_and_query: &str) -> Result<u16, reqwest::Error> {
        let response =
            self.http.get(format!("{}{path_and_query}", self.base_url)).timeout(REQUEST_TIMEOUT).send().await?;
        let status = response.status().as_u16();
        response.bytes().await?;
        Ok(status)
    }

    /// Polls the run every `every` until it is final (success, failed or cancelled).
    pub async fn wait_final(&self, id: &str, every: Duration) -> anyhow::Result<Run> {
        loop {
            let run = self.get_run(id).await?;
            if matches!(run.status.as_str(), "success" | "failed" | "cancelled") {
                return Ok(run);
            }
            tokio::time::sleep(every).await;
        }
    }

    /// Follows the run's SSE log stream until `end`; returns the final run.
    pub async fn wait_end(&self, id: &str) -> anyhow::Result<Run> {
        let mut stream = self.stream_logs(id).await?;
        while let Some(event) = stream.next_event().await? {
            if event.event == "end" {
                return serde_json::from_str(&event.data).with_context(|| format!("end event of {id}: {}", event.data));
            }
        }
        bail!("the log stream of run {id} ended without an `end` event")
    }

    pub async fn stream_logs(&self, id: &str) -> anyhow::Result<SseStream> {
        let url = format!("{}/api/v1/runs/{id}/logs/stream", self.base_url);
        let response = self.http.get(&url).send().await.with_context(|| format!("GET {url}"))?;
        if !response.status().is_success() {
            bail!("GET {url}: HTTP {}", response.status());
        }
        Ok(SseStream::new(response))
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> anyhow::Result<T> {
        let response =
            self.http.get(url).timeout(REQUEST_TIMEOUT).send().await.with_context(|| format!("GET {url}"))?;
        let status = response.status();
        let text = response.text().await.with_context(|| format!("GET {url}: reading the body"))?;
        if !status.is_success() {
            bail!("GET {url}: HTTP {status}: {text}");
        }
        serde_json::from_str(&text).with_context(|| format!("GET {url}: unexpected body {text}"))
    }
}
