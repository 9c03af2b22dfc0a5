-- The single-node schema: the final state of migrations/postgres (0001-0005) in
-- SQLite terms. Timestamps are INTEGER unix microseconds (exact comparisons and
-- arithmetic, the same precision as timestamptz), uuids hyphenated TEXT, JSON
-- TEXT, booleans INTEGER 0/1. The store binds every timestamp from Rust, so
-- there are no time defaults. STRICT makes SQLite reject a value of the wrong type.

create table runs (
    id                  text primary key,
    pipeline_name       text not null,
    -- The runner pool the run goes to.
    pool                text not null default 'default',
    status              text not null
        constraint runs_status_check check (status in ('queued', 'running', 'success', 'failed', 'cancelled')),
    attempt             integer not null default 1,
    trigger             text not null default 'api',
    params              text not null default '{}',
    -- The job spec frozen at submit time (image, command, env, code digest, timeout).
    spec                text not null,
    runner_id           text,
    fencing_token       integer not null default 0,
    lease_expires_at    integer,
    cancel_requested_at integer,
    cancel_force        integer not null default 0 check (cancel_force in (0, 1)),
    -- Why a queued run has not started (shown in the run JSON).
    waiting_reason      text,
    exit_code           integer,
    failure_reason      text
        constraint runs_failure_reason_check
        check (failure_reason in ('exit_code', 'timeout', 'cancelled', 'lost', 'setup_error', 'no_runner')),
    error_message       text,
    log_key             text,
    log_size_bytes      integer not null default 0,
    -- Set when the retention sweeper deleted the archived log; the run stays.
    log_expired_at      integer,
    -- The earliest time a retried attempt may start.
    not_before          integer,
    created_at          integer not null,
    started_at          integer,
    finished_at         integer
) strict;

create index runs_newest on runs (created_at desc, id desc);
create index runs_pipeline_newest on runs (pipeline_name, created_at desc, id desc);
create index runs_active on runs (status, created_at) where status in ('queued', 'running');

-- Every finished attempt of a run (the run row holds the current one).
create table run_attempts (
    run_id         text not null references runs (id) on delete cascade,
    attempt        integer not null,
    status         text not null check (status in ('success', 'failed', 'cancelled')),
    failure_reason text,
    exit_code      integer,
    error_message  text,
    runner_id      text,
    started_at     integer,
    finished_at    integer not null,
    log_key        text,
    log_size_bytes integer not null default 0,
    primary key (run_id, attempt)
) strict;

create table runners (
    id                text primary key,
    pool              text not null,
    version           text not null,
    slots             integer not null,
    running           integer not null,
    started_at        integer not null,
    last_heartbeat_at integer not null
) strict;

-- Pipeline code as submitted, keyed by sha256.
create table code_bundles (
    digest     text primary key,
    data       blob not null,
    created_at integer not null
) strict;
