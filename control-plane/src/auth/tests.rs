//! The domain over a real (SQLite) store: login, session and token authentication,
//! the throttle, credential changes and the cache.

use super::sessions::{self, LoginRequest};
use super::tokens::{self, NewTokenRequest};
use super::users::{self, AdminUpdate, NewUserRequest};
use super::{Authenticator, Error, Role, Via, throttle};
use crate::config::SessionSettings;
use crate::store::Store;
use chrono::Utc;
use std::path::PathBuf;
use std::time::Duration;

const PASSWORD: &str = "correct horse battery";

async fn store() -> (PathBuf, Store) {
    let dir = std::env::temp_dir().join(format!("fastflow-auth-{}", uuid::Uuid::new_v4().simple()));
    let store = Store::connect(&format!("sqlite://{}/fastflow.db", dir.display())).await.expect("store");
    (dir, store)
}

fn login_as<'a>(username: &'a str, password: &'a str, addr: &'a str) -> LoginRequest<'a> {
    LoginRequest { username, password, client_addr: Some(addr), user_agent: Some("test") }
}

#[tokio::test]
async fn login_authenticate_logout_and_credential_changes() {
    let (dir, store) = store().await;
    let settings = SessionSettings::default();
    let admin = users::create(&store, &NewUserRequest { username: "Root", password: PASSWORD, role: Role::Admin })
        .await
        .expect("create");
    assert_eq!(admin.username, "root");
    let taken =
        users::create(&store, &NewUserRequest { username: "ROOT", password: PASSWORD, role: Role::Viewer }).await;
    assert!(matches!(taken, Err(Error::UsernameTaken)), "{taken:?}");

    // Unknown user and wrong password: the same error.
    let unknown = sessions::login(&store, &settings, &login_as("nobody", PASSWORD, "10.0.0.1")).await;
    let wrong = sessions::login(&store, &settings, &login_as("root", "wrong password!", "10.0.0.1")).await;
    assert!(matches!(unknown, Err(Error::InvalidCredentials)) && matches!(wrong, Err(Error::InvalidCredentials)));

    let first = sessions::login(&store, &settings, &login_as("ROOT", PASSWORD, "10.0.0.2")).await.expect("login");
    let second = sessions::login(&store, &settings, &login_as("root", PASSWORD, "10.0.0.2")).await.expect("login");
    assert_ne!(first.session_id, second.session_id, "a new id at every login");
    assert_ne!(first.csrf_token, second.csrf_token);
    let auth = Authenticator::new(store.clone(), settings);
    let principal = auth.session(first.session_id.expose()).await.expect("auth").expect("valid session");
    assert_eq!((principal.username.as_str(), principal.role), ("root", Role::Admin));
    assert!(principal.csrf_matches(&first.csrf_token) && !principal.csrf_matches(&second.csrf_token));
    assert_eq!(principal.triggered_by(), "user:root");
    assert!(auth.session("not a session").await.expect("auth").is_none());

    // A password change keeps the session it came from and ends the others.
    let Via::Session { session_hash, .. } = &principal.via else { panic!("a session principal") };
    let changed = users::change_password(&store, admin.id, "wrong password!", "new long password", None).await;
    assert!(matches!(changed, Err(Error::WrongPassword)));
    users::change_password(&store, admin.id, PASSWORD, "new long password", Some(session_hash)).await.expect("change");
    auth.invalidate_user(admin.id);
    assert!(auth.session(first.session_id.expose()).await.expect("auth").is_some(), "the kept session");
    assert!(auth.session(second.session_id.expose()).await.expect("auth").is_none(), "the other one ended");
    assert!(sessions::logout(&store, first.session_id.expose()).await.expect("logout"));
    auth.invalidate_session(session_hash);
    assert!(auth.session(first.session_id.expose()).await.expect("auth").is_none());

    // The last admin stays; disabling a user ends their login.
    let demote = AdminUpdate { role: Some(Role::Viewer), ..Default::default() };
    assert!(matches!(users::admin_update(&store, admin.id, &demote).await, Err(Error::LastAdmin)));
    let op = users::create(&store, &NewUserRequest { username: "op", password: PASSWORD, role: Role::Operator })
        .await
        .expect("create");
    let disable = AdminUpdate { disabled: Some(true), ..Default::default() };
    users::admin_update(&store, op.id, &disable).await.expect("disable");
    let refused = sessions::login(&store, &settings, &login_as("op", PASSWORD, "10.0.0.3")).await;
    assert!(matches!(refused, Err(Error::InvalidCredentials)), "a disabled user cannot log in");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn failed_logins_back_off_per_username_and_address() {
    let (dir, store) = store().await;
    let settings = SessionSettings::default();
    users::create(&store, &NewUserRequest { username: "alice", password: PASSWORD, role: Role::Viewer })
        .await
        .expect("create");
    for _ in 0..throttle::LOCKOUT_AFTER {
        let r = sessions::login(&store, &settings, &login_as("alice", "guess guess guess", "10.6.6.6")).await;
        assert!(matches!(r, Err(Error::InvalidCredentials)), "{r:?}");
    }
    // Locked now, even with the right password, from the attacker's address or another.
    let r = sessions::login(&store, &settings, &login_as("alice", PASSWORD, "10.6.6.6")).await;
    let Err(Error::RetryAfter(wait)) = r else { panic!("expected a back-off, got {r:?}") };
    assert!(wait <= throttle::FIRST_LOCKOUT, "{wait:?}");
    let r = sessions::login(&store, &settings, &login_as("alice", PASSWORD, "10.1.1.1")).await;
    assert!(matches!(r, Err(Error::RetryAfter(_))), "{r:?}");
    // After the back-off the real user gets in from elsewhere, which clears the username only.
    tokio::time::sleep(throttle::FIRST_LOCKOUT + Duration::from_millis(50)).await;
    sessions::login(&store, &settings, &login_as("alice", PASSWORD, "10.1.1.1")).await.expect("login");
    assert!(store.login_failure(&throttle::user_key("alice")).await.expect("read").is_none());
    assert!(store.login_failure(&throttle::addr_key("10.6.6.6")).await.expect("read").is_some());
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn tokens_act_with_the_lower_role_until_revoked() {
    let (dir, store) = store().await;
    let op = users::create(&store, &NewUserRequest { username: "op", password: PASSWORD, role: Role::Operator })
        .await
        .expect("create");
    let request = |role, expires_at| NewTokenRequest { name: "ci", role, expires_at };
    let too_high = tokens::create(&store, &op, Role::Admin, &request(Some(Role::Admin), None)).await;
    assert!(matches!(too_high, Err(Error::RoleTooHigh { max: Role::Operator })), "{too_high:?}");
    let past = tokens::create(&store, &op, Role::Operator, &request(None, Some(Utc::now()))).await;
    assert!(matches!(past, Err(Error::ExpiryInPast)));
    let bad_name = NewTokenRequest { name: " ", role: None, expires_at: None };
    assert!(matches!(tokens::create(&store, &op, Role::Operator, &bad_name).await, Err(Error::InvalidTokenName)));
    let created = tokens::create(&store, &op, Role::Operator, &request(None, None)).await.expect("create");
    assert_eq!(created.info.role, Role::Operator, "defaults to the most allowed");
    let dup = tokens::create(&store, &op, Role::Operator, &request(None, None)).await;
    assert!(matches!(dup, Err(Error::TokenNameTaken)));

    let auth = Authenticator::new(store.clone(), SessionSettings::default());
    let raw = created.token.expose();
    let principal = auth.bearer(raw).await.expect("auth").expect("valid token");
    assert_eq!((principal.role, principal.triggered_by()), (Role::Operator, "token:ci".to_owned()));
    assert!(!principal.csrf_matches(""), "tokens have no CSRF token");
    assert!(auth.bearer("ff_nope").await.expect("auth").is_none());
    assert!(store.get_token(created.info.id).await.expect("get").and_then(|t| t.last_used_at).is_some());

    // Demoting the owner caps the token.
    users::admin_update(&store, op.id, &AdminUpdate { role: Some(Role::Viewer), ..Default::default() })
        .await
        .expect("demote");
    auth.invalidate_user(op.id);
    assert_eq!(auth.bearer(raw).await.expect("auth").map(|p| p.role), Some(Role::Viewer));

    // Revocation: at once here (invalidate), within the staleness bound elsewhere.
    let elsewhere = Authenticator::new(store.clone(), SessionSettings::default());
    assert!(elsewhere.bearer(raw).await.expect("auth").is_some());
    assert!(tokens::revoke(&store, created.info.id).await.expect("revoke"));
    auth.invalidate_token(created.info.id);
    assert!(auth.bearer(raw).await.expect("auth").is_none());
    tokio::time::sleep(super::cache::STALENESS).await;
    assert!(elsewhere.bearer(raw).await.expect("auth").is_none(), "the other replica's cache expired");
    assert!(!tokens::revoke(&store, created.info.id).await.expect("revoke again"));
    let _ = std::fs::remove_dir_all(dir);
}
