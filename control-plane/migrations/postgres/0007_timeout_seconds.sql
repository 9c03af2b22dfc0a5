-- A run's timeout in its own column, so that SQL never reads a field of the job template
-- (whose JSON shape is serde's business). Backfilled from the templates stored so far
-- (whole seconds; a fraction, which the templates never held, is rounded up).
alter table runs add column timeout_seconds bigint;
update runs set timeout_seconds = ceil((spec->>'timeout_seconds')::numeric)::bigint
    where jsonb_typeof(spec->'timeout_seconds') = 'number';
