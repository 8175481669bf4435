-- mfasync store schema, version 4: the web portal's local administrator
-- accounts, sessions and API tokens. Keep in step with the other backend's migration.

CREATE TABLE admins (
    username TEXT PRIMARY KEY,
    -- a PHC string (argon2id); never the password itself
    password_hash TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

-- Sessions (kind 'session') and API tokens (kind 'api'). Only the SHA-256 of
-- the secret token is stored: a copy of the database gives no usable token.
CREATE TABLE auth_tokens (
    token_hash TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('session', 'api')),
    username TEXT NOT NULL,
    label TEXT,
    -- sessions: the CSRF token their forms must carry
    csrf TEXT,
    created_at TEXT NOT NULL,
    -- RFC 3339 UTC; NULL: does not expire
    expires_at TEXT
);
CREATE INDEX auth_tokens_kind ON auth_tokens (kind);
