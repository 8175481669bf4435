-- mfasync store schema, version 10: the incremental starting points of the
-- other domains whose items are synchronized (include_trusted_domains), one
-- row per domain, written in the same transaction as the watermark row and
-- replaced with it as a whole. Keep in step with the other backend's migration.
CREATE TABLE domain_watermarks (
    domain TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    server TEXT NOT NULL,
    value BYTEA NOT NULL
);
