-- A run's timeout in its own column, so that SQL never reads a field of the job template
-- (whose JSON shape is serde's business). Backfilled from the templates stored so far
-- (whole seconds; a fraction, which the templates never held, is rounded up).
alter table runs add column timeout_seconds integer;
update runs set timeout_seconds =
        cast(json_extract(spec, '$.timeout_seconds') as integer)
        + (json_extract(spec, '$.timeout_seconds') > cast(json_extract(spec, '$.timeout_seconds') as integer))
    where json_type(spec, '$.timeout_seconds') in ('integer', 'real');
