-- Authentication: users, their sessions and API tokens, the audit log, the shared
-- brute-force counters, and who triggered each run. Secrets are never stored: sessions
-- and tokens by the hex SHA-256 of their random value, passwords as Argon2id PHC strings.

create table users (
    id                     uuid primary key,
    -- Stored lowercased by the domain; the unique index makes the check case-insensitive
    -- whatever a caller writes.
    username               text not null,
    password_hash          text not null,
    role                   text not null constraint users_role_check check (role in ('viewer', 'operator', 'admin')),
    disabled               boolean not null default false,
    created_at             timestamptz not null default now(),
    updated_at             timestamptz not null default now(),
    -- Bumped whenever the password, the role or `disabled` changes.
    credentials_changed_at timestamptz not null default now()
);
create unique index users_username on users (lower(username));

create table sessions (
    -- SHA-256 (hex) of the 256-bit random id the cookie holds.
    id_hash      text primary key,
    user_id      uuid not null references users (id) on delete cascade,
    csrf_token   text not null,
    created_at   timestamptz not null default now(),
    last_seen_at timestamptz not null default now(),
    -- The absolute end (SESSION_MAX_AGE); the idle timeout is checked against last_seen_at.
    expires_at   timestamptz not null,
    client_addr  text,
    user_agent   text
);
create index sessions_user on sessions (user_id);
create index sessions_expires on sessions (expires_at);

create table api_tokens (
    id           uuid primary key,
    name         text not null,
    -- SHA-256 (hex) of the token.
    token_hash   text not null,
    user_id      uuid not null references users (id) on delete cascade,
    role         text not null constraint api_tokens_role_check check (role in ('viewer', 'operator', 'admin')),
    created_at   timestamptz not null default now(),
    last_used_at timestamptz,
    expires_at   timestamptz,
    revoked_at   timestamptz
);
create unique index api_tokens_hash on api_tokens (token_hash);
-- A revoked token's name may be used again.
create unique index api_tokens_user_name on api_tokens (user_id, name) where revoked_at is null;

-- Append-only (the trigger below refuses updates and deletes).
create table audit_events (
    id          bigserial primary key,
    at          timestamptz not null default now(),
    actor_kind  text not null
        constraint audit_events_actor_kind_check check (actor_kind in ('user', 'token', 'system', 'anonymous')),
    actor       text not null,
    actor_id    uuid,
    client_addr text,
    action      text not null,
    target      text,
    outcome     text not null constraint audit_events_outcome_check check (outcome in ('ok', 'denied', 'failed')),
    details     jsonb
);
create index audit_events_newest on audit_events (at desc, id desc);
create index audit_events_action on audit_events (action, at desc, id desc);
create index audit_events_actor on audit_events (actor, at desc, id desc);

create function audit_events_append_only() returns trigger language plpgsql as $$
begin
    raise exception 'audit_events is append-only';
end;
$$;
create trigger audit_events_append_only before update or delete on audit_events
    for each row execute function audit_events_append_only();

-- Failed logins per key (`user:<name>`, `addr:<ip>`), shared by every replica.
create table login_failures (
    key             text primary key,
    failures        integer not null,
    last_failure_at timestamptz not null,
    locked_until    timestamptz
);

-- Who triggered a run: `user:<name>`, `token:<name>`, later `schedule:…`, `webhook:…`.
alter table runs add column triggered_by text;
