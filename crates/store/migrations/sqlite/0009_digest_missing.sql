-- mfasync store schema, version 9: every open that runs the migrator asks
-- for rows without a digest (rows written before version 5; none after the
-- one-time fill). A partial index answers that without scanning the users
-- table (about 13 ms per `mfasync sync` at 100,000 users before it). Keep in
-- step with the other backend's migration.
CREATE INDEX users_digest_missing ON users (id) WHERE digest IS NULL;
