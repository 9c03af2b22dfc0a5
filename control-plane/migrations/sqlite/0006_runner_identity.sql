-- Runner identity (migrations/postgres/0010_runner_identity.sql in SQLite terms).
-- Timestamps are INTEGER unix microseconds, uuids TEXT, booleans 0/1.

create table runner_registration_tokens (
    id           text primary key,
    token_hash   text not null unique,
    description  text not null default '',
    pool         text,
    single_use   integer not null check (single_use in (0, 1)),
    expires_at   integer,
    created_by   text,
    created_at   integer not null,
    uses         integer not null default 0,
    last_used_at integer,
    revoked_at   integer
) strict;

create table runner_enrollments (
    runner_id             text primary key,
    pool                  text not null,
    secret_hash           text not null,
    registration_token_id text,
    enrolled_at           integer not null,
    revoked_at            integer
) strict;
