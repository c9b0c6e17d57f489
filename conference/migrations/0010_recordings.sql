-- Recordings of sessions: the record as JSON (mode, format, status, files), kept by the
-- node that runs it.
CREATE TABLE recordings (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    node TEXT NOT NULL,
    data TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);
CREATE INDEX recordings_session ON recordings (session_id);
