-- Authentication (migrations/postgres/0008_auth.sql in SQLite terms): users, their
-- sessions and API tokens, the audit log, the brute-force counters, and who triggered
-- each run. Timestamps are INTEGER unix microseconds, uuids TEXT, booleans 0/1, JSON TEXT.

create table users (
    id                     text primary key,
    -- Stored lowercased by the domain; the unique index makes the check case-insensitive.
    username               text not null,
    password_hash          text not null,
    role                   text not null constraint users_role_check check (role in ('viewer', 'operator', 'admin')),
    disabled               integer not null default 0 check (disabled in (0, 1)),
    created_at             integer not null,
    updated_at             integer not null,
    -- Bumped whenever the password, the role or `disabled` changes.
    credentials_changed_at integer not null
) strict;
create unique index users_username on users (lower(username));

create table sessions (
    -- SHA-256 (hex) of the 256-bit random id the cookie holds.
    id_hash      text primary key,
    user_id      text not null references users (id) on delete cascade,
    csrf_token   text not null,
    created_at   integer not null,
    last_seen_at integer not null,
    expires_at   integer not null,
    client_addr  text,
    user_agent   text
) strict;
create index sessions_user on sessions (user_id);
create index sessions_expires on sessions (expires_at);

create table api_tokens (
    id           text primary key,
    name         text not null,
    token_hash   text not null,
    user_id      text not null references users (id) on delete cascade,
    role         text not null constraint api_tokens_role_check check (role in ('viewer', 'operator', 'admin')),
    created_at   integer not null,
    last_used_at integer,
    expires_at   integer,
    revoked_at   integer
) strict;
create unique index api_tokens_hash on api_tokens (token_hash);
create unique index api_tokens_user_name on api_tokens (user_id, name) where revoked_at is null;

-- Append-only (the triggers below refuse updates and deletes).
create table audit_events (
    id          integer primary key autoincrement,
    at          integer not null,
    actor_kind  text not null
        constraint audit_events_actor_kind_check check (actor_kind in ('user', 'token', 'system', 'anonymous')),
    actor       text not null,
    actor_id    text,
    client_addr text,
    action      text not null,
    target      text,
    outcome     text not null constraint audit_events_outcome_check check (outcome in ('ok', 'denied', 'failed')),
    details     text
) strict;
create index audit_events_newest on audit_events (at desc, id desc);
create index audit_events_action on audit_events (action, at desc, id desc);
create index audit_events_actor on audit_events (actor, at desc, id desc);
create trigger audit_events_no_update before update on audit_events
    begin select raise(abort, 'audit_events is append-only'); end;
create trigger audit_events_no_delete before delete on audit_events
    begin select raise(abort, 'audit_events is append-only'); end;

create table login_failures (
    key             text primary key,
    failures        integer not null,
    last_failure_at integer not null,
    locked_until    integer
) strict;

alter table runs add column triggered_by text;
