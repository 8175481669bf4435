-- mfasync store schema, version 1 (PostgreSQL).
-- Times are RFC 3339 UTC text. Keep in step with the other backend's migration.

CREATE TABLE users (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username TEXT NOT NULL,
    -- lower-cased copy (Rust to_lowercase) for the case-insensitive uniqueness
    username_lower TEXT NOT NULL,
    directory_id TEXT,
    dn TEXT,
    first_name TEXT,
    last_name TEXT,
    email TEXT,
    user_group TEXT,
    description TEXT,
    phone_call_language TEXT,
    text_message_language TEXT,
    mobile_app_language TEXT,
    oath_token_language TEXT,
    business_phone TEXT,
    home_phone TEXT,
    pager TEXT,
    mobile_phone TEXT,
    fax TEXT,
    ip_phone TEXT,
    custom_phone TEXT,
    primary_phone TEXT,
    extension TEXT,
    backup_phone TEXT,
    method TEXT,
    language TEXT,
    sync_item TEXT,
    enabled BOOLEAN NOT NULL,
    source TEXT NOT NULL CHECK (source IN ('directory', 'manual')),
    updated_at TEXT NOT NULL
);
CREATE UNIQUE INDEX users_username_lower ON users (username_lower);
CREATE UNIQUE INDEX users_directory_id ON users (directory_id);

CREATE TABLE watermark (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    kind TEXT NOT NULL,
    server TEXT NOT NULL,
    value BYTEA NOT NULL,
    items_fingerprint TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE config_versions (
    version BIGINT PRIMARY KEY,
    created_at TEXT NOT NULL,
    toml TEXT NOT NULL,
    active BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE UNIQUE INDEX config_versions_one_active ON config_versions (active) WHERE active;

CREATE TABLE sync_runs (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    mode TEXT NOT NULL,
    created BIGINT NOT NULL DEFAULT 0,
    updated BIGINT NOT NULL DEFAULT 0,
    enabled BIGINT NOT NULL DEFAULT 0,
    disabled BIGINT NOT NULL DEFAULT 0,
    removed BIGINT NOT NULL DEFAULT 0,
    unchanged BIGINT NOT NULL DEFAULT 0,
    error TEXT
);

CREATE TABLE audit (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    username TEXT,
    directory_id TEXT,
    before_json TEXT,
    after_json TEXT,
    detail TEXT
);
CREATE INDEX audit_directory_id ON audit (directory_id);
