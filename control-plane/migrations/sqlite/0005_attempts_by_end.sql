-- The sweeper lists attempts by the time they ended (late live log batches are purged
-- once more after the end): keyset order (finished_at, run_id, attempt).
create index run_attempts_by_end on run_attempts (finished_at, run_id, attempt);
