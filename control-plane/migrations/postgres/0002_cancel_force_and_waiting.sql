-- `force` cancels skip the SIGTERM grace period; `waiting_reason` says why a
-- queued run has not started (shown in the run JSON).
alter table runs add column cancel_force boolean not null default false;
alter table runs add column waiting_reason text;
