-- mfasync store schema, version 16: OATH TOTP secrets of MFA users (issue 24),
-- sealed by the service's key (the store never sees one in clear). A secret
-- belongs to its user's row: it follows renames and goes with the user.
-- Keep in step with the other backend's migration.
CREATE TABLE otp_secrets (
    user_id INTEGER PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    sealed TEXT NOT NULL,
    -- the time step of the last code accepted: a code is accepted once
    last_step INTEGER,
    enrolled_at TEXT NOT NULL
);
