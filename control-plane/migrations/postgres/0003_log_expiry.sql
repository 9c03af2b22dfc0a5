-- Set when the retention sweeper deleted a run's archived log; the run stays.
alter table runs add column log_expired_at timestamptz;
