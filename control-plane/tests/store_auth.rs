//! Store behaviour of authentication on both backends (`both!`, see
//! `support/test_db.rs`): users, sessions, API tokens, the last-admin guard, the
//! audit log and the login failure counters, plus `runs.triggered_by`.

#[macro_use]
#[path = "support/test_db.rs"]
mod test_db;

use chrono::{Duration as Span, Utc};
use control_plane::store::audit::{ActorKind, AuditFilter, AuditOutcome, NewAuditEvent};
use control_plane::store::auth::{NewSession, NewToken, NewUser, Role, User, UserUpdate};
use control_plane::store::runs::NewRun;
use control_plane::store::{Error, Store};
use serde_json::json;
use std::time::Duration;
use test_db::{TestDb, run_on};
use uuid::Uuid;

async fn user(store: &Store, name: &str, role: Role) -> User {
    store
        .create_user(&NewUser { id: Uuid::now_v7(), username: name, password_hash: "$argon2id$fake", role })
        .await
        .unwrap_or_else(|e| panic!("create_user {name}: {e}"))
}

async fn session(store: &Store, user: &User, hash: &str, expires_in: Span) {
    store
        .create_session(&NewSession {
            id_hash: hash,
            user_id: user.id,
            csrf_token: "csrf",
            expires_at: Utc::now() + expires_in,
            client_addr: Some("127.0.0.1"),
            user_agent: None,
        })
        .await
        .expect("create_session");
}

async fn session_exists(store: &Store, hash: &str) -> bool {
    store.find_session_by_hash(hash).await.expect("find_session_by_hash").is_some()
}

fn update(role: Option<Role>, disabled: Option<bool>) -> UserUpdate<'static> {
    UserUpdate { role, disabled, ..Default::default() }
}

both!(usernames_are_unique_in_any_case);
async fn usernames_are_unique_in_any_case(store: Store) {
    assert_eq!(store.count_users().await.expect("count"), 0);
    let alice = user(&store, "alice", Role::Admin).await;
    assert!(!alice.disabled && alice.role == Role::Admin);
    let taken = store
        .create_user(&NewUser { id: Uuid::now_v7(), username: "ALICE", password_hash: "x", role: Role::Viewer })
        .await;
    assert!(matches!(taken, Err(Error::Conflict { what: "username" })), "{taken:?}");
    let found = store.get_user_by_name("Alice").await.expect("get").expect("found in any case");
    assert_eq!(found, alice);
    assert_eq!(store.get_user(alice.id).await.expect("get").as_ref(), Some(&alice));
    assert!(store.get_user_by_name("bob").await.expect("get").is_none());
    user(&store, "bob", Role::Viewer).await;
    let names: Vec<String> = store.list_users().await.expect("list").into_iter().map(|u| u.username).collect();
    assert_eq!(names, ["alice", "bob"]);
    assert_eq!(store.count_users().await.expect("count"), 2);
}

both!(sessions_join_their_user_and_end);
async fn sessions_join_their_user_and_end(store: Store) {
    let alice = user(&store, "alice", Role::Operator).await;
    session(&store, &alice, "live", Span::hours(1)).await;
    session(&store, &alice, "past", Span::seconds(-1)).await;
    let (s, u) = store.find_session_by_hash("live").await.expect("find").expect("live session");
    assert_eq!((s.user_id, s.csrf_token.as_str(), s.client_addr.as_deref()), (alice.id, "csrf", Some("127.0.0.1")));
    assert_eq!(u, alice);
    assert!(!session_exists(&store, "past").await, "past its absolute end");
    assert!(!session_exists(&store, "unknown").await);
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(store.touch_session("live").await.expect("touch"));
    let (touched, _) = store.find_session_by_hash("live").await.expect("find").expect("live");
    assert!(touched.last_seen_at > s.last_seen_at);
    assert!(!store.touch_session("unknown").await.expect("touch"));
    // Purge: past their absolute end, or idle too long.
    assert_eq!(store.purge_expired_sessions(Duration::from_secs(3600)).await.expect("purge"), 1);
    assert!(session_exists(&store, "live").await);
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(store.purge_expired_sessions(Duration::from_millis(1)).await.expect("purge idle"), 1);
    assert!(!session_exists(&store, "live").await);
    // A disabled user's session is still found: the domain refuses it.
    store.update_user(alice.id, &update(None, Some(true))).await.expect("disable");
    session(&store, &alice, "after", Span::hours(1)).await;
    let (_, u) = store.find_session_by_hash("after").await.expect("find").expect("found");
    assert!(u.disabled);
    session(&store, &alice, "x", Span::hours(1)).await;
    assert!(store.delete_session("x").await.expect("delete"));
    assert!(!store.delete_session("x").await.expect("delete again"));
}

both!(credential_changes_end_sessions_but_the_kept_one);
async fn credential_changes_end_sessions_but_the_kept_one(store: Store) {
    let alice = user(&store, "alice", Role::Operator).await;
    let bob = user(&store, "bob", Role::Operator).await;
    for hash in ["a1", "a2", "a3"] {
        session(&store, &alice, hash, Span::hours(1)).await;
    }
    session(&store, &bob, "b1", Span::hours(1)).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let change = UserUpdate { password_hash: Some("$argon2id$new"), keep_session: Some("a2"), ..Default::default() };
    let changed = store.update_user(alice.id, &change).await.expect("update").expect("alice");
    assert_eq!(changed.password_hash, "$argon2id$new");
    assert!(changed.credentials_changed_at > alice.credentials_changed_at);
    assert_eq!(changed.role, Role::Operator, "unchanged fields stay");
    let left: Vec<bool> = futures_all(&store, &["a1", "a2", "a3", "b1"]).await;
    assert_eq!(left, [false, true, false, true], "only the kept session and other users' remain");
    store.update_user(alice.id, &update(Some(Role::Viewer), None)).await.expect("demote").expect("alice");
    assert!(!session_exists(&store, "a2").await, "a role change ends every session");
    // Deleting a user deletes their sessions (cascade).
    assert!(store.delete_user(bob.id).await.expect("delete"));
    assert!(!session_exists(&store, "b1").await);
    // An empty update changes nothing.
    let same = store.update_user(alice.id, &UserUpdate::default()).await.expect("noop").expect("alice");
    assert_eq!(same.role, Role::Viewer);
    assert_eq!(store.delete_user_sessions(alice.id, None).await.expect("none left"), 0);
}

async fn futures_all(store: &Store, hashes: &[&str]) -> Vec<bool> {
    let mut out = Vec::new();
    for hash in hashes {
        out.push(session_exists(store, hash).await);
    }
    out
}

both!(the_last_enabled_admin_stays);
async fn the_last_enabled_admin_stays(store: Store) {
    let root = user(&store, "root", Role::Admin).await;
    let op = user(&store, "op", Role::Operator).await;
    for change in
        [update(Some(Role::Operator), None), update(None, Some(true)), update(Some(Role::Viewer), Some(false))]
    {
        let refused = store.update_user(root.id, &change).await;
        assert!(matches!(refused, Err(Error::LastAdmin)), "{refused:?}");
    }
    assert!(matches!(store.delete_user(root.id).await, Err(Error::LastAdmin)));
    // Changes that keep an enabled admin pass: a password, or promoting another.
    let keep = UserUpdate { password_hash: Some("h"), ..Default::default() };
    assert!(store.update_user(root.id, &keep).await.expect("password").is_some());
    assert!(store.update_user(root.id, &update(Some(Role::Admin), Some(false))).await.expect("same").is_some());
    store.update_user(op.id, &update(Some(Role::Admin), None)).await.expect("promote").expect("op");
    store.update_user(root.id, &update(None, Some(true))).await.expect("disable root").expect("root");
    // A disabled admin does not count: op is now the last enabled one.
    assert!(matches!(store.update_user(op.id, &update(Some(Role::Viewer), None)).await, Err(Error::LastAdmin)));
    assert!(matches!(store.delete_user(op.id).await, Err(Error::LastAdmin)));
    // Re-enabling root makes room again.
    store.update_user(root.id, &update(None, Some(false))).await.expect("enable").expect("root");
    assert!(store.delete_user(op.id).await.expect("delete op"));
    // Unknown users: no error, nothing done.
    assert_eq!(store.update_user(Uuid::now_v7(), &update(Some(Role::Viewer), None)).await.expect("unknown"), None);
    assert!(!store.delete_user(Uuid::now_v7()).await.expect("unknown"));

    // Two admins demoting each other at once: exactly one wins.
    let other = user(&store, "other", Role::Admin).await;
    let demote = update(Some(Role::Viewer), None);
    let (a, b) = tokio::join!(store.update_user(root.id, &demote), store.update_user(other.id, &demote));
    let wins = [&a, &b].iter().filter(|r| matches!(r, Ok(Some(_)))).count();
    let refusals = [&a, &b].iter().filter(|r| matches!(r, Err(Error::LastAdmin))).count();
    assert_eq!((wins, refusals), (1, 1), "{a:?} {b:?}");
}

both!(tokens_find_revoke_and_expire);
async fn tokens_find_revoke_and_expire(store: Store) {
    let alice = user(&store, "alice", Role::Operator).await;
    let bob = user(&store, "bob", Role::Viewer).await;
    let new = |name: &'static str, hash: &'static str, owner: &User, expires_at| NewToken {
        id: Uuid::now_v7(),
        name,
        token_hash: hash,
        user_id: owner.id,
        role: Role::Viewer,
        expires_at,
    };
    let ci = store.create_token(&new("ci", "h-ci", &alice, None)).await.expect("create");
    assert_eq!((ci.name.as_str(), ci.role, ci.revoked_at, ci.last_used_at), ("ci", Role::Viewer, None, None));
    let dup = store.create_token(&new("ci", "h-other", &alice, None)).await;
    assert!(matches!(dup, Err(Error::Conflict { what: "token name" })), "{dup:?}");
    store.create_token(&new("ci", "h-bob", &bob, None)).await.expect("names are per user");
    let (token, owner) = store.find_token_by_hash("h-ci").await.expect("find").expect("active");
    assert_eq!((token.id, owner.id), (ci.id, alice.id));
    store.touch_token_last_used(ci.id).await.expect("touch");
    assert!(store.get_token(ci.id).await.expect("get").and_then(|t| t.last_used_at).is_some());

    let past = store.create_token(&new("old", "h-old", &alice, Some(Utc::now() - Span::seconds(1)))).await;
    assert!(past.is_ok());
    assert!(store.find_token_by_hash("h-old").await.expect("find").is_none(), "expired");
    let later = Some(Utc::now() + Span::hours(1));
    store.create_token(&new("later", "h-later", &alice, later)).await.expect("create");
    assert!(store.find_token_by_hash("h-later").await.expect("find").is_some());

    assert!(store.revoke_token(ci.id).await.expect("revoke"));
    assert!(!store.revoke_token(ci.id).await.expect("revoke again"), "was not active");
    assert!(store.find_token_by_hash("h-ci").await.expect("find").is_none(), "revoked");
    assert!(store.get_token(ci.id).await.expect("get").and_then(|t| t.revoked_at).is_some());
    store.create_token(&new("ci", "h-ci2", &alice, None)).await.expect("a revoked token's name is free");

    let mine: Vec<String> =
        store.list_tokens(Some(alice.id)).await.expect("list").into_iter().map(|t| t.name).collect();
    assert_eq!(mine, ["ci", "later", "old", "ci"], "newest first, revoked included");
    assert_eq!(store.list_tokens(None).await.expect("all").len(), 5);
    // Deleting the owner deletes the tokens.
    assert!(store.delete_user(bob.id).await.expect("delete"));
    assert!(store.find_token_by_hash("h-bob").await.expect("find").is_none());
    assert_eq!(store.list_tokens(None).await.expect("all").len(), 4);
}

both!(audit_lists_newest_first_with_filters_and_cursor);
async fn audit_lists_newest_first_with_filters_and_cursor(store: Store) {
    let actor_id = Uuid::now_v7();
    let details = json!({"role": "operator"});
    for (actor, action) in
        [("alice", "login_ok"), ("bob", "login_failed"), ("alice", "token_create"), ("alice", "logout")]
    {
        let event = NewAuditEvent {
            actor_kind: ActorKind::User,
            actor,
            actor_id: Some(actor_id),
            client_addr: Some("10.0.0.1"),
            action,
            target: Some("user:alice"),
            outcome: if action == "login_failed" { AuditOutcome::Denied } else { AuditOutcome::Ok },
            details: Some(&details),
        };
        store.insert_audit(&event).await.expect("insert");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let system = NewAuditEvent {
        actor_kind: ActorKind::System,
        actor: "system",
        actor_id: None,
        client_addr: None,
        action: "user_create",
        target: None,
        outcome: AuditOutcome::Ok,
        details: None,
    };
    let last = store.insert_audit(&system).await.expect("insert");
    let all = store.list_audit(&AuditFilter { limit: 100, ..Default::default() }).await.expect("list");
    let actions: Vec<&str> = all.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["user_create", "logout", "token_create", "login_failed", "login_ok"]);
    assert_eq!(all[0].id, last);
    assert_eq!((all[0].actor_kind, all[0].actor_id, all[0].details.as_ref()), (ActorKind::System, None, None));
    assert_eq!(all[1].details.as_ref(), Some(&details));
    assert_eq!((all[1].actor_id, all[1].client_addr.as_deref()), (Some(actor_id), Some("10.0.0.1")));
    assert_eq!(all[3].outcome, AuditOutcome::Denied);

    // Pages of two, following the cursor.
    let mut seen = Vec::new();
    let mut filter = AuditFilter { limit: 2, ..Default::default() };
    loop {
        let page = store.list_audit(&filter).await.expect("page");
        seen.extend(page.iter().map(|e| e.id));
        match page.last() {
            Some(e) if page.len() == 2 => filter.before = Some((e.at, e.id)),
            _ => break,
        }
    }
    assert_eq!(seen, all.iter().map(|e| e.id).collect::<Vec<_>>());

    let by_actor = AuditFilter { actor: Some("alice".into()), limit: 100, ..Default::default() };
    assert_eq!(store.list_audit(&by_actor).await.expect("actor").len(), 3);
    let by_action = AuditFilter { action: Some("login_failed".into()), limit: 100, ..Default::default() };
    let failed = store.list_audit(&by_action).await.expect("action");
    assert_eq!(failed.iter().map(|e| e.actor.as_str()).collect::<Vec<_>>(), ["bob"]);
    let since = AuditFilter { since: Some(all[1].at), limit: 100, ..Default::default() };
    assert_eq!(store.list_audit(&since).await.expect("since").len(), 2);
}

fn lock_from_the_third(failures: i32) -> Option<Duration> {
    (failures >= 3).then(|| Duration::from_secs(60))
}

both!(login_failures_count_lock_and_clear);
async fn login_failures_count_lock_and_clear(store: Store) {
    let hour = Duration::from_secs(3600);
    assert!(store.login_failure("user:alice").await.expect("read").is_none());
    for expected in 1..=2 {
        let f = store.record_login_failure("user:alice", hour, lock_from_the_third).await.expect("record");
        assert_eq!((f.failures, f.locked_until), (expected, None));
    }
    let f = store.record_login_failure("user:alice", hour, lock_from_the_third).await.expect("record");
    assert_eq!(f.failures, 3);
    let until = f.locked_until.expect("locked from the third failure");
    assert!(until > Utc::now() + Span::seconds(50) && until < Utc::now() + Span::seconds(70));
    assert_eq!(store.login_failure("user:alice").await.expect("read").map(|f| f.failures), Some(3));
    // Other keys are separate.
    let addr = store.record_login_failure("addr:10.0.0.1", hour, lock_from_the_third).await.expect("record");
    assert_eq!(addr.failures, 1);
    store.clear_login_failures("user:alice").await.expect("clear");
    assert!(store.login_failure("user:alice").await.expect("read").is_none());
    assert!(store.login_failure("addr:10.0.0.1").await.expect("read").is_some());
    // A counter whose last failure is older than `reset_after` starts again.
    store.record_login_failure("user:bob", hour, lock_from_the_third).await.expect("record");
    tokio::time::sleep(Duration::from_millis(5)).await;
    let f =
        store.record_login_failure("user:bob", Duration::from_millis(1), lock_from_the_third).await.expect("record");
    assert_eq!(f.failures, 1);
    // Concurrent failures are all counted.
    let (a, b) = tokio::join!(
        store.record_login_failure("user:carol", hour, lock_from_the_third),
        store.record_login_failure("user:carol", hour, lock_from_the_third)
    );
    let mut counts = [a.expect("a").failures, b.expect("b").failures];
    counts.sort();
    assert_eq!(counts, [1, 2]);
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(store.purge_login_failures(Duration::from_millis(1)).await.expect("purge"), 3);
}

both!(runs_record_who_triggered_them);
async fn runs_record_who_triggered_them(store: Store) {
    let new = |triggered_by| NewRun {
        id: Uuid::now_v7(),
        pipeline_name: "p",
        pool: "default",
        params: json!({}),
        spec: json!({"image": "x"}),
        timeout_seconds: None,
        triggered_by,
    };
    let by_alice = store.insert_run(new(Some("user:alice"))).await.expect("insert");
    let unknown = store.insert_run(new(None)).await.expect("insert");
    assert_eq!(by_alice.triggered_by.as_deref(), Some("user:alice"));
    let read = store.get_run(by_alice.id).await.expect("get").expect("run");
    assert_eq!(read.triggered_by.as_deref(), Some("user:alice"));
    assert_eq!(store.get_run(unknown.id).await.expect("get").and_then(|r| r.triggered_by), None);
    let exported = store.export_runs(None, 10).await.expect("export");
    assert_eq!(exported[0].run.triggered_by.as_deref(), Some("user:alice"));
}

/// `migrate-store` moves users and tokens: SQLite → Postgres, every column kept,
/// and a second pass copies nothing.
#[tokio::test]
async fn users_and_tokens_move_between_backends() {
    let (source_db, source) = TestDb::sqlite().await;
    let (target_db, target) = TestDb::postgres().await;
    let outcome = tokio::spawn(async move {
        let alice = user(&source, "alice", Role::Admin).await;
        let bob = user(&source, "bob", Role::Viewer).await;
        source.update_user(bob.id, &update(None, Some(true))).await.expect("disable");
        for (name, hash, owner) in [("ci", "h1", &alice), ("old", "h2", &alice), ("ci", "h3", &bob)] {
            let expires_at = Some(Utc::now() + Span::days(1));
            let new = NewToken {
                id: Uuid::now_v7(),
                name,
                token_hash: hash,
                user_id: owner.id,
                role: Role::Viewer,
                expires_at,
            };
            source.create_token(&new).await.expect("token");
        }
        let old = source.list_tokens(Some(alice.id)).await.expect("list").into_iter().find(|t| t.name == "old");
        source.revoke_token(old.expect("old").id).await.expect("revoke");
        source.touch_token_last_used(source.list_tokens(None).await.expect("list")[0].id).await.expect("touch");

        for pass in 0..2 {
            let mut copied = 0;
            for u in source.export_users().await.expect("export users") {
                copied += usize::from(target.import_user(&u).await.expect("import user"));
            }
            for t in source.export_tokens().await.expect("export tokens") {
                copied += usize::from(target.import_token(&t).await.expect("import token"));
            }
            assert_eq!(copied, if pass == 0 { 5 } else { 0 }, "pass {pass}");
        }
        assert_eq!(target.export_users().await.expect("users"), source.export_users().await.expect("users"));
        assert_eq!(target.export_tokens().await.expect("tokens"), source.export_tokens().await.expect("tokens"));
        let (_, owner) = target.find_token_by_hash("h1").await.expect("find").expect("active on the target");
        assert_eq!(owner.username, "alice");
    })
    .await;
    source_db.remove().await;
    target_db.remove().await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}
