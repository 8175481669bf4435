-- mfasync store schema, version 17: the recycle bin (issue 21). A sync's
-- removal moves the user's complete row here, with its sealed OATH secret,
-- instead of deleting it; a later create of the same directory_id restores
-- it, and entries older than sync.retention are purged. Usernames are unique
-- among live users only (no unique index here).
-- Keep in step with the other backend's migration.
CREATE TABLE recycle_bin (
    id INTEGER PRIMARY KEY,
    username TEXT NOT NULL,
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
    source TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    -- the OATH secret as otp_secrets held it (sealed; never shown)
    otp_sealed TEXT,
    otp_last_step INTEGER,
    otp_enrolled_at TEXT,
    deleted_at TEXT NOT NULL,
    reason TEXT NOT NULL
);
CREATE INDEX recycle_bin_directory_id ON recycle_bin (directory_id);
CREATE INDEX recycle_bin_username_lower ON recycle_bin (username_lower);
CREATE INDEX recycle_bin_deleted_at ON recycle_bin (deleted_at);
