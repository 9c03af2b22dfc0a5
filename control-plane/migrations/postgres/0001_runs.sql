-- Runs, their attempts' state, runners and content-addressed code bundles.
-- Statuses and reasons are the lowercase strings of shared::RunStatus / FailureReason.

create table runs (
    id                  uuid primary key,
    pipeline_name       text not null,
    status              text not null
        check (status in ('queued', 'running', 'success', 'failed', 'cancelled')),
    attempt             integer not null default 1,
    trigger             text not null default 'api',
    params              jsonb not null default '{}'::jsonb,
    -- The job spec frozen at submit time (image, command, env, code digest, timeout).
    spec                jsonb not null,
    runner_id           text,
    fencing_token       bigint not null default 0,
    lease_expires_at    timestamptz,
    cancel_requested_at timestamptz,
    exit_code           bigint,
    failure_reason      text
        check (failure_reason in ('exit_code', 'timeout', 'cancelled', 'lost', 'setup_error')),
    error_message       text,
    log_key             text,
    log_size_bytes      bigint not null default 0,
    created_at          timestamptz not null default now(),
    started_at          timestamptz,
    finished_at         timestamptz
);

create index runs_newest on runs (created_at desc, id desc);
create index runs_pipeline_newest on runs (pipeline_name, created_at desc, id desc);
create index runs_active on runs (status, created_at) where status in ('queued', 'running');

create table runners (
    id                text primary key,
    pool              text not null,
    version           text not null,
    slots             integer not null,
    running           integer not null,
    started_at        timestamptz not null default now(),
    last_heartbeat_at timestamptz not null default now()
);

-- Pipeline code as submitted, keyed by sha256: the source of truth behind the
-- NATS object store, which runners read and which may be wiped.
create table code_bundles (
    digest     text primary key,
    data       bytea not null,
    created_at timestamptz not null default now()
);
