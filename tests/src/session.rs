//! A browser's view of the API: a login session. The session cookie lives in a small
//! cookie jar (filled from `Set-Cookie`, sent back as `Cookie`) and the CSRF token from
//! the login answer is remembered. [`Session::change`] sends a change as the dashboard
//! would (same `Origin`, `X-CSRF-Token`); [`Session::request`] builds one with the
//! cookie only, for tests that leave something out or send another `Origin`.
//!
//! Cookies are not scoped by port (RFC 6265), so one browser sends the same cookie to
//! every replica of a test: [`Session::at`] is the same jar talking to another one.

use std::sync::{Arc, Mutex};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::api::{ApiResponse, REQUEST_TIMEOUT, http_client, into_api_response, open_sse};
use crate::sse::SseStream;

/// The session cookie's name over plain http.
pub const SESSION_COOKIE: &str = "fastflow_session";
/// Its name when `PUBLIC_URL` is https.
pub const SECURE_SESSION_COOKIE: &str = "__Host-fastflow_session";

/// What a browser keeps for one site: cookies and the page's CSRF token.
#[derive(Default)]
struct Jar {
    cookies: Vec<(String, String)>,
    csrf_token: Option<String>,
}

/// One browser, signed in or not, talking to one replica.
#[derive(Clone)]
pub struct Session {
    pub base_url: String,
    /// The `Origin` of the pages sending this browser's requests.
    origin: String,
    http: reqwest::Client,
    jar: Arc<Mutex<Jar>>,
}

/// Never prints the cookies or the CSRF token.
impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("base_url", &self.base_url).finish_non_exhaustive()
    }
}

impl Session {
    /// A browser with an empty cookie jar.
    pub fn new(base_url: String) -> Self {
        Self { origin: base_url.clone(), base_url, http: http_client(), jar: Arc::default() }
    }

    /// The same browser (same cookies and CSRF token) talking to another replica, from
    /// a page of that replica's origin.
    pub fn at(&self, base_url: &str) -> Self {
        Self { base_url: base_url.to_string(), origin: base_url.to_string(), ..self.clone() }
    }

    /// The same browser (same jar) on pages of `origin` (e.g. the `PUBLIC_URL`'s, or
    /// another site's).
    pub fn with_origin(&self, origin: &str) -> Self {
        Self { origin: origin.to_string(), ..self.clone() }
    }

    /// The `Origin` this browser's pages send: by default the replica's own,
    /// `http://127.0.0.1:<port>`.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The value of cookie `name` in the jar.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.lock().cookies.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone())
    }

    /// The session cookie's value (either name), if the jar holds one.
    pub fn session_cookie(&self) -> Option<String> {
        self.cookie(SESSION_COOKIE).or_else(|| self.cookie(SECURE_SESSION_COOKIE))
    }

    /// Puts a cookie in the jar, as another page of the site (or an attacker
    /// planting a session id) could.
    pub fn set_cookie(&self, name: &str, value: &str) {
        store_cookie(&mut self.lock().cookies, name, value);
    }

    /// The CSRF token of the last successful login.
    pub fn csrf_token(&self) -> Option<String> {
        self.lock().csrf_token.clone()
    }

    /// `POST /api/v1/auth/login` as the login page sends it (JSON, same origin, with
    /// whatever cookie the jar holds). On 200 the jar takes the new cookie and the
    /// CSRF token is remembered.
    pub async fn login(&self, username: &str, password: &str) -> ApiResponse {
        let body = json!({ "username": username, "password": password });
        let request = self.browser_request(Method::POST, "/api/v1/auth/login").json(&body);
        let response = self.send(request, "POST /api/v1/auth/login").await;
        if response.status == StatusCode::OK {
            let csrf = response.body["csrf_token"].as_str().map(str::to_string);
            assert!(
                csrf.as_deref().is_some_and(|c| !c.is_empty()),
                "the login answer has no csrf_token: {}",
                response.text
            );
            self.lock().csrf_token = csrf;
        }
        response
    }

    /// `POST /api/v1/auth/logout` from a page of the site.
    pub async fn logout(&self) -> ApiResponse {
        let request = self.browser_request(Method::POST, "/api/v1/auth/logout");
        self.send(request, "POST /api/v1/auth/logout").await
    }

    /// `GET path` with the cookie.
    pub async fn get(&self, path: &str) -> ApiResponse {
        self.send(self.request(Method::GET, path), &format!("GET {path}")).await
    }

    /// `GET /api/v1/auth/me` with the cookie.
    pub async fn me(&self) -> ApiResponse {
        self.get("/api/v1/auth/me").await
    }

    /// A change as the site's own pages make it: the cookie, `Origin` and
    /// `Sec-Fetch-Site: same-origin`, `X-CSRF-Token`, and `body` as JSON (None: no body).
    pub async fn change(&self, method: Method, path: &str, body: Option<&Value>) -> ApiResponse {
        let what = format!("{method} {path}");
        let mut request = self.browser_request(method, path);
        if let Some(csrf) = self.csrf_token() {
            request = request.header("x-csrf-token", csrf);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        self.send(request, &what).await
    }

    /// A request carrying only the jar's cookies (no CSRF token, no `Origin`).
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base_url)).timeout(REQUEST_TIMEOUT);
        match self.cookie_header() {
            Some(cookies) => request.header(reqwest::header::COOKIE, cookies),
            None => request,
        }
    }

    /// Sends `request`; the jar takes the answer's `Set-Cookie`s.
    pub async fn send(&self, request: reqwest::RequestBuilder, what: &str) -> ApiResponse {
        let response = into_api_response(request.send().await, what).await;
        let mut jar = self.lock();
        for value in response.headers.get_all(reqwest::header::SET_COOKIE) {
            let text = value.to_str().unwrap_or_else(|_| panic!("{what}: Set-Cookie is not text: {value:?}"));
            apply_set_cookie(&mut jar.cookies, text);
        }
        response
    }

    /// The run's SSE log stream with the cookie, as the browser's `EventSource` opens
    /// it (it cannot send an `Authorization` header). Panics unless 200 `text/event-stream`.
    pub async fn stream_logs(&self, run_id: &str) -> SseStream {
        let mut request = self
            .http
            .get(format!("{}/api/v1/runs/{run_id}/logs/stream", self.base_url))
            .header("accept", "text/event-stream");
        if let Some(cookies) = self.cookie_header() {
            request = request.header(reqwest::header::COOKIE, cookies);
        }
        open_sse(request, run_id, &self.base_url).await
    }

    /// [`Self::request`] plus what a browser adds to a request of the site's own pages.
    fn browser_request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.request(method, path).header("origin", self.origin()).header("sec-fetch-site", "same-origin")
    }

    fn cookie_header(&self) -> Option<String> {
        let jar = self.lock();
        (!jar.cookies.is_empty())
            .then(|| jar.cookies.iter().map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>().join("; "))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Jar> {
        self.jar.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn store_cookie(cookies: &mut Vec<(String, String)>, name: &str, value: &str) {
    cookies.retain(|(n, _)| n != name);
    cookies.push((name.to_string(), value.to_string()));
}

/// What one `Set-Cookie` header says: `(name, value, deletes)`; a cookie deletes
/// itself with an empty value or `Max-Age` ≤ 0.
pub fn parse_set_cookie(header: &str) -> Option<(String, String, bool)> {
    let mut parts = header.split(';');
    let (name, value) = parts.next()?.trim().split_once('=')?;
    let (name, value) = (name.trim(), value.trim().trim_matches('"'));
    if name.is_empty() {
        return None;
    }
    let expired = parts.filter_map(|attr| attr.trim().split_once('=')).any(|(key, v)| {
        key.trim().eq_ignore_ascii_case("max-age") && v.trim().parse::<i64>().is_ok_and(|age| age <= 0)
    });
    Some((name.to_string(), value.to_string(), expired || value.is_empty()))
}

fn apply_set_cookie(cookies: &mut Vec<(String, String)>, header: &str) {
    match parse_set_cookie(header) {
        Some((name, _, true)) => cookies.retain(|(n, _)| *n != name),
        Some((name, value, false)) => store_cookie(cookies, &name, &value),
        None => panic!("malformed Set-Cookie: {header:?}"),
    }
}

/// The `Set-Cookie` header of `response` that sets cookie `name` (the whole header).
pub fn set_cookie_header<'a>(response: &'a ApiResponse, name: &str) -> Option<&'a str> {
    response
        .headers
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| parse_set_cookie(v).is_some_and(|(n, _, _)| n == name))
}

/// The attributes of a `Set-Cookie` header, lowercased (`httponly`, `samesite=lax`,
/// `path=/`, `secure`, `max-age=…`).
pub fn cookie_attributes(header: &str) -> Vec<String> {
    header.split(';').skip(1).map(|a| a.trim().to_ascii_lowercase()).filter(|a| !a.is_empty()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_cookie_sets_replaces_and_deletes() {
        let mut jar = Vec::new();
        apply_set_cookie(&mut jar, "fastflow_session=abc; Path=/; HttpOnly; SameSite=Lax; Max-Age=604800");
        apply_set_cookie(&mut jar, "other=1");
        assert_eq!(jar, vec![("fastflow_session".to_string(), "abc".to_string()), ("other".into(), "1".into())]);
        apply_set_cookie(&mut jar, "fastflow_session=def; Max-Age=10");
        assert_eq!(jar[1], ("fastflow_session".to_string(), "def".to_string()));
        apply_set_cookie(&mut jar, "fastflow_session=; Path=/; Max-Age=0");
        assert_eq!(jar, vec![("other".to_string(), "1".to_string())]);
        apply_set_cookie(&mut jar, "other=x; max-age=-1");
        assert!(jar.is_empty());
    }

    #[test]
    fn attributes_are_listed_lowercased() {
        let header = "__Host-fastflow_session=v; Path=/; HttpOnly; SameSite=Lax; Secure";
        assert_eq!(parse_set_cookie(header), Some(("__Host-fastflow_session".into(), "v".into(), false)));
        assert_eq!(cookie_attributes(header), ["path=/", "httponly", "samesite=lax", "secure"]);
        assert_eq!(parse_set_cookie("garbage"), None);
    }
}
