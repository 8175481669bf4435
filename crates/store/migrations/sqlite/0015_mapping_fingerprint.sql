-- The attribute mapping and filters a full sync ran with (with the watermark:
-- a change makes the next cycle full), and a run's note in the history (why it
-- was full, a sync item that followed a rename). Keep in step with the other
-- backend's migration.
ALTER TABLE watermark ADD COLUMN mapping_fingerprint TEXT NOT NULL DEFAULT '';
ALTER TABLE sync_runs ADD COLUMN note TEXT;
