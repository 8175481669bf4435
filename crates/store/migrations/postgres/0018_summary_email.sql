-- mfasync store schema, version 18: the outbox also holds the summary email
-- of a sync cycle (issue 22), kind 'summary' (username "(summary)", no
-- directory_id). Keep in step with the other backend's migration.
ALTER TABLE outbox DROP CONSTRAINT IF EXISTS outbox_kind_check;
ALTER TABLE outbox ADD CONSTRAINT outbox_kind_check
    CHECK (kind IN ('welcome', 'update', 'summary'));
