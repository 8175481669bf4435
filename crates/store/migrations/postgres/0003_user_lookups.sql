-- Lookups of an incremental sync cycle (Store::users_by): by DN and by governing item.
CREATE INDEX users_dn ON users (dn);
CREATE INDEX users_sync_item ON users (sync_item);
-- Directory entries an incremental cycle received (NULL for a full cycle).
ALTER TABLE sync_runs ADD COLUMN entries_read BIGINT;
