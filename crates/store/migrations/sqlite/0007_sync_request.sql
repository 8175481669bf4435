-- mfasync store schema, version 7: Synchronize Now on a server that does not
-- run synchronization is handed to the runner (issue 8). Keep in step with
-- the other backend's migration. ONE pending request, on the lease row:
-- several requests before the runner picks them up are one cycle (full
-- when any of them asked for a full one).
-- request_mode: NULL no request, 0 a cycle, 1 a full cycle.
ALTER TABLE sync_lease ADD COLUMN request_mode INTEGER;
-- who asked ("admin" name), on which server, when (Unix epoch milliseconds)
ALTER TABLE sync_lease ADD COLUMN request_by TEXT;
ALTER TABLE sync_lease ADD COLUMN request_on TEXT;
ALTER TABLE sync_lease ADD COLUMN request_ms INTEGER;
