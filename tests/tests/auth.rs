//! Authentication and authorisation end to end (issue 17), through the HTTP API as
//! browsers (sessions: cookie + CSRF token) and scripts (API tokens) use it: sign-in
//! and sign-out, fixation, CSRF refusals, the login back-off, roles, the last admin,
//! credential changes and revocations (on one replica and across two), the audit log,
//! and the single node's first admin.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tests::session::{SECURE_SESSION_COOKIE, SESSION_COOKIE, cookie_attributes, parse_set_cookie, set_cookie_header};
use tests::{
    ADMIN_TOKEN_NAME, ADMIN_USER, ApiResponse, TestEnv, TestEnvOptions, assert_error, in_both_modes, poll_until,
};

const RUN_PATH: &str = "/api/v1/pipelines/quick/run";
/// How soon another replica must refuse an ended credential: the credential cache's
/// staleness (1 s) plus request round trips on a busy machine.
const OTHER_REPLICA_BOUND: Duration = Duration::from_secs(2);

/// Polls `probe` every 25 ms until it says `Ok`; returns how long that took, asserting
/// it was within [`OTHER_REPLICA_BOUND`].
async fn within_bound<F, Fut>(what: &str, mut probe: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let started = Instant::now();
    poll_until(what, Duration::from_secs(10), Duration::from_millis(25), &mut probe).await;
    let took = started.elapsed();
    assert!(took <= OTHER_REPLICA_BOUND, "{what} took {took:?}, more than {OTHER_REPLICA_BOUND:?}");
    eprintln!("{what}: {took:?}");
    took
}

/// `Ok` once `response` is the 401 of credentials that are no longer valid.
fn refused(response: ApiResponse) -> Result<(), String> {
    if response.status == StatusCode::UNAUTHORIZED && response.error_type() == "Unauthorized" {
        Ok(())
    } else {
        Err(format!("HTTP {}: {}", response.status, response.text))
    }
}

fn items(response: &ApiResponse) -> Vec<Value> {
    response.expect(StatusCode::OK)["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no `items` array: {}", response.text))
        .clone()
}

fn field<'a>(value: &'a Value, name: &str) -> &'a str {
    value[name].as_str().unwrap_or_else(|| panic!("`{name}` is not a string in {value}"))
}

fn is_rfc3339(value: &Value) -> bool {
    value.as_str().is_some_and(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok())
}

in_both_modes! {
    /// A login answers the user and a CSRF token and sets a new HttpOnly, SameSite=Lax
    /// cookie (never the one the browser had: no fixation). The cookie alone reads, the
    /// log stream included; a change also needs the session's CSRF token, sent from this
    /// site, with a JSON body. A token needs neither. Logout ends the session at once.
    async fn a_session_signs_in_changes_with_its_csrf_token_and_signs_out(options) {
        let env = TestEnv::start(options.runners(0)).await;
        let carol = env.create_user("carol", "operator").await;

        // Fixation: an id planted in the browser before the login is not the session's.
        let browser = env.session(0);
        let planted = "planted-by-another-site-0123456789abcdef";
        browser.set_cookie(SESSION_COOKIE, planted);
        let login = browser.login("carol", &carol.password).await;
        let body = login.expect(StatusCode::OK).clone();
        assert_eq!(body["user"]["id"], carol.id.as_str(), "{body}");
        assert_eq!(body["user"]["username"], "carol", "{body}");
        assert_eq!(body["user"]["role"], "operator", "{body}");
        assert_eq!(body["user"]["disabled"], false, "{body}");
        assert!(is_rfc3339(&body["user"]["created_at"]) && is_rfc3339(&body["user"]["updated_at"]), "{body}");
        assert!(!login.text.contains(&carol.password) && !login.text.contains("hash"), "{}", login.text);
        let expires_at = chrono::DateTime::parse_from_rfc3339(field(&body, "expires_at")).expect("expires_at");
        let lifetime = expires_at.with_timezone(&chrono::Utc) - chrono::Utc::now();
        assert!(
            lifetime > chrono::Duration::days(7) - chrono::Duration::minutes(5) && lifetime <= chrono::Duration::days(7),
            "SESSION_MAX_AGE defaults to 7 days: expires_at {expires_at}"
        );
        let csrf = browser.csrf_token().expect("the login's CSRF token");
        let set_cookie = set_cookie_header(&login, SESSION_COOKIE)
            .unwrap_or_else(|| panic!("no {SESSION_COOKIE} Set-Cookie: {:?}", login.headers));
        let attributes = cookie_attributes(set_cookie);
        for attribute in ["httponly", "samesite=lax", "path=/"] {
            assert!(attributes.iter().any(|a| a == attribute), "the cookie lacks {attribute}: {attributes:?}");
        }
        assert!(!attributes.iter().any(|a| a == "secure"), "over plain http the cookie is not Secure: {attributes:?}");
        let cookie = browser.session_cookie().expect("the session cookie");
        assert_ne!(cookie, planted, "the login kept the planted session id");
        assert!(cookie.len() >= 43, "a 256-bit session id has at least 43 base64 characters");
        let attacker = env.session(0);
        attacker.set_cookie(SESSION_COOKIE, planted);
        assert_error(&attacker.me().await, StatusCode::UNAUTHORIZED, "Unauthorized");

        // Who am I: by session (with its CSRF token) and by token (without one).
        let me = browser.me().await;
        let me = me.expect(StatusCode::OK);
        assert_eq!((me["via"].as_str(), me["user"]["username"].as_str()), (Some("session"), Some("carol")), "{me}");
        assert_eq!(me["csrf_token"], csrf.as_str(), "{me}");
        let me = env.cp(0).me().await;
        let me = me.expect(StatusCode::OK);
        assert_eq!(me["via"], "token", "{me}");
        assert_eq!(me["token_name"], ADMIN_TOKEN_NAME, "{me}");
        assert_eq!(me["user"]["username"], ADMIN_USER, "{me}");
        assert_eq!(me["user"]["role"], "admin", "{me}");
        assert!(me["csrf_token"].is_null(), "a token has no CSRF token: {me}");

        // Reads need only the cookie.
        browser.get("/api/v1/runs").await.expect(StatusCode::OK);
        browser.get("/api/v1/pipelines").await.expect(StatusCode::OK);

        // A change from this site's page with the CSRF token; the run says who started it.
        let by_session = browser.change(Method::POST, RUN_PATH, None).await.run(StatusCode::CREATED);
        assert_eq!(by_session.triggered_by.as_deref(), Some("user:carol"), "{by_session:?}");
        // The browser's EventSource follows the log with the cookie.
        drop(browser.stream_logs(&by_session.id).await);
        let by_token = env.run_pipeline("quick", &[]).await;
        let by_token_name = format!("token:{ADMIN_TOKEN_NAME}");
        assert_eq!(by_token.triggered_by.as_deref(), Some(by_token_name.as_str()), "{by_token:?}");
        assert_eq!(env.get_run(&by_session.id).await.triggered_by.as_deref(), Some("user:carol"));

        // Changes with the cookie that a page of another site (or a script) could send.
        let refused_changes = [
            ("no X-CSRF-Token", browser.request(Method::POST, RUN_PATH)),
            ("a wrong X-CSRF-Token", browser.request(Method::POST, RUN_PATH).header("x-csrf-token", "not-the-token")),
            (
                "another site's Origin",
                browser
                    .request(Method::POST, RUN_PATH)
                    .header("x-csrf-token", &csrf)
                    .header("origin", "http://evil.example"),
            ),
            (
                "Sec-Fetch-Site: cross-site",
                browser
                    .request(Method::POST, RUN_PATH)
                    .header("x-csrf-token", &csrf)
                    .header("origin", browser.origin())
                    .header("sec-fetch-site", "cross-site"),
            ),
        ];
        for (what, request) in refused_changes {
            let response = browser.send(request, what).await;
            assert_error(&response, StatusCode::FORBIDDEN, "CsrfRejected");
        }
        // A form post is refused even with the token: bodies are JSON only.
        for (content_type, body) in [("text/plain", r#"{"params":{}}"#), ("application/x-www-form-urlencoded", "params=x")] {
            let request = browser
                .request(Method::POST, RUN_PATH)
                .header("x-csrf-token", &csrf)
                .header("origin", browser.origin())
                .header("content-type", content_type)
                .body(body);
            let response = browser.send(request, content_type).await;
            assert_error(&response, StatusCode::UNSUPPORTED_MEDIA_TYPE, "UnsupportedMediaType");
        }
        // The same change with the token, from this site, as JSON: accepted.
        let request = browser
            .request(Method::POST, RUN_PATH)
            .header("x-csrf-token", &csrf)
            .header("origin", browser.origin())
            .json(&json!({ "params": {} }));
        let accepted = browser.send(request, "POST run with the CSRF token").await.run(StatusCode::CREATED);
        // A token needs no CSRF token, whatever the Origin says.
        let cp = env.cp(0);
        let request = cp.request(Method::POST, RUN_PATH).header("origin", "http://evil.example");
        let by_bearer = cp.send(request, "POST run with a token").await.run(StatusCode::CREATED);

        // A login from another site is refused like any cross-site change.
        let anonymous = cp.anonymous();
        let request = anonymous
            .request(Method::POST, "/api/v1/auth/login")
            .header("origin", "http://evil.example")
            .json(&json!({ "username": "carol", "password": carol.password }));
        let cross_site = anonymous.send(request, "cross-site login").await;
        assert_error(&cross_site, StatusCode::FORBIDDEN, "CsrfRejected");
        assert!(set_cookie_header(&cross_site, SESSION_COOKIE).is_none(), "{:?}", cross_site.headers);

        // A wrong password and an unknown user get the same answer, and no cookie.
        let wrong = anonymous.login("carol", "not-carols-password").await;
        let unknown = anonymous.login("nobody-here", "not-carols-password").await;
        for response in [&wrong, &unknown] {
            assert_error(response, StatusCode::UNAUTHORIZED, "InvalidCredentials");
            assert!(set_cookie_header(response, SESSION_COOKIE).is_none(), "{:?}", response.headers);
        }
        assert_eq!(wrong.body["error"]["message"], unknown.body["error"]["message"]);

        // Each login is a new session with its own CSRF token.
        let second = env.login(0, "carol", &carol.password).await;
        assert_ne!(second.session_cookie(), browser.session_cookie());
        assert_ne!(second.csrf_token(), browser.csrf_token());
        let request = second.request(Method::POST, RUN_PATH).header("x-csrf-token", &csrf).header("origin", second.origin());
        let crossed = second.send(request, "another session's CSRF token").await;
        assert_error(&crossed, StatusCode::FORBIDDEN, "CsrfRejected");

        // Logout ends the session at once and deletes the cookie.
        let logout = browser.logout().await;
        logout.expect(StatusCode::NO_CONTENT);
        let cleared = set_cookie_header(&logout, SESSION_COOKIE).unwrap_or_else(|| panic!("{:?}", logout.headers));
        assert!(parse_set_cookie(cleared).is_some_and(|(_, _, deletes)| deletes), "not a deletion: {cleared}");
        assert_eq!(browser.session_cookie(), None);
        let kept = env.session(0);
        kept.set_cookie(SESSION_COOKIE, &cookie);
        assert_error(&kept.me().await, StatusCode::UNAUTHORIZED, "Unauthorized");
        second.me().await.expect(StatusCode::OK);
        // Signing out without a session is no error.
        browser.logout().await.expect(StatusCode::NO_CONTENT);

        // Exactly the accepted changes made runs.
        let mut made: Vec<String> = items(&cp.list_runs(&[("limit", "50")]).await)
            .iter()
            .map(|r| field(r, "id").to_string())
            .collect();
        let mut expected = vec![by_session.id, by_token.id, accepted.id, by_bearer.id];
        made.sort();
        expected.sort();
        assert_eq!(made, expected, "runs other than the accepted ones exist");
    }
}

in_both_modes! {
    /// A password change keeps the session that made it and ends the user's others (their
    /// tokens stay); an admin's password reset, disabling and a role change apply at once.
    async fn credential_changes_end_sessions_at_once(options) {
        let env = TestEnv::start(options.runners(0)).await;
        let dave = env.create_user("dave", "operator").await;
        let token = env.create_token("dave", "dave-ci", None).await;
        let dave_api = env.cp(0).with_token(&token);
        let anonymous = env.cp(0).anonymous();
        let here = env.login(0, "dave", &dave.password).await;
        let elsewhere = env.login(0, "dave", &dave.password).await;
        elsewhere.me().await.expect(StatusCode::OK);
        dave_api.me().await.expect(StatusCode::OK);

        let path = "/api/v1/auth/password";
        let wrong = json!({ "current_password": "not-the-password", "new_password": "a-new-password-1" });
        assert_error(&here.change(Method::PUT, path, Some(&wrong)).await, StatusCode::BAD_REQUEST, "ValidationError");
        let short = json!({ "current_password": dave.password, "new_password": "short" });
        assert_error(&here.change(Method::PUT, path, Some(&short)).await, StatusCode::BAD_REQUEST, "ValidationError");
        let new_password = format!("{}-new", dave.password);
        let change = json!({ "current_password": dave.password, "new_password": new_password });
        let without_csrf = here.send(here.request(Method::PUT, path).json(&change), "PUT password without CSRF").await;
        assert_error(&without_csrf, StatusCode::FORBIDDEN, "CsrfRejected");
        elsewhere.me().await.expect(StatusCode::OK);

        here.change(Method::PUT, path, Some(&change)).await.expect(StatusCode::NO_CONTENT);
        here.me().await.expect(StatusCode::OK);
        assert_error(&elsewhere.me().await, StatusCode::UNAUTHORIZED, "Unauthorized");
        dave_api.me().await.expect(StatusCode::OK);
        assert_error(&anonymous.login("dave", &dave.password).await, StatusCode::UNAUTHORIZED, "InvalidCredentials");
        env.login(0, "dave", &new_password).await;

        // An admin's reset ends every session of the user.
        let reset = format!("{}-reset", dave.password);
        let updated = env.cp(0).update_user(&dave.id, &json!({ "password": reset })).await;
        assert_eq!(updated.expect(StatusCode::OK)["username"], "dave", "{}", updated.text);
        assert!(!updated.text.contains(&reset), "{}", updated.text);
        assert_error(&here.me().await, StatusCode::UNAUTHORIZED, "Unauthorized");
        let session = env.login(0, "dave", &reset).await;

        // A disabled user has no login, no token, no session; enabled again, the token
        // works again, the ended session does not come back.
        let disabled = env.cp(0).update_user(&dave.id, &json!({ "disabled": true })).await;
        assert_eq!(disabled.expect(StatusCode::OK)["disabled"], true, "{}", disabled.text);
        assert_error(&dave_api.me().await, StatusCode::UNAUTHORIZED, "Unauthorized");
        assert_error(&session.me().await, StatusCode::UNAUTHORIZED, "Unauthorized");
        assert_error(&anonymous.login("dave", &reset).await, StatusCode::UNAUTHORIZED, "InvalidCredentials");
        env.cp(0).update_user(&dave.id, &json!({ "disabled": false })).await.expect(StatusCode::OK);
        dave_api.me().await.expect(StatusCode::OK);
        assert_error(&session.me().await, StatusCode::UNAUTHORIZED, "Unauthorized");

        // A role change applies at once, to tokens too (a token's role is capped by its owner's).
        dave_api.create_run("quick", None).await.run(StatusCode::CREATED);
        env.cp(0).update_user(&dave.id, &json!({ "role": "viewer" })).await.expect(StatusCode::OK);
        let refused = dave_api.create_run("quick", None).await;
        assert_error(&refused, StatusCode::FORBIDDEN, "Forbidden");
        assert_eq!(refused.body["error"]["details"]["required_role"], "operator", "{}", refused.text);
        assert_eq!(refused.body["error"]["details"]["role"], "viewer", "{}", refused.text);
    }
}

in_both_modes! {
    /// Nothing but `/health` and signing in and out answers without credentials; a viewer
    /// reads everything (the log stream too) and changes nothing; an operator starts and
    /// cancels runs; only an admin manages users and sees the audit log; a token's role is
    /// at most what it was given; the last admin can be neither demoted nor deleted.
    async fn roles_decide_who_may_do_what(options) {
        let env = TestEnv::start(options.runners(0)).await;
        let admin = env.cp(0);
        let run = env.run_pipeline("quick", &[]).await;
        let vera = env.create_user("vera", "viewer").await;
        let otto = env.create_user("otto", "operator").await;
        let viewer = admin.with_token(&env.create_token("vera", "vera-ci", None).await);
        let operator = admin.with_token(&env.create_token("otto", "otto-ci", None).await);
        let own_tokens = items(&admin.list_tokens(&[]).await);
        let harness = own_tokens.iter().find(|t| t["name"] == ADMIN_TOKEN_NAME).expect("the harness's token is listed");
        let admin_token_id = field(harness, "id").to_string();

        // Anonymous: 401 on every route but the public ones, unknown paths included.
        let anonymous = admin.anonymous();
        let health = anonymous.health().await;
        assert_eq!(health.expect(StatusCode::OK)["status"], "ok", "{}", health.text);
        let (id, user, token) = (&run.id, &vera.id, &admin_token_id);
        let routes: Vec<(Method, String)> = vec![
            (Method::GET, "/api/v1/auth/me".into()),
            (Method::PUT, "/api/v1/auth/password".into()),
            (Method::GET, "/api/v1/pipelines".into()),
            (Method::GET, "/api/v1/pipelines/quick".into()),
            (Method::POST, RUN_PATH.into()),
            (Method::GET, "/api/v1/runs".into()),
            (Method::GET, format!("/api/v1/runs/{id}")),
            (Method::POST, format!("/api/v1/runs/{id}/cancel")),
            (Method::GET, format!("/api/v1/runs/{id}/logs")),
            (Method::GET, format!("/api/v1/runs/{id}/logs/stream")),
            (Method::GET, "/api/v1/runners".into()),
            (Method::GET, "/api/v1/tokens".into()),
            (Method::POST, "/api/v1/tokens".into()),
            (Method::DELETE, format!("/api/v1/tokens/{token}")),
            (Method::GET, "/api/v1/users".into()),
            (Method::POST, "/api/v1/users".into()),
            (Method::GET, format!("/api/v1/users/{user}")),
            (Method::PUT, format!("/api/v1/users/{user}")),
            (Method::DELETE, format!("/api/v1/users/{user}")),
            (Method::GET, "/api/v1/audit".into()),
            (Method::GET, "/api/v1/no-such-endpoint".into()),
            (Method::DELETE, "/api/v1/pipelines".into()),
        ];
        for (method, path) in &routes {
            let mut request = anonymous.request(method.clone(), path);
            if matches!(*method, Method::POST | Method::PUT) {
                request = request.json(&json!({ "name": "x", "role": "admin", "disabled": true }));
            }
            let response = anonymous.send(request, &format!("anonymous {method} {path}")).await;
            assert_error(&response, StatusCode::UNAUTHORIZED, "Unauthorized");
            assert_eq!(response.header("www-authenticate"), Some("Bearer"), "{method} {path}: {:?}", response.headers);
        }
        // Credentials that are not valid ones are the same as none.
        let unknown_token = admin.with_token(&format!("ff_{}", uuid::Uuid::new_v4().simple()));
        assert_error(&unknown_token.me().await, StatusCode::UNAUTHORIZED, "Unauthorized");
        // Another scheme, a scheme without a token, a token without the scheme.
        for authorization in ["Basic YWRtaW46cGFzc3dvcmQ=", "Bearer", env.admin_token()] {
            let request = anonymous.request(Method::GET, "/api/v1/runs").header("authorization", authorization);
            let response = anonymous.send(request, "GET runs with a malformed Authorization").await;
            assert_error(&response, StatusCode::UNAUTHORIZED, "Unauthorized");
        }
        // Nothing the anonymous requests asked for happened.
        assert_eq!(env.get_run(&run.id).await.status, "queued");
        assert_eq!(items(&admin.list_runs(&[]).await).len(), 1);
        assert_eq!(items(&admin.list_users().await).len(), 3, "admin, vera and otto");
        admin.me().await.expect(StatusCode::OK);
        // Unknown paths are 404 to a signed-in caller.
        assert_error(&admin.json(Method::GET, "/api/v1/no-such-endpoint", None).await, StatusCode::NOT_FOUND, "NotFound");

        // A viewer reads everything…
        viewer.list_pipelines().await.expect(StatusCode::OK);
        viewer.get_pipeline("quick").await.expect(StatusCode::OK);
        assert_eq!(items(&viewer.list_runs(&[]).await).len(), 1);
        viewer.get_run(&run.id).await.run(StatusCode::OK);
        assert_eq!(viewer.get_logs(&run.id).await.status, StatusCode::OK);
        drop(viewer.stream_logs(&run.id, None).await);
        viewer.list_runners().await.expect(StatusCode::OK);
        let me = viewer.me().await;
        assert_eq!(me.expect(StatusCode::OK)["user"]["role"], "viewer", "{}", me.text);
        let names: Vec<String> =
            items(&viewer.list_tokens(&[]).await).iter().map(|t| field(t, "name").to_string()).collect();
        assert_eq!(names, ["vera-ci"], "a viewer lists only their own tokens");
        // …and changes nothing.
        let forbidden = [
            viewer.create_run("quick", None).await,
            viewer.cancel_run(&run.id).await,
            viewer.list_users().await,
            viewer.get_user(&otto.id).await,
            viewer.create_user(&json!({ "username": "mallory", "password": "long-enough-password", "role": "admin" })).await,
            viewer.update_user(&vera.id, &json!({ "role": "admin" })).await,
            viewer.audit(&[]).await,
            viewer.list_tokens(&[("all", "true")]).await,
        ];
        for response in &forbidden {
            assert_error(response, StatusCode::FORBIDDEN, "Forbidden");
        }
        assert_eq!(forbidden[0].body["error"]["details"]["required_role"], "operator", "{}", forbidden[0].text);
        assert_eq!(forbidden[0].body["error"]["details"]["role"], "viewer", "{}", forbidden[0].text);
        // Someone else's token does not exist for a viewer.
        assert_error(&viewer.revoke_token(&admin_token_id).await, StatusCode::NOT_FOUND, "NotFound");
        admin.me().await.expect(StatusCode::OK);
        // A viewer's own tokens: at most a viewer's role.
        let too_high = viewer.create_token(&json!({ "name": "vera-more", "role": "operator" })).await;
        assert_error(&too_high, StatusCode::BAD_REQUEST, "ValidationError");
        let more = viewer.create_token(&json!({ "name": "vera-more" })).await;
        let more = more.expect(StatusCode::CREATED).clone();
        assert_eq!((more["role"].as_str(), more["user_id"].as_str()), (Some("viewer"), Some(vera.id.as_str())), "{more}");
        // Signed in, the viewer reads with the cookie (the log stream too), and still runs nothing.
        let session = env.login(0, "vera", &vera.password).await;
        drop(session.stream_logs(&run.id).await);
        assert_error(&session.change(Method::POST, RUN_PATH, None).await, StatusCode::FORBIDDEN, "Forbidden");

        // An operator starts and cancels runs, and administers nothing.
        let started = operator.create_run("quick", None).await.run(StatusCode::CREATED);
        assert_eq!(started.triggered_by.as_deref(), Some("token:otto-ci"), "{started:?}");
        assert_eq!(operator.cancel_run(&started.id).await.run(StatusCode::ACCEPTED).status, "cancelled");
        for response in [operator.list_users().await, operator.audit(&[]).await, operator.list_tokens(&[("all", "true")]).await] {
            assert_error(&response, StatusCode::FORBIDDEN, "Forbidden");
        }

        // A token's role is at most what it was given: the admin's viewer token only reads.
        let created = admin.create_token(&json!({ "name": "read-only", "role": "viewer" })).await;
        let created = created.expect(StatusCode::CREATED).clone();
        for name in ["id", "name", "role", "user_id", "created_at", "expires_at", "last_used_at"] {
            assert!(created.get(name).is_some(), "the created token lacks `{name}`: {created}");
        }
        let value = field(&created, "token").to_string();
        assert!(value.starts_with("ff_") && value.len() >= 40, "not an ff_ token of 256 bits");
        assert_eq!(created["role"], "viewer");
        let read_only = admin.with_token(&value);
        read_only.list_runs(&[]).await.expect(StatusCode::OK);
        assert_error(&read_only.create_run("quick", None).await, StatusCode::FORBIDDEN, "Forbidden");
        assert_error(&read_only.list_users().await, StatusCode::FORBIDDEN, "Forbidden");
        let expired = admin.create_token(&json!({ "name": "old", "expires_at": "2020-01-01T00:00:00Z" })).await;
        assert_error(&expired, StatusCode::BAD_REQUEST, "ValidationError");
        // Listings never show a token's value.
        let everyone = admin.list_tokens(&[("all", "true")]).await;
        let mut names: Vec<String> = items(&everyone).iter().map(|t| field(t, "name").to_string()).collect();
        names.sort();
        assert_eq!(names, [ADMIN_TOKEN_NAME, "otto-ci", "read-only", "vera-ci", "vera-more"]);
        assert!(items(&everyone).iter().all(|t| t.get("token").is_none()), "{}", everyone.text);
        for secret in [value.as_str(), env.admin_token(), field(&more, "token")] {
            assert!(!everyone.text.contains(secret), "the token listing shows a token's value");
        }
        // A revoked token is refused at once.
        admin.revoke_token(field(&created, "id")).await.expect(StatusCode::NO_CONTENT);
        assert_error(&read_only.list_runs(&[]).await, StatusCode::UNAUTHORIZED, "Unauthorized");

        // Users: validation, and the last admin.
        let short = admin.create_user(&json!({ "username": "shorty", "password": "short", "role": "viewer" })).await;
        assert_error(&short, StatusCode::BAD_REQUEST, "ValidationError");
        let taken = admin.create_user(&json!({ "username": "vera", "password": "long-enough-password", "role": "viewer" })).await;
        assert_error(&taken, StatusCode::CONFLICT, "Conflict");
        assert_eq!(admin.get_user(&vera.id).await.expect(StatusCode::OK)["username"], "vera");
        let users = items(&admin.list_users().await);
        assert!(users.iter().all(|u| u.get("password_hash").is_none() && u.get("password").is_none()), "{users:?}");
        let admin_id = field(users.iter().find(|u| u["username"] == ADMIN_USER).expect("the admin is listed"), "id").to_string();
        for change in [json!({ "role": "operator" }), json!({ "role": "viewer" }), json!({ "disabled": true })] {
            assert_error(&admin.update_user(&admin_id, &change).await, StatusCode::CONFLICT, "LastAdmin");
        }
        assert_error(&admin.delete_user(&admin_id).await, StatusCode::CONFLICT, "LastAdmin");
        assert_eq!(admin.me().await.expect(StatusCode::OK)["user"]["role"], "admin");
        // With a second admin, one of them may go; then the other is the last again.
        let ada = env.create_user("ada", "admin").await;
        let demoted = admin.update_user(&ada.id, &json!({ "role": "viewer" })).await;
        assert_eq!(demoted.expect(StatusCode::OK)["role"], "viewer", "{}", demoted.text);
        assert_error(&admin.update_user(&admin_id, &json!({ "role": "operator" })).await, StatusCode::CONFLICT, "LastAdmin");
        admin.delete_user(&ada.id).await.expect(StatusCode::NO_CONTENT);
        assert_error(&admin.get_user(&ada.id).await, StatusCode::NOT_FOUND, "NotFound");
    }
}

in_both_modes! {
    /// After 5 failed logins the next one waits (429 with Retry-After), even with the right
    /// password and from another address; after the back-off the right password works. An
    /// address guessing at names is held back on its own, without locking others out.
    async fn failed_logins_back_off(options) {
        let env = TestEnv::start(options.runners(0)).await;
        let erin = env.create_user("erin", "viewer").await;
        // The guesser connects from another loopback address than the user.
        let guesser = env.cp(0).anonymous().from_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)));
        let user = env.cp(0).anonymous();
        for attempt in 1..=5 {
            let response = guesser.login("erin", &format!("guess-number-{attempt}")).await;
            assert_error(&response, StatusCode::UNAUTHORIZED, "InvalidCredentials");
        }
        let locked = guesser.login("erin", "guess-number-6").await;
        assert_error(&locked, StatusCode::TOO_MANY_REQUESTS, "TooManyLoginAttempts");
        let retry_after: u64 = locked
            .header("retry-after")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no Retry-After in seconds: {:?}", locked.headers));
        assert!((1..=2).contains(&retry_after), "the first back-off is 1 s: Retry-After {retry_after}");
        assert_eq!(locked.body["error"]["details"]["retry_after_seconds"], retry_after, "{}", locked.text);

        // The right password, from the user's own address: the name is locked for now…
        let refused_at = Instant::now();
        let refused = user.login("erin", &erin.password).await;
        assert_error(&refused, StatusCode::TOO_MANY_REQUESTS, "TooManyLoginAttempts");
        let wait: u64 = refused.header("retry-after").and_then(|v| v.parse().ok()).expect("Retry-After");
        assert!(wait <= retry_after, "the wait grew without a failure: {wait} s after {retry_after} s");
        assert!(set_cookie_header(&refused, SESSION_COOKIE).is_none());
        // …but no longer than the back-off.
        tokio::time::sleep_until((refused_at + Duration::from_secs(wait)).into()).await;
        user.login("erin", &erin.password).await.expect(StatusCode::OK);

        // The guessing address is held back on its own: its next failure (any name) locks
        // it again, even for the right password, while the user signs in from elsewhere.
        let other_name = guesser.login("someone-else", "guess-number-7").await;
        assert_error(&other_name, StatusCode::UNAUTHORIZED, "InvalidCredentials");
        let address_locked = guesser.login("erin", &erin.password).await;
        assert_error(&address_locked, StatusCode::TOO_MANY_REQUESTS, "TooManyLoginAttempts");
        user.login("erin", &erin.password).await.expect(StatusCode::OK);

        // Every refused attempt is in the audit log, with the address it came from.
        let failed = items(&env.cp(0).audit(&[("action", "login_failed"), ("limit", "100")]).await);
        assert_eq!(failed.len(), 9, "6 + 1 + 1 + 1 failed or throttled logins: {failed:#?}");
        let from_guesser = failed.iter().filter(|e| e["client_addr"] == "127.0.0.2").count();
        assert_eq!(from_guesser, 8, "{failed:#?}");
        assert!(failed.iter().all(|e| e["outcome"] == "denied"), "{failed:#?}");
    }
}

in_both_modes! {
    /// The audit log has an entry for each sign-in (ok and failed), user and token creation
    /// (by the CLI and over HTTP), run trigger and cancel, password change and logout, with
    /// who, from where and the outcome; filters and pages work; and no password, token,
    /// session id or CSRF token is in it, nor in the control plane's own log.
    async fn the_audit_log_records_who_did_what_and_no_secret(options) {
        let env = TestEnv::start(options.runners(0)).await;
        let admin = env.cp(0);
        let mut secrets: Vec<String> = vec![env.admin_password().to_string(), env.admin_token().to_string()];
        let frank = env.create_user("frank", "operator").await;
        secrets.push(frank.password.clone());
        let wrong = "franks-wrong-password";
        secrets.push(wrong.to_string());
        assert_error(&admin.anonymous().login("frank", wrong).await, StatusCode::UNAUTHORIZED, "InvalidCredentials");
        let session = env.login(0, "frank", &frank.password).await;
        secrets.extend(session.session_cookie());
        secrets.extend(session.csrf_token());
        let created = session.change(Method::POST, "/api/v1/tokens", Some(&json!({ "name": "frank-ci" }))).await;
        secrets.push(field(created.expect(StatusCode::CREATED), "token").to_string());
        let param_value = "a-parameter-value-7f3a";
        let body = json!({ "params": { "FASTFLOW_MARK": param_value } });
        let run = session.change(Method::POST, RUN_PATH, Some(&body)).await.run(StatusCode::CREATED);
        let cancel = format!("/api/v1/runs/{}/cancel", run.id);
        session.change(Method::POST, &cancel, None).await.run(StatusCode::ACCEPTED);
        let new_password = format!("{}-changed", frank.password);
        secrets.push(new_password.clone());
        let change = json!({ "current_password": frank.password, "new_password": new_password });
        session.change(Method::PUT, "/api/v1/auth/password", Some(&change)).await.expect(StatusCode::NO_CONTENT);
        session.logout().await.expect(StatusCode::NO_CONTENT);

        let audit = admin.audit(&[("limit", "500")]).await;
        let events = items(&audit);
        for event in &events {
            for name in ["id", "at", "actor_kind", "actor", "actor_id", "client_addr", "action", "target", "outcome", "details"] {
                assert!(event.get(name).is_some(), "an audit entry lacks `{name}`: {event}");
            }
            assert!(is_rfc3339(&event["at"]), "{event}");
        }
        let times: Vec<&str> = events.iter().map(|e| field(e, "at")).collect();
        let parsed: Vec<_> = times.iter().map(|t| chrono::DateTime::parse_from_rfc3339(t).expect("at")).collect();
        assert!(parsed.windows(2).all(|w| w[0] >= w[1]), "not newest first: {times:?}");
        let run_target = format!("run:{}", run.id);
        let expected = [
            ("user_create", "system", "cli", "user:admin", "ok"),
            ("token_create", "system", "cli", "token:harness", "ok"),
            ("user_create", "token", ADMIN_TOKEN_NAME, "user:frank", "ok"),
            ("login_failed", "anonymous", "anonymous", "user:frank", "denied"),
            ("login_ok", "user", "frank", "user:frank", "ok"),
            ("token_create", "user", "frank", "token:frank-ci", "ok"),
            ("run_trigger", "user", "frank", run_target.as_str(), "ok"),
            ("run_cancel", "user", "frank", run_target.as_str(), "ok"),
            ("password_change", "user", "frank", "user:frank", "ok"),
            ("logout", "user", "frank", "user:frank", "ok"),
        ];
        for (action, kind, actor, target, outcome) in expected {
            let event = events
                .iter()
                .find(|e| e["action"] == action && e["actor"] == actor && e["target"] == target)
                .unwrap_or_else(|| panic!("no {action} by {actor} on {target} in {events:#?}"));
            assert_eq!((field(event, "actor_kind"), field(event, "outcome")), (kind, outcome), "{event}");
            if kind == "system" {
                assert!(event["client_addr"].is_null(), "the CLI has no client address: {event}");
            } else {
                assert_eq!(event["client_addr"], "127.0.0.1", "{event}");
            }
            if actor == "frank" {
                assert_eq!(event["actor_id"], frank.id.as_str(), "{event}");
            }
        }
        let trigger = events.iter().find(|e| e["action"] == "run_trigger").expect("run_trigger");
        assert!(trigger["details"].to_string().contains("FASTFLOW_MARK"), "the parameter's name: {trigger}");

        // Filters and pages.
        let failed = items(&admin.audit(&[("action", "login_failed")]).await);
        assert!(failed.len() == 1 && failed[0]["target"] == "user:frank", "{failed:#?}");
        let by_frank = items(&admin.audit(&[("actor", "frank")]).await);
        assert_eq!(by_frank.len(), 6, "{by_frank:#?}");
        assert!(by_frank.iter().all(|e| e["actor"] == "frank"), "{by_frank:#?}");
        let first = admin.audit(&[("limit", "2")]).await;
        let cursor = field(first.expect(StatusCode::OK), "next_cursor").to_string();
        let second = admin.audit(&[("limit", "2"), ("cursor", &cursor)]).await;
        let pages: Vec<Value> = items(&first).into_iter().chain(items(&second)).collect();
        let ids: Vec<i64> = pages.iter().map(|e| e["id"].as_i64().expect("id")).collect();
        let newest: Vec<i64> = events.iter().take(4).map(|e| e["id"].as_i64().expect("id")).collect();
        assert_eq!(ids, newest, "two pages of 2 are the 4 newest entries");
        assert_eq!(items(&admin.audit(&[("since", "2999-01-01T00:00:00Z")]).await), Vec::<Value>::new());
        assert_error(&admin.audit(&[("action", "bogus")]).await, StatusCode::BAD_REQUEST, "ValidationError");

        // No secret in the audit log (the raw answer) or in the control plane's output.
        secrets.push(param_value.to_string());
        for secret in &secrets {
            assert!(!audit.text.contains(secret.as_str()), "the audit log holds a secret ({} characters)", secret.len());
        }
        secrets.pop();
        let log = std::fs::read_to_string(env.control_plane_log_path(0)).expect("the control plane's log");
        for secret in &secrets {
            assert!(!log.contains(secret.as_str()), "the control plane logged a secret ({} characters)", secret.len());
        }
    }
}

/// Two replicas: a session made on one works on the other, and what ends a credential on
/// one (logout, revocation, password change, role change) holds on the other within the
/// credential cache's staleness, at once on the replica that made the change.
#[tokio::test(flavor = "multi_thread")]
async fn sessions_and_revocations_hold_on_every_replica() {
    let env = TestEnv::start(TestEnvOptions::default().control_planes(2).runners(0)).await;
    let (a, b) = (env.cp(0), env.cp(1));
    let gina = env.create_user("gina", "operator").await;

    // Sign in on A, use the session on B, a change included.
    let on_a = env.login(0, "gina", &gina.password).await;
    let on_b = on_a.at(&b.base_url);
    assert_eq!(on_b.me().await.expect(StatusCode::OK)["via"], "session");
    let run = on_b.change(Method::POST, RUN_PATH, None).await.run(StatusCode::CREATED);
    assert_eq!(run.triggered_by.as_deref(), Some("user:gina"));
    on_a.me().await.expect(StatusCode::OK);

    // Sign out on B: at once there, within the bound on A.
    let cookie = on_a.session_cookie().expect("the session cookie");
    let (stale_a, stale_b) = (env.session(0), env.session(1));
    stale_a.set_cookie(SESSION_COOKIE, &cookie);
    stale_b.set_cookie(SESSION_COOKIE, &cookie);
    stale_a.me().await.expect(StatusCode::OK);
    on_b.logout().await.expect(StatusCode::NO_CONTENT);
    assert_error(&stale_b.me().await, StatusCode::UNAUTHORIZED, "Unauthorized");
    within_bound("replica A to refuse the session signed out on B", || {
        let stale = stale_a.clone();
        async move { refused(stale.me().await) }
    })
    .await;

    // A token revoked on A: at once there, within the bound on B.
    let created = a.create_token(&json!({ "name": "short-lived" })).await;
    let created = created.expect(StatusCode::CREATED).clone();
    let (token_a, token_b) = (a.with_token(field(&created, "token")), b.with_token(field(&created, "token")));
    token_a.list_runs(&[]).await.expect(StatusCode::OK);
    token_b.list_runs(&[]).await.expect(StatusCode::OK);
    a.revoke_token(field(&created, "id")).await.expect(StatusCode::NO_CONTENT);
    assert_error(&token_a.list_runs(&[]).await, StatusCode::UNAUTHORIZED, "Unauthorized");
    within_bound("replica B to refuse the token revoked on A", || {
        let token_b = token_b.clone();
        async move { refused(token_b.list_runs(&[]).await) }
    })
    .await;

    // A password change on A ends the user's session signed in on B.
    let keeper = env.login(0, "gina", &gina.password).await;
    let other = env.login(1, "gina", &gina.password).await;
    other.me().await.expect(StatusCode::OK);
    let change = json!({ "current_password": gina.password, "new_password": format!("{}-new", gina.password) });
    keeper.change(Method::PUT, "/api/v1/auth/password", Some(&change)).await.expect(StatusCode::NO_CONTENT);
    within_bound("replica B to refuse the session the password change ended", || {
        let other = other.clone();
        async move { refused(other.me().await) }
    })
    .await;
    keeper.at(&b.base_url).me().await.expect(StatusCode::OK);

    // A role change on B: gina's token on A acts as a viewer within the bound.
    let gina_api = a.with_token(&env.create_token("gina", "gina-ci", None).await);
    gina_api.create_run("quick", None).await.run(StatusCode::CREATED);
    b.update_user(&gina.id, &json!({ "role": "viewer" })).await.expect(StatusCode::OK);
    within_bound("replica A to see gina demoted on B", || {
        let gina_api = gina_api.clone();
        async move {
            let me = gina_api.me().await;
            match me.body["user"]["role"].as_str() {
                Some("viewer") => Ok(()),
                _ => Err(format!("HTTP {}: {}", me.status, me.text)),
            }
        }
    })
    .await;
    assert_error(&gina_api.create_run("quick", None).await, StatusCode::FORBIDDEN, "Forbidden");
}

/// A single node whose store has no user creates `admin` with a random password in
/// `DATA_DIR/initial-admin-password` (mode 0600), names the file in its log but never the
/// password, and leaves both alone at the next start.
#[tokio::test(flavor = "multi_thread")]
async fn a_single_node_without_users_creates_its_first_admin() {
    let mut env = TestEnv::start(TestEnvOptions::single_node().runners(0).bootstrap_admin()).await;
    let path = env.initial_admin_password_path();
    let mode = std::fs::metadata(&path).expect("the password file").permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{} must be readable by its owner only", path.display());
    let password = env.admin_password().to_string();
    assert!(password.chars().count() >= 12, "a password of at least 12 characters");
    let log = std::fs::read_to_string(env.control_plane_log_path(0)).expect("the node's log");
    assert!(log.contains(&path.display().to_string()), "the log names the password file:\n{log}");
    assert!(!log.contains(&password), "the log must never hold the password");

    let session = env.login(0, ADMIN_USER, &password).await;
    assert_eq!(session.me().await.expect(StatusCode::OK)["user"]["role"], "admin");
    let users = items(&env.cp(0).list_users().await);
    assert!(users.len() == 1 && users[0]["username"] == ADMIN_USER && users[0]["role"] == "admin", "{users:#?}");

    let before = std::fs::read(&path).expect("the password file");
    env.kill_control_plane(0);
    env.restart_control_plane(0).await;
    assert_eq!(std::fs::read(&path).expect("the password file"), before, "a restart leaves the file alone");
    assert_eq!(items(&env.cp(0).list_users().await).len(), 1, "a restart creates no other user");
    env.login(0, ADMIN_USER, &password).await;
}

/// With an https `PUBLIC_URL` the session cookie is `__Host-fastflow_session` and `Secure`,
/// and changes made with it must come from that origin.
#[tokio::test(flavor = "multi_thread")]
async fn behind_https_the_cookie_is_secure_and_changes_come_from_the_public_origin() {
    let public = "https://ff.example.test";
    let env = TestEnv::start(TestEnvOptions::single_node().runners(0).control_plane_env("PUBLIC_URL", public)).await;
    let hana = env.create_user("hana", "operator").await;

    // The login page is served at the public origin; one at the loopback origin is another site.
    let elsewhere = env.session(0);
    assert_error(&elsewhere.login("hana", &hana.password).await, StatusCode::FORBIDDEN, "CsrfRejected");
    let browser = env.session(0).with_origin(public);
    let login = browser.login("hana", &hana.password).await;
    login.expect(StatusCode::OK);
    let set_cookie = set_cookie_header(&login, SECURE_SESSION_COOKIE)
        .unwrap_or_else(|| panic!("no {SECURE_SESSION_COOKIE} Set-Cookie: {:?}", login.headers));
    let attributes = cookie_attributes(set_cookie);
    for attribute in ["secure", "httponly", "samesite=lax", "path=/"] {
        assert!(attributes.iter().any(|a| a == attribute), "the cookie lacks {attribute}: {attributes:?}");
    }
    assert!(!attributes.iter().any(|a| a.starts_with("domain")), "a __Host- cookie has no Domain: {attributes:?}");
    assert!(set_cookie_header(&login, SESSION_COOKIE).is_none(), "{:?}", login.headers);

    let run = browser.change(Method::POST, RUN_PATH, None).await.run(StatusCode::CREATED);
    assert_eq!(run.triggered_by.as_deref(), Some("user:hana"));
    let loopback = browser.with_origin(&browser.base_url);
    assert_error(&loopback.change(Method::POST, RUN_PATH, None).await, StatusCode::FORBIDDEN, "CsrfRejected");
}

/// Issue 16: credentials given in a service URL or variable never reach the start-up
/// logs (nor anything else the processes print while running a job): the control
/// plane's NATS password rides in `NATS_URL`, `DATABASE_URL` carries a password, the S3
/// keys and the auth-callout seed are variables, a runner has a registration token and
/// then its own secret. Each shows redacted (`***`) where the URL is printed.
#[tokio::test(flavor = "multi_thread")]
async fn the_logs_print_no_credential_given_in_a_url_or_variable() {
    let secret = format!("tok{}", uuid::Uuid::new_v4().simple());
    let env = TestEnv::start(TestEnvOptions::default().credentials_in_urls(&secret)).await;
    // The runner reached NATS with the token, so the job runs.
    let run = env.run_pipeline("quick", &[]).await;
    let done = env.wait_final(&run.id, Duration::from_secs(60)).await;
    assert_eq!(done.status, "success", "{done:?}");

    let read = |path: std::path::PathBuf| {
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
    };
    let control_plane = read(env.control_plane_log_path(0));
    let runner = read(env.runner_log_path(0));
    let runner_secret = env.runner_credentials(0).secret;
    let seed = std::env::var("NATS_AUTH_CALLOUT_SEED").unwrap_or_default();
    let seed_used = env.nats_access().callout_seed;
    for (name, log) in [("control plane", &control_plane), ("runner", &runner)] {
        // (The access key id is a name, like a user name, and may show.)
        let credentials = [
            secret.as_str(),
            env.dev.aws_secret_access_key.as_str(),
            env.registration_token(),
            runner_secret.as_str(),
            seed_used.as_str(),
        ];
        for credential in credentials.into_iter().chain((!seed.is_empty()).then_some(seed.as_str())) {
            assert!(!log.contains(credential), "the {name}'s log shows a credential:\n{log}");
        }
    }
    assert!(control_plane.contains("nats jetstream at nats://control-plane:***@127.0.0.1:"), "{control_plane}");
    assert!(control_plane.contains("postgres://postgres:***@127.0.0.1:"), "{control_plane}");
}

/// Behind a reverse proxy listed in `TRUSTED_PROXIES`, the client address of a login
/// (its back-off and audit entry) is the one the proxy appended to `X-Forwarded-For`;
/// from any other peer the header is ignored (any client can write it).
#[tokio::test(flavor = "multi_thread")]
async fn a_trusted_proxy_names_the_client_and_others_cannot() {
    let env =
        TestEnv::start(TestEnvOptions::default().runners(0).control_plane_env("TRUSTED_PROXIES", "127.0.0.3")).await;
    let proxy = env.cp(0).anonymous().from_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3)));
    let stranger = env.cp(0).anonymous().from_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 4)));
    let body = json!({ "username": "nobody", "password": "not-the-password" });
    for (client, forwarded) in [(&proxy, "6.6.6.6, 198.51.100.7"), (&stranger, "198.51.100.8")] {
        let request =
            client.request(Method::POST, "/api/v1/auth/login").header("x-forwarded-for", forwarded).json(&body);
        let response = client.send(request, "POST /api/v1/auth/login").await;
        assert_error(&response, StatusCode::UNAUTHORIZED, "InvalidCredentials");
    }
    let failed = items(&env.cp(0).audit(&[("action", "login_failed")]).await);
    let mut addresses: Vec<String> =
        failed.iter().map(|e| e["client_addr"].as_str().unwrap_or("none").to_string()).collect();
    addresses.sort();
    assert_eq!(addresses, ["127.0.0.4", "198.51.100.7"], "{failed:#?}");
}
