-- Every finished attempt of a run (the run row holds the current one), and the
-- earliest time a retried attempt may start.
create table run_attempts (
    run_id         uuid not null references runs (id) on delete cascade,
    attempt        integer not null,
    status         text not null check (status in ('success', 'failed', 'cancelled')),
    failure_reason text,
    exit_code      bigint,
    error_message  text,
    runner_id      text,
    started_at     timestamptz,
    finished_at    timestamptz not null,
    log_key        text,
    log_size_bytes bigint not null default 0,
    primary key (run_id, attempt)
);

alter table runs add column not_before timestamptz;
