-- mfasync store schema, version 2 (SQLite): removals held for administrator approval.
-- Keep in step with the other backend's migration.

CREATE TABLE approvals (
    -- creation order
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'rejected', 'superseded')),
    -- core::safeguard::fingerprint of the held changes
    fingerprint TEXT NOT NULL,
    -- the held changes as JSON: [{"action","username","directory_id","reason"}]
    changes_json TEXT NOT NULL,
    decided_at TEXT,
    decided_by TEXT,
    detail TEXT
);
CREATE INDEX approvals_status ON approvals (status);
