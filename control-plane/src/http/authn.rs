//! Authentication and authorisation of every request (`guard`, a middleware), and
//! what handlers read from it (`Caller`, `ClientAddr`).
//!
//! Credentials are an `Authorization: Bearer ff_…` token or the session cookie.
//! Checks, in order: the route's entry in `policy::POLICY` (no entry: refused),
//! credentials (none or invalid: 401, except on public routes), the role (403), and
//! for a state change authenticated by the cookie the CSRF defences (403): the
//! browser's `Origin` / `Sec-Fetch-Site` must name this site and `X-CSRF-Token`
//! must carry the session's token. Bearer requests need no CSRF check: a browser
//! never adds that header on its own.

use super::ApiState;
use super::error::Error;
use super::policy::{self, Access, Decision};
use crate::auth::{Principal, Via};
use crate::config::Config;
use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::net::{IpAddr, SocketAddr};

/// The session cookie's name over plain http (a browser refuses `__Host-` there).
pub const COOKIE: &str = "fastflow_session";
/// Its name when `PUBLIC_URL` is https: `__Host-` binds it to this exact host,
/// path `/` and `Secure`, so a sibling subdomain cannot plant or shadow it.
pub const SECURE_COOKIE: &str = "__Host-fastflow_session";
/// The header that carries the session's CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The session cookie's name under this configuration.
pub fn cookie_name(config: &Config) -> &'static str {
    if secure_cookies(config) { SECURE_COOKIE } else { COOKIE }
}

fn secure_cookies(config: &Config) -> bool {
    config.public_url.as_ref().is_some_and(|url| url.https)
}

/// `Set-Cookie` for a new session (`max_age_seconds` 0: delete it).
pub fn session_cookie(config: &Config, value: &str, max_age_seconds: i64) -> HeaderValue {
    let secure = if secure_cookies(config) { "; Secure" } else { "" };
    let cookie =
        format!("{}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age_seconds}{secure}", cookie_name(config));
    // Session ids are base64url and the rest is ASCII: always a valid header value.
    HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static("fastflow_session=; Max-Age=0"))
}

/// What a request presented.
enum Credentials {
    None,
    Bearer(String),
    Cookie(String),
    /// An `Authorization` header in a scheme other than `Bearer`.
    Malformed,
}

fn credentials(headers: &HeaderMap, cookie: &str) -> Credentials {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value.to_str().unwrap_or("").trim();
        return match value.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() => {
                Credentials::Bearer(token.trim().to_owned())
            }
            _ => Credentials::Malformed,
        };
    }
    session_id(headers, cookie).map_or(Credentials::None, Credentials::Cookie)
}

/// The value of the cookie `name` among the request's `Cookie` headers.
pub fn session_id(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, value)| *key == name && !value.is_empty())
        .map(|(_, value)| value.trim_matches('"').to_owned())
}

/// The middleware. Puts the [`Principal`] (when there is one) in the request's
/// extensions for handlers to read with [`Caller`] or `Option<Caller>`.
pub async fn guard(State(api): State<ApiState>, mut request: Request, next: Next) -> Response {
    match check(&api, &mut request).await {
        Ok(()) => next.run(request).await,
        Err(e) => e.into_response(),
    }
}

async fn check(api: &ApiState, request: &mut Request) -> Result<(), Error> {
    let matched = request.extensions().get::<MatchedPath>().map(|m| m.as_str().to_owned());
    let decision = policy::decide(request.method(), matched.as_deref());
    let config = &api.ctx.config;
    let presented = credentials(request.headers(), cookie_name(config));
    let looked_up = match &presented {
        Credentials::None | Credentials::Malformed => Ok(None),
        Credentials::Bearer(token) => api.auth.bearer(token).await,
        Credentials::Cookie(id) => api.auth.session(id).await,
    };
    let principal = match looked_up {
        Ok(principal) => principal,
        // A public route answers even when credentials cannot be checked (the store is
        // down): `/health` must be able to say so, to the caller as to anyone.
        Err(e) if matches!(decision, Decision::Declared(Access::Public)) => {
            tracing::warn!(error = %e, "credentials could not be checked; answering the public route anonymously");
            None
        }
        Err(e) => return Err(e.into()),
    };
    let unsafe_method = !matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let required = match decision {
        Decision::Declared(Access::Public) => {
            // Public routes ignore bad credentials (a stale cookie must not block a
            // login), but a cross-site page may not log a browser in or out.
            if unsafe_method {
                check_origin(config, request.headers())?;
            }
            if let Some(principal) = principal {
                request.extensions_mut().insert(principal);
            }
            return Ok(());
        }
        Decision::Declared(Access::Role(role)) => Some(role),
        Decision::OtherMethod | Decision::NoRoute => None,
        Decision::Undeclared => {
            tracing::error!(path = ?matched, method = %request.method(), "route without an access policy refused");
            return Err(Error::Forbidden { required: crate::auth::Role::Admin, role: crate::auth::Role::Viewer });
        }
    };
    let Some(principal) = principal else {
        return Err(Error::Unauthorized(match presented {
            Credentials::None => "sign in, or send `Authorization: Bearer <API token>`".into(),
            Credentials::Malformed => "the Authorization header must be `Bearer <API token>`".into(),
            Credentials::Bearer(_) => "the API token is not valid (unknown, expired or revoked)".into(),
            Credentials::Cookie(_) => "the session has ended; sign in again".into(),
        }));
    };
    if let Some(required) = required
        && !principal.allows(required)
    {
        return Err(Error::Forbidden { required, role: principal.role });
    }
    if unsafe_method && matches!(principal.via, Via::Session { .. }) {
        check_origin(config, request.headers())?;
        let presented = request.headers().get(CSRF_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
        if !principal.csrf_matches(presented) {
            return Err(Error::CsrfRejected(
                "a change made with the session cookie needs the `X-CSRF-Token` header \
                 (from the login answer or `GET /api/v1/auth/me`)"
                    .into(),
            ));
        }
    }
    request.extensions_mut().insert(principal);
    Ok(())
}

/// Refuses a browser request sent from another site. Clients that are not browsers
/// send neither header and pass; every browser sends `Origin` on a cross-site POST.
fn check_origin(config: &Config, headers: &HeaderMap) -> Result<(), Error> {
    if let Some(site) = headers.get("sec-fetch-site")
        && site.as_bytes() != b"same-origin"
    {
        let site = String::from_utf8_lossy(site.as_bytes());
        return Err(Error::CsrfRejected(format!("cross-site request refused (Sec-Fetch-Site: {site})")));
    }
    let Some(origin) = headers.get(header::ORIGIN) else { return Ok(()) };
    let origin = origin.to_str().unwrap_or("").trim().to_ascii_lowercase();
    if own_origins(config, headers).contains(&origin) {
        Ok(())
    } else {
        Err(Error::CsrfRejected(format!(
            "requests from origin `{origin}` are refused; set PUBLIC_URL to the address users open"
        )))
    }
}

/// The origins this server is reached at: `PUBLIC_URL`'s, or the request's `Host`
/// (already checked against the allowed hosts) over http — and https, for a proxy
/// that terminates TLS without `PUBLIC_URL` set.
fn own_origins(config: &Config, headers: &HeaderMap) -> Vec<String> {
    if let Some(url) = &config.public_url {
        return vec![url.origin.clone()];
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("").to_ascii_lowercase();
    vec![format!("http://{host}"), format!("https://{host}")]
}

/// The authenticated caller. Handlers behind a role take it; the rejection (a
/// route wrongly declared public) is a 401.
pub struct Caller(pub Principal);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Error> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .map(Caller)
            .ok_or_else(|| Error::Unauthorized("sign in, or send `Authorization: Bearer <API token>`".into()))
    }
}

impl<S: Send + Sync> axum::extract::OptionalFromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<Principal>().cloned().map(Caller))
    }
}

/// The client's address (`None` in router tests, which have no socket): the socket's
/// peer, unless that is one of `TRUSTED_PROXIES`; then the address `X-Forwarded-For`
/// names, read from the right past the trusted proxies (a client can write anything on
/// the left of that header, but not what a trusted proxy appended).
pub struct ClientAddr(pub Option<String>);

impl FromRequestParts<ApiState> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, Self::Rejection> {
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(addr)| addr.ip());
        let client = peer.map(|peer| client_address(peer, &parts.headers, &state.ctx.config.trusted_proxies));
        Ok(ClientAddr(client.map(|ip| ip.to_string())))
    }
}

/// See [`ClientAddr`]. Every `X-Forwarded-For` header counts, in order; an entry that is
/// not an IP address ends the walk at the last address known good.
fn client_address(peer: IpAddr, headers: &HeaderMap, trusted: &[ipnet::IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let forwarded: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for entry in forwarded.iter().rev() {
        let Ok(ip) = entry.parse::<IpAddr>() else { break };
        client = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_address_is_the_peer_unless_a_trusted_proxy_forwards_it() {
        let ip = |text: &str| text.parse::<IpAddr>().expect("an address");
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().expect("net"), "::1/128".parse().expect("net")];
        let forwarded = headers(&[("x-forwarded-for", "6.6.6.6, 203.0.113.7"), ("x-forwarded-for", "10.1.1.1")]);
        // An untrusted peer's header is ignored: any client can write one.
        assert_eq!(client_address(ip("198.51.100.2"), &forwarded, &trusted), ip("198.51.100.2"));
        // Through trusted proxies: the first untrusted address from the right, not the
        // client-written one on the left.
        assert_eq!(client_address(ip("10.0.0.9"), &forwarded, &trusted), ip("203.0.113.7"));
        assert_eq!(client_address(ip("::1"), &forwarded, &trusted), ip("203.0.113.7"));
        // A trusted proxy that forwarded nothing (or garbage): the proxy itself.
        assert_eq!(client_address(ip("10.0.0.9"), &HeaderMap::new(), &trusted), ip("10.0.0.9"));
        let garbage = headers(&[("x-forwarded-for", "203.0.113.7, not-an-ip")]);
        assert_eq!(client_address(ip("10.0.0.9"), &garbage, &trusted), ip("10.0.0.9"));
        // Nothing trusted (the default): always the peer.
        assert_eq!(client_address(ip("10.0.0.9"), &forwarded, &[]), ip("10.0.0.9"));
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).expect("header value"));
        }
        map
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let map = headers(&[("cookie", "a=1; fastflow_session=abc; b=2"), ("cookie", "c=3")]);
        assert_eq!(session_id(&map, COOKIE).as_deref(), Some("abc"));
        assert_eq!(session_id(&map, SECURE_COOKIE), None);
        assert_eq!(session_id(&headers(&[("cookie", "fastflow_session=")]), COOKIE), None);
    }

    #[test]
    fn bearer_tokens_and_other_schemes() {
        assert!(
            matches!(credentials(&headers(&[("authorization", "Bearer ff_x")]), COOKIE), Credentials::Bearer(t) if t == "ff_x")
        );
        assert!(
            matches!(credentials(&headers(&[("authorization", "bearer  ff_x ")]), COOKIE), Credentials::Bearer(t) if t == "ff_x")
        );
        assert!(matches!(credentials(&headers(&[("authorization", "Basic abc")]), COOKIE), Credentials::Malformed));
        assert!(matches!(credentials(&headers(&[("authorization", "Bearer")]), COOKIE), Credentials::Malformed));
        assert!(matches!(credentials(&HeaderMap::new(), COOKIE), Credentials::None));
    }
}
