-- Patchbay control-plane schema. Portable SQL: the PostgreSQL backend uses the same tables.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE sessions (
    id         TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    tag        TEXT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX sessions_expires_at ON sessions (expires_at);

CREATE TABLE participants (
    id                  TEXT PRIMARY KEY,
    account_id          TEXT NOT NULL,
    callback_url        TEXT,
    publish_permissions TEXT NOT NULL, -- JSON array, e.g. ["AUDIO","VIDEO"]
    tag                 TEXT,
    device_api_version  TEXT NOT NULL,
    created_at          BIGINT NOT NULL
);

-- A participant is in at most one session.
CREATE TABLE memberships (
    participant_id TEXT PRIMARY KEY REFERENCES participants (id) ON DELETE CASCADE,
    session_id     TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    joined_seq     BIGINT NOT NULL,
    subscriptions  TEXT NOT NULL -- JSON, Bandwidth's Subscriptions shape
);
CREATE INDEX memberships_session ON memberships (session_id);
