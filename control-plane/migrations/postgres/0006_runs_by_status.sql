-- Listings filtered by status (`GET /api/v1/runs?status=…`, the dashboard's filters) find
-- their page through this index instead of scanning the newest-first index.
create index runs_status_newest on runs (status, created_at desc, id desc);
