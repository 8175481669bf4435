-- The audit trail's purge (audit.retention) deletes the rows older than a
-- time after every sync cycle: by this index, not by reading the table.
-- Keep in step with the other backend's migration.
CREATE INDEX audit_at ON audit (at);
