-- Several nodes on one PostgreSQL database (issue 13). Portable SQL: SQLite (one node)
-- has the same tables and leaves the cluster ones empty.

-- Each node's row, upserted by its heartbeat (the database server's clock, in ms).
-- `instance` tells a restarted process of the same node from a second process
-- configured with the same node id.
CREATE TABLE nodes (
    id           TEXT PRIMARY KEY,
    instance     TEXT NOT NULL,
    info         TEXT NOT NULL, -- JSON: advertised addresses, sessions, calls, devices
    started_ms   BIGINT NOT NULL,
    heartbeat_ms BIGINT NOT NULL
);

-- The change feed: one row per committed transaction that changed sessions,
-- participants or memberships, naming what it touched. `change_head` is locked by
-- every such transaction, so sequence numbers are gap-free and in commit order: a
-- node that has read up to `seq` has seen every earlier change.
CREATE TABLE change_head (
    id  INTEGER PRIMARY KEY,
    seq BIGINT NOT NULL
);
INSERT INTO change_head (id, seq) VALUES (1, 0);
CREATE TABLE changes (
    seq          BIGINT PRIMARY KEY,
    node         TEXT NOT NULL,
    participants TEXT NOT NULL, -- JSON array of ids
    sessions     TEXT NOT NULL  -- JSON array of ids
);

-- Outbox rows and open connections belong to the node that wrote them; a live node
-- takes over those of a node whose heartbeat stopped.
CREATE TABLE webhooks_by_node (
    node           TEXT NOT NULL,
    id             BIGINT NOT NULL,
    event_id       TEXT NOT NULL,
    participant_id TEXT NOT NULL,
    url            TEXT NOT NULL,
    body           TEXT NOT NULL,
    created_ms     BIGINT NOT NULL,
    attempts       INTEGER NOT NULL,
    next_ms        BIGINT NOT NULL,
    PRIMARY KEY (node, id)
);
INSERT INTO webhooks_by_node (node, id, event_id, participant_id, url, body, created_ms, attempts, next_ms)
    SELECT '', id, event_id, participant_id, url, body, created_ms, attempts, next_ms FROM webhooks;
DROP TABLE webhooks;
ALTER TABLE webhooks_by_node RENAME TO webhooks;
ALTER TABLE connections ADD COLUMN node TEXT NOT NULL DEFAULT '';
