-- Runs go to the runners of one pool; `no_runner` ends runs no runner can take.
alter table runs add column pool text not null default 'default';
alter table runs drop constraint runs_failure_reason_check;
alter table runs add constraint runs_failure_reason_check
    check (failure_reason in ('exit_code', 'timeout', 'cancelled', 'lost', 'setup_error', 'no_runner'));
