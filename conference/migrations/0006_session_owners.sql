-- One owner per session's media in a cluster: a lease with an epoch that grows at
-- every change of owner. Taken only when absent or expired (by the database's clock),
-- renewed while the owner lives; writes of the owner are fenced by (node, epoch).
CREATE TABLE session_owners (
    session_id TEXT PRIMARY KEY,
    node       TEXT NOT NULL,
    epoch      BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL
);
CREATE INDEX session_owners_node ON session_owners (node);
