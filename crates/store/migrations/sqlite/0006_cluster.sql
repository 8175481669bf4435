-- mfasync store schema, version 6: several servers on one database (issue 8).
-- Keep in step with the other backend's migration. Times are Unix epoch
-- milliseconds (compared by the servers, each with its own clock: keep the
-- servers' clocks synchronized, well within a lease period).

-- Every `mfasync serve` process registers itself here and heartbeats.
CREATE TABLE servers (
    name TEXT PRIMARY KEY,
    -- random per process start: tells a restarted server from the one before
    instance TEXT NOT NULL,
    address TEXT NOT NULL,
    version TEXT NOT NULL,
    started_ms INTEGER NOT NULL,
    heartbeat_ms INTEGER NOT NULL,
    -- the lease period the server runs with (judges whether it is alive)
    lease_ms INTEGER NOT NULL
);

-- The right to run synchronization: ONE row. `token` (the fencing token)
-- grows by one whenever another holder takes the lease; every sync
-- transaction checks, under a row lock, that its token is still the current
-- one and the lease has not expired.
CREATE TABLE sync_lease (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    holder TEXT,
    instance TEXT,
    token INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    -- an administrator's choice: only this server may run synchronization
    pinned TEXT
);
INSERT INTO sync_lease (id, holder, instance, token, expires_ms, pinned)
VALUES (1, NULL, NULL, 0, 0, NULL);
