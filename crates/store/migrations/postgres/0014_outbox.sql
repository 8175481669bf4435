-- mfasync store schema, version 14: the outbox of welcome and update emails
-- (issue 19). A row is written in the sync transaction that made the user
-- change it announces, already rendered; a sender delivers it afterwards.
-- Times are Unix epoch milliseconds. Keep in step with the other backend's migration.
CREATE TABLE outbox (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('welcome', 'update')),
    username TEXT NOT NULL,
    directory_id TEXT,
    recipient TEXT NOT NULL,
    subject TEXT NOT NULL,
    text_body TEXT NOT NULL,
    html_body TEXT,
    status TEXT NOT NULL CHECK (status IN ('pending', 'sent', 'failed')),
    -- delivery attempts started
    attempts BIGINT NOT NULL DEFAULT 0,
    last_error TEXT,
    created_ms BIGINT NOT NULL,
    -- when delivery began (created, or re-queued by outbox retry): give_up_after counts from it
    queued_ms BIGINT NOT NULL,
    -- not to be attempted before
    due_ms BIGINT NOT NULL,
    sent_ms BIGINT,
    -- a sender attempting it holds it until then (no two senders send one row)
    claimed_until_ms BIGINT
);
CREATE INDEX outbox_due ON outbox (status, due_ms);
-- one welcome email per directory user, ever
CREATE INDEX outbox_welcome ON outbox (directory_id) WHERE kind = 'welcome';
