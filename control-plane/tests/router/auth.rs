//! Authentication and authorisation through the router: the route policy table
//! against what is served, the access matrix, login and the session cookie, CSRF,
//! the login throttle, users, tokens and the audit log.

use super::harness::{ADMIN_PASSWORD, Reply, TestApp, USER_PASSWORD, request};
use axum::body::Body;
use axum::http::{Method, StatusCode, header};
use chrono::{Duration as TimeDelta, Utc};
use control_plane::auth::{Role, secrets, tokens, users};
use control_plane::http::policy::{Access, POLICY};
use control_plane::store::auth::NewToken;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use uuid::Uuid;

fn json_request(method: Method, path: &str, body: &Value) -> axum::http::Request<Body> {
    request(method, path)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .expect("request")
}

fn empty(method: Method, path: &str) -> axum::http::Request<Body> {
    request(method, path).body(Body::empty()).expect("request")
}

/// A request with the session cookie `cookie` and, if given, its CSRF token.
fn with_cookie(mut req: axum::http::Request<Body>, cookie: &str, csrf: Option<&str>) -> axum::http::Request<Body> {
    req.headers_mut().insert(header::COOKIE, cookie.parse().expect("cookie"));
    if let Some(csrf) = csrf {
        req.headers_mut().insert("x-csrf-token", csrf.parse().expect("csrf"));
    }
    req
}

#[tokio::test]
async fn every_served_route_has_exactly_one_declared_policy() {
    let served: BTreeSet<(String, &str)> =
        control_plane::http::routes().routes().iter().map(|(m, p)| (m.to_string(), *p)).collect();
    let declared: BTreeSet<(String, &str)> = POLICY.iter().map(|r| (r.method.to_string(), r.path)).collect();
    let undeclared: Vec<_> = served.difference(&declared).collect();
    assert!(undeclared.is_empty(), "routes served without an entry in http::policy::POLICY: {undeclared:?}");
    let unserved: Vec<_> = declared.difference(&served).collect();
    assert!(unserved.is_empty(), "policy entries for routes nobody serves: {unserved:?}");
    assert_eq!(served.len(), control_plane::http::routes().routes().len(), "a route is added twice");
}

/// The kinds of caller the matrix tries on every route.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Who {
    Anonymous,
    Viewer,
    Operator,
    Admin,
    ExpiredToken,
    RevokedToken,
    DisabledUser,
}

#[tokio::test]
async fn every_route_answers_each_kind_of_caller_as_declared() {
    let t = TestApp::new().await;
    let (_, viewer) = t.user_with_token("vera", Role::Viewer).await;
    let (_, operator) = t.user_with_token("otto", Role::Operator).await;
    let (_, admin) = t.user_with_token("ada", Role::Admin).await;
    let (disabled_id, disabled) = t.user_with_token("dora", Role::Admin).await;
    let change = users::AdminUpdate { disabled: Some(true), ..Default::default() };
    users::admin_update(&t.app.store, disabled_id, &change).await.expect("disable dora");
    let (revoked_owner, revoked) = t.user_with_token("rita", Role::Admin).await;
    let listed = tokens::list(&t.app.store, Some(revoked_owner)).await.expect("rita's tokens");
    tokens::revoke(&t.app.store, listed[0].id).await.expect("revoke");
    let expired = secrets::new_api_token();
    let (expired_owner, _) = t.user_with_token("eve", Role::Admin).await;
    t.app
        .store
        .create_token(&NewToken {
            id: Uuid::now_v7(),
            name: "old",
            token_hash: &secrets::hash_secret(expired.expose()),
            user_id: expired_owner,
            role: Role::Admin,
            expires_at: Some(Utc::now() - TimeDelta::minutes(1)),
        })
        .await
        .expect("an expired token");

    let callers = [
        (Who::Anonymous, None),
        (Who::Viewer, Some(viewer.as_str())),
        (Who::Operator, Some(operator.as_str())),
        (Who::Admin, Some(admin.as_str())),
        (Who::ExpiredToken, Some(expired.expose())),
        (Who::RevokedToken, Some(revoked.as_str())),
        (Who::DisabledUser, Some(disabled.as_str())),
    ];
    let mut checked = 0;
    for route in POLICY {
        let path = route.path.replace("{id}", &Uuid::new_v4().to_string()).replace("{name}", "hello");
        for (who, token) in callers {
            let req = if route.method == Method::GET || route.method == Method::DELETE {
                empty(route.method.clone(), &path)
            } else {
                json_request(route.method.clone(), &path, &json!({}))
            };
            let reply = match token {
                Some(token) => t.send_as(token, req).await,
                None => t.send_anonymous(req).await,
            };
            let role = match who {
                Who::Viewer => Some(Role::Viewer),
                Who::Operator => Some(Role::Operator),
                Who::Admin => Some(Role::Admin),
                _ => None,
            };
            let context = format!("{} {} as {who:?}: {} {}", route.method, route.path, reply.status, reply.text);
            match (route.access, role) {
                (Access::Public, _) => {
                    assert!(![StatusCode::UNAUTHORIZED, StatusCode::FORBIDDEN].contains(&reply.status), "{context}")
                }
                (Access::Role(_), None) => {
                    reply.error(StatusCode::UNAUTHORIZED, "Unauthorized");
                    assert_eq!(reply.header("www-authenticate"), Some("Bearer"), "{context}");
                }
                (Access::Role(required), Some(role)) if role < required => {
                    let details = reply.error(StatusCode::FORBIDDEN, "Forbidden");
                    assert_eq!(details["required_role"], required.as_str(), "{context}");
                }
                (Access::Role(_), Some(_)) => {
                    assert!(![StatusCode::UNAUTHORIZED, StatusCode::FORBIDDEN].contains(&reply.status), "{context}");
                    assert!(reply.status != StatusCode::INTERNAL_SERVER_ERROR, "{context}");
                }
            }
            checked += 1;
        }
    }
    assert_eq!(checked, POLICY.len() * callers.len());
    // Paths that match no route: 401 to anonymous callers (nothing to learn), 404 to others.
    t.send_anonymous(empty(Method::GET, "/api/v1/nope")).await.error(StatusCode::UNAUTHORIZED, "Unauthorized");
    t.send_as(&viewer, empty(Method::GET, "/api/v1/nope")).await.error(StatusCode::NOT_FOUND, "NotFound");
    let other = t.send_anonymous(empty(Method::DELETE, "/api/v1/runs")).await;
    other.error(StatusCode::UNAUTHORIZED, "Unauthorized");
    // Other schemes are not accepted.
    let basic =
        request(Method::GET, "/api/v1/runs").header(header::AUTHORIZATION, "Basic cm9vdDpyb290").body(Body::empty());
    t.send_anonymous(basic.expect("request")).await.error(StatusCode::UNAUTHORIZED, "Unauthorized");
}

#[tokio::test]
async fn login_sets_a_session_cookie_that_authenticates() {
    let t = TestApp::new().await;
    let login = t
        .send_anonymous(json_request(
            Method::POST,
            "/api/v1/auth/login",
            &json!({ "username": "ROOT", "password": ADMIN_PASSWORD }),
        ))
        .await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.text);
    let cookie = login.header("set-cookie").expect("set-cookie").to_owned();
    assert!(cookie.starts_with("fastflow_session="), "{cookie}");
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age="] {
        assert!(cookie.contains(attribute), "{attribute} missing in {cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain http: a Secure cookie would never come back: {cookie}");
    assert_eq!(login.json["user"]["username"], "root");
    assert_eq!(login.json["user"]["role"], "admin");
    assert!(login.json["user"].get("password_hash").is_none() && !login.text.contains("argon2"));
    let session_id = cookie.split(';').next().and_then(|p| p.split_once('=')).map(|(_, v)| v.to_owned()).expect("id");
    assert!(!login.text.contains(&session_id), "the session id is only in the cookie");
    let pair = format!("fastflow_session={session_id}");
    let csrf = login.json["csrf_token"].as_str().expect("csrf").to_owned();

    let me = t.send(with_cookie(empty(Method::GET, "/api/v1/auth/me"), &pair, None)).await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.text);
    assert_eq!((me.json["via"].as_str(), me.json["csrf_token"].as_str()), (Some("session"), Some(csrf.as_str())));
    // A token reads who it is too.
    let me = t.get("/api/v1/auth/me").await;
    assert_eq!((me.json["via"].as_str(), me.json["token_name"].as_str()), (Some("token"), Some("router-tests")));
    assert!(me.json["csrf_token"].is_null());

    // A second login gets another id (no fixation); a made-up id authenticates nothing.
    let (second, _) = t.login("root", ADMIN_PASSWORD).await;
    assert_ne!(second, pair);
    let forged = t.send(with_cookie(empty(Method::GET, "/api/v1/runs"), "fastflow_session=made-up-value", None)).await;
    forged.error(StatusCode::UNAUTHORIZED, "Unauthorized");

    // Logout ends the session; the cookie is cleared; a second logout is harmless.
    let out = t.send(with_cookie(empty(Method::POST, "/api/v1/auth/logout"), &pair, None)).await;
    assert_eq!(out.status, StatusCode::NO_CONTENT, "{}", out.text);
    assert!(out.header("set-cookie").is_some_and(|c| c.contains("Max-Age=0")));
    t.send(with_cookie(empty(Method::GET, "/api/v1/runs"), &pair, None))
        .await
        .error(StatusCode::UNAUTHORIZED, "Unauthorized");
    assert_eq!(
        t.send(with_cookie(empty(Method::POST, "/api/v1/auth/logout"), &pair, None)).await.status,
        StatusCode::NO_CONTENT
    );
    let still = t.send(with_cookie(empty(Method::GET, "/api/v1/runs"), &second, None)).await;
    assert_eq!(still.status, StatusCode::OK, "the other session stays: {}", still.text);
}

#[tokio::test]
async fn wrong_and_unknown_credentials_get_the_same_answer() {
    let t = TestApp::new().await;
    let wrong = t
        .send_anonymous(json_request(
            Method::POST,
            "/api/v1/auth/login",
            &json!({ "username": "root", "password": "not the password" }),
        ))
        .await;
    let unknown = t
        .send_anonymous(json_request(
            Method::POST,
            "/api/v1/auth/login",
            &json!({ "username": "nobody", "password": "not the password" }),
        ))
        .await;
    wrong.error(StatusCode::UNAUTHORIZED, "InvalidCredentials");
    unknown.error(StatusCode::UNAUTHORIZED, "InvalidCredentials");
    assert_eq!(wrong.json["error"]["message"], unknown.json["error"]["message"]);
    assert!(wrong.header("set-cookie").is_none());
    t.send_anonymous(json_request(Method::POST, "/api/v1/auth/login", &json!({ "username": "root" })))
        .await
        .invalid("body");
    let form = request(Method::POST, "/api/v1/auth/login")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from("username=root&password=x"));
    t.send_anonymous(form.expect("request")).await.error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "UnsupportedMediaType");
}

#[tokio::test]
async fn repeated_failures_are_throttled_with_retry_after() {
    let t = TestApp::new().await;
    let attempt = |password: &str| {
        json_request(Method::POST, "/api/v1/auth/login", &json!({ "username": "root", "password": password }))
    };
    for _ in 0..5 {
        t.send_anonymous(attempt("wrong password!")).await.error(StatusCode::UNAUTHORIZED, "InvalidCredentials");
    }
    let throttled = t.send_anonymous(attempt(ADMIN_PASSWORD)).await;
    let details = throttled.error(StatusCode::TOO_MANY_REQUESTS, "TooManyLoginAttempts");
    let retry_after: u64 = throttled.header("retry-after").and_then(|v| v.parse().ok()).expect("Retry-After");
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    assert_eq!(details["retry_after_seconds"], retry_after);
    // After the back-off the right password works again.
    tokio::time::sleep(std::time::Duration::from_secs(retry_after)).await;
    let ok = t.send_anonymous(attempt(ADMIN_PASSWORD)).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);
}

#[tokio::test]
async fn cookie_changes_need_the_csrf_token_and_this_origin() {
    let t = TestApp::new().await;
    let (cookie, csrf) = t.login("root", ADMIN_PASSWORD).await;
    let start = |csrf: Option<&str>| {
        with_cookie(json_request(Method::POST, "/api/v1/pipelines/hello/run", &json!({})), &cookie, csrf)
    };
    t.send(start(None)).await.error(StatusCode::FORBIDDEN, "CsrfRejected");
    t.send(start(Some("not-the-token"))).await.error(StatusCode::FORBIDDEN, "CsrfRejected");
    let mut foreign = start(Some(&csrf));
    foreign.headers_mut().insert(header::ORIGIN, "https://evil.example".parse().expect("origin"));
    t.send(foreign).await.error(StatusCode::FORBIDDEN, "CsrfRejected");
    let mut cross_site = start(Some(&csrf));
    cross_site.headers_mut().insert("sec-fetch-site", "cross-site".parse().expect("header"));
    t.send(cross_site).await.error(StatusCode::FORBIDDEN, "CsrfRejected");
    let plain = with_cookie(
        request(Method::POST, "/api/v1/pipelines/hello/run")
            .header(header::CONTENT_TYPE, "text/plain")
            .body(Body::from("{}"))
            .expect("req"),
        &cookie,
        Some(&csrf),
    );
    t.send(plain).await.error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "UnsupportedMediaType");
    let mut same = start(Some(&csrf));
    same.headers_mut().insert(header::ORIGIN, "http://127.0.0.1:8000".parse().expect("origin"));
    same.headers_mut().insert("sec-fetch-site", "same-origin".parse().expect("header"));
    let started = t.send(same).await;
    assert_eq!(started.status, StatusCode::CREATED, "{}", started.text);
    assert_eq!(started.json["triggered_by"], "user:root");
    // Reads need no token; a login from another site is refused too (login CSRF).
    assert_eq!(t.send(with_cookie(empty(Method::GET, "/api/v1/runs"), &cookie, None)).await.status, StatusCode::OK);
    let mut login =
        json_request(Method::POST, "/api/v1/auth/login", &json!({ "username": "root", "password": ADMIN_PASSWORD }));
    login.headers_mut().insert(header::ORIGIN, "https://evil.example".parse().expect("origin"));
    t.send_anonymous(login).await.error(StatusCode::FORBIDDEN, "CsrfRejected");
}

#[tokio::test]
async fn behind_an_https_public_url_the_cookie_is_secure_and_host_bound() {
    let t = TestApp::with_env(&[("PUBLIC_URL", "https://ff.example.com")]).await;
    let login = t
        .send_anonymous(json_request(
            Method::POST,
            "/api/v1/auth/login",
            &json!({ "username": "root", "password": ADMIN_PASSWORD }),
        ))
        .await;
    let cookie = login.header("set-cookie").expect("set-cookie");
    assert!(cookie.starts_with("__Host-fastflow_session=") && cookie.contains("; Secure"), "{cookie}");
    let pair = cookie.split(';').next().expect("pair").to_owned();
    let csrf = login.json["csrf_token"].as_str().expect("csrf").to_owned();
    let mut req =
        with_cookie(json_request(Method::POST, "/api/v1/pipelines/hello/run", &json!({})), &pair, Some(&csrf));
    req.headers_mut().insert(header::ORIGIN, "http://127.0.0.1:8000".parse().expect("origin"));
    t.send(req).await.error(StatusCode::FORBIDDEN, "CsrfRejected");
    let mut req =
        with_cookie(json_request(Method::POST, "/api/v1/pipelines/hello/run", &json!({})), &pair, Some(&csrf));
    req.headers_mut().insert(header::ORIGIN, "https://ff.example.com".parse().expect("origin"));
    assert_eq!(t.send(req).await.status, StatusCode::CREATED);
}

#[tokio::test]
async fn a_password_change_ends_the_other_sessions() {
    let t = TestApp::new().await;
    let (here, csrf) = t.login("root", ADMIN_PASSWORD).await;
    let (elsewhere, _) = t.login("root", ADMIN_PASSWORD).await;
    let change = |current: &str, new: &str| {
        with_cookie(
            json_request(
                Method::PUT,
                "/api/v1/auth/password",
                &json!({ "current_password": current, "new_password": new }),
            ),
            &here,
            Some(&csrf),
        )
    };
    t.send(change("wrong current password", "a brand new password")).await.invalid("current_password");
    t.send(change(ADMIN_PASSWORD, "short")).await.invalid("new_password");
    assert_eq!(t.send(change(ADMIN_PASSWORD, "a brand new password")).await.status, StatusCode::NO_CONTENT);
    assert_eq!(t.send(with_cookie(empty(Method::GET, "/api/v1/runs"), &here, None)).await.status, StatusCode::OK);
    t.send(with_cookie(empty(Method::GET, "/api/v1/runs"), &elsewhere, None))
        .await
        .error(StatusCode::UNAUTHORIZED, "Unauthorized");
    let old = t
        .send_anonymous(json_request(
            Method::POST,
            "/api/v1/auth/login",
            &json!({ "username": "root", "password": ADMIN_PASSWORD }),
        ))
        .await;
    old.error(StatusCode::UNAUTHORIZED, "InvalidCredentials");
    t.login("root", "a brand new password").await;
}

#[tokio::test]
async fn admins_manage_users_and_the_last_admin_stays() {
    let t = TestApp::new().await;
    let root_id = t.get("/api/v1/auth/me").await.json["user"]["id"].as_str().expect("id").to_owned();
    let created = t
        .post_json("/api/v1/users", &json!({ "username": "Bob", "password": USER_PASSWORD, "role": "operator" }))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    assert_eq!((created.json["username"].as_str(), created.json["role"].as_str()), (Some("bob"), Some("operator")));
    assert!(!created.text.contains("password"), "{}", created.text);
    let bob = created.json["id"].as_str().expect("id").to_owned();
    t.post_json("/api/v1/users", &json!({ "username": "bob", "password": USER_PASSWORD, "role": "viewer" }))
        .await
        .error(StatusCode::CONFLICT, "Conflict");
    t.post_json("/api/v1/users", &json!({ "username": "carl", "password": "short", "role": "viewer" }))
        .await
        .invalid("password");
    t.post_json("/api/v1/users", &json!({ "username": "a b", "password": USER_PASSWORD, "role": "viewer" }))
        .await
        .invalid("username");
    t.post_json("/api/v1/users", &json!({ "username": "carl", "password": USER_PASSWORD, "role": "root" }))
        .await
        .invalid("body");
    let list = t.get("/api/v1/users").await;
    let names: Vec<&str> =
        list.json["items"].as_array().expect("items").iter().filter_map(|u| u["username"].as_str()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.contains(&"root") && names.contains(&"bob"));

    let put = |id: &str, body: Value| json_request(Method::PUT, &format!("/api/v1/users/{id}"), &body);
    let (bob_cookie, _) = t.login("bob", USER_PASSWORD).await;
    let promoted = t.send(put(&bob, json!({ "role": "admin" }))).await;
    assert_eq!(promoted.json["role"], "admin", "{}", promoted.text);
    t.send(with_cookie(empty(Method::GET, "/api/v1/runs"), &bob_cookie, None))
        .await
        .error(StatusCode::UNAUTHORIZED, "Unauthorized");
    t.send(put(&bob, json!({}))).await.invalid("body");
    t.send(put(&bob, json!({ "password": "short" }))).await.invalid("password");
    assert_eq!(t.send(put(&bob, json!({ "disabled": true }))).await.json["disabled"], true);
    // root is now the only enabled admin.
    t.send(put(&root_id, json!({ "role": "viewer" }))).await.error(StatusCode::CONFLICT, "LastAdmin");
    t.send(put(&root_id, json!({ "disabled": true }))).await.error(StatusCode::CONFLICT, "LastAdmin");
    t.send(empty(Method::DELETE, &format!("/api/v1/users/{root_id}"))).await.error(StatusCode::CONFLICT, "LastAdmin");
    assert_eq!(t.send(empty(Method::DELETE, &format!("/api/v1/users/{bob}"))).await.status, StatusCode::NO_CONTENT);
    t.get(&format!("/api/v1/users/{bob}")).await.error(StatusCode::NOT_FOUND, "NotFound");
    t.get("/api/v1/users/not-a-uuid").await.invalid("id");
}

async fn post_token(t: &TestApp, token: &str, body: Value) -> Reply {
    t.send_as(token, json_request(Method::POST, "/api/v1/tokens", &body)).await
}

#[tokio::test]
async fn tokens_are_shown_once_and_revoked_at_once() {
    let t = TestApp::new().await;
    let (_, viewer) = t.user_with_token("vera", Role::Viewer).await;
    let created = post_token(&t, &viewer, json!({ "name": "laptop" })).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let value = created.json["token"].as_str().expect("token").to_owned();
    assert!(value.starts_with("ff_") && value.len() >= 40, "{value}");
    assert_eq!(created.json["role"], "viewer");
    post_token(&t, &viewer, json!({ "name": "laptop" })).await.error(StatusCode::CONFLICT, "Conflict");
    post_token(&t, &viewer, json!({ "name": "admin-ish", "role": "admin" })).await.invalid("role");
    post_token(&t, &viewer, json!({ "name": "" })).await.invalid("name");
    post_token(&t, &viewer, json!({ "name": "past", "expires_at": "2020-01-01T00:00:00Z" }))
        .await
        .invalid("expires_at");
    let listed = t.send_as(&value, empty(Method::GET, "/api/v1/tokens")).await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.text);
    assert!(!listed.text.contains(&value), "a listing never shows a value");
    assert_eq!(listed.json["items"].as_array().map(Vec::len), Some(2), "{}", listed.text);
    t.send_as(&viewer, empty(Method::GET, "/api/v1/tokens?all=true")).await.error(StatusCode::FORBIDDEN, "Forbidden");
    let all = t.get("/api/v1/tokens?all=true").await;
    assert_eq!(all.json["items"].as_array().map(Vec::len), Some(3), "{}", all.text);

    // Another user's token is not found for a viewer; its owner (or an admin) revokes it.
    let admin_tokens = t.get("/api/v1/tokens").await;
    let admin_token_id = admin_tokens.json["items"][0]["id"].as_str().expect("id").to_owned();
    let theirs = t.send_as(&viewer, empty(Method::DELETE, &format!("/api/v1/tokens/{admin_token_id}"))).await;
    theirs.error(StatusCode::NOT_FOUND, "NotFound");
    let id = created.json["id"].as_str().expect("id");
    assert_eq!(
        t.send_as(&viewer, empty(Method::DELETE, &format!("/api/v1/tokens/{id}"))).await.status,
        StatusCode::NO_CONTENT
    );
    t.send_as(&value, empty(Method::GET, "/api/v1/runs")).await.error(StatusCode::UNAUTHORIZED, "Unauthorized");
    // A token made through a viewer session cannot act above the viewer.
    let started = t.send_as(&viewer, json_request(Method::POST, "/api/v1/pipelines/hello/run", &json!({}))).await;
    started.error(StatusCode::FORBIDDEN, "Forbidden");
}

#[tokio::test]
async fn the_audit_log_records_who_did_what_and_no_secret() {
    let t = TestApp::new().await;
    t.login("root", ADMIN_PASSWORD).await;
    let failed = t
        .send_anonymous(json_request(
            Method::POST,
            "/api/v1/auth/login",
            &json!({ "username": "root", "password": "a wrong password" }),
        ))
        .await;
    assert_eq!(failed.status, StatusCode::UNAUTHORIZED);
    let created =
        t.post_json("/api/v1/users", &json!({ "username": "bob", "password": USER_PASSWORD, "role": "viewer" })).await;
    assert_eq!(created.status, StatusCode::CREATED);
    let token = t.post_json("/api/v1/tokens", &json!({ "name": "ci" })).await;
    let value = token.json["token"].as_str().expect("token").to_owned();
    let run = t.start_run("hello").await;
    let cancel = t.post_empty(&format!("/api/v1/runs/{run}/cancel")).await;
    assert_eq!(cancel.status, StatusCode::ACCEPTED, "{}", cancel.text);

    let log = t.get("/api/v1/audit?limit=500").await;
    assert_eq!(log.status, StatusCode::OK, "{}", log.text);
    let events = log.json["items"].as_array().expect("items");
    let find = |action: &str| {
        events.iter().find(|e| e["action"] == action).unwrap_or_else(|| panic!("no {action} in {}", log.text))
    };
    let ok = find("login_ok");
    assert_eq!(
        (ok["actor"].as_str(), ok["target"].as_str(), ok["outcome"].as_str()),
        (Some("root"), Some("user:root"), Some("ok"))
    );
    let bad = find("login_failed");
    assert_eq!((bad["actor_kind"].as_str(), bad["outcome"].as_str()), (Some("anonymous"), Some("denied")));
    assert_eq!(find("user_create")["target"], "user:bob");
    assert_eq!(find("token_create")["target"], "token:ci");
    let trigger = find("run_trigger");
    assert_eq!((trigger["actor"].as_str(), trigger["actor_kind"].as_str()), (Some("router-tests"), Some("token")));
    assert_eq!(trigger["target"], format!("run:{run}"));
    assert_eq!(find("run_cancel")["target"], format!("run:{run}"));
    for secret in [ADMIN_PASSWORD, USER_PASSWORD, "a wrong password", value.as_str(), t.admin_token.as_str()] {
        assert!(!log.text.contains(secret), "the audit log contains a secret: {}", log.text);
    }
    // Filters and paging.
    let only = t.get("/api/v1/audit?action=user_create").await;
    assert_eq!(only.json["items"].as_array().map(Vec::len), Some(1), "{}", only.text);
    let by_actor = t.get("/api/v1/audit?actor=anonymous").await;
    assert!(
        by_actor.json["items"].as_array().is_some_and(|i| !i.is_empty() && i.iter().all(|e| e["actor"] == "anonymous"))
    );
    let future = t.get("/api/v1/audit?since=2999-01-01T00:00:00Z").await;
    assert_eq!(future.json["items"], json!([]));
    let mut seen = 0;
    let mut cursor = String::new();
    loop {
        let page = t.get(&format!("/api/v1/audit?limit=2{cursor}")).await;
        seen += page.json["items"].as_array().map(Vec::len).unwrap_or(0);
        match page.json["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => break,
        }
    }
    assert_eq!(seen, events.len());
    t.get("/api/v1/audit?action=nope").await.invalid("action");
    t.get("/api/v1/audit?limit=0").await.invalid("limit");
    t.get("/api/v1/audit?since=yesterday").await.invalid("since");
    t.get("/api/v1/audit?cursor=garbage").await.invalid("cursor");
}
