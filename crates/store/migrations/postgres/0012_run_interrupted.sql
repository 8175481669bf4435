-- A sync-history row whose process stopped before it recorded the result
-- (killed, crashed, the machine lost): set by the next process that takes the
-- sync lease, so history says "interrupted" instead of a run that changed
-- nothing. Keep in step with the other backend's migration.
ALTER TABLE sync_runs ADD COLUMN interrupted BOOLEAN NOT NULL DEFAULT FALSE;
