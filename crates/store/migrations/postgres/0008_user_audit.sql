-- mfasync store schema, version 8: a user's sync history (portal user page,
-- GET /api/v1/users/{username}/history) is read by username
-- case-insensitively or by directory id (already indexed), without scanning
-- the whole audit trail. Keep in step with the other backend's migration.
CREATE INDEX audit_username_lower ON audit (lower(username));
