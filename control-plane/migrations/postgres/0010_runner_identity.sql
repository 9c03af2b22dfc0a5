-- Runner identity (issue 18): registration tokens an admin creates, and the runners
-- enrolled with them. Secrets are stored as hex SHA-256 only.

create table runner_registration_tokens (
    id           uuid primary key,
    token_hash   text not null unique,
    description  text not null default '',
    -- Null: the runner's RUNNER_POOL (else the default pool).
    pool         text,
    single_use   boolean not null,
    expires_at   timestamptz,
    created_by   uuid,
    created_at   timestamptz not null,
    uses         integer not null default 0,
    last_used_at timestamptz,
    revoked_at   timestamptz
);

create table runner_enrollments (
    -- Unique forever: a revoked runner's id is not given out again.
    runner_id             text primary key,
    pool                  text not null,
    secret_hash           text not null,
    registration_token_id uuid,
    enrolled_at           timestamptz not null,
    revoked_at            timestamptz
);
