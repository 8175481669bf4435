-- mfasync store schema, version 18: the outbox also holds the summary email
-- of a sync cycle (issue 22), kind 'summary' (username "(summary)", no
-- directory_id). SQLite cannot change a CHECK constraint: the table is
-- rebuilt with its rows, ids and indexes. Keep in step with the other
-- backend's migration.
CREATE TABLE outbox_new (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('welcome', 'update', 'summary')),
    username TEXT NOT NULL,
    directory_id TEXT,
    recipient TEXT NOT NULL,
    subject TEXT NOT NULL,
    text_body TEXT NOT NULL,
    html_body TEXT,
    status TEXT NOT NULL CHECK (status IN ('pending', 'sent', 'failed')),
    -- delivery attempts started
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    created_ms INTEGER NOT NULL,
    -- when delivery began (created, or re-queued by outbox retry): give_up_after counts from it
    queued_ms INTEGER NOT NULL,
    -- not to be attempted before
    due_ms INTEGER NOT NULL,
    sent_ms INTEGER,
    -- a sender attempting it holds it until then (no two senders send one row)
    claimed_until_ms INTEGER
);
INSERT INTO outbox_new (id, kind, username, directory_id, recipient, subject, text_body,
    html_body, status, attempts, last_error, created_ms, queued_ms, due_ms, sent_ms,
    claimed_until_ms)
SELECT id, kind, username, directory_id, recipient, subject, text_body,
    html_body, status, attempts, last_error, created_ms, queued_ms, due_ms, sent_ms,
    claimed_until_ms
FROM outbox;
DROP TABLE outbox;
ALTER TABLE outbox_new RENAME TO outbox;
CREATE INDEX outbox_due ON outbox (status, due_ms);
-- one welcome email per directory user, ever
CREATE INDEX outbox_welcome ON outbox (directory_id) WHERE kind = 'welcome';
