-- Webhook outbox: every callback is written here before its first attempt and
-- deleted once delivered (or given up). Delivery order per participant is by id.
CREATE TABLE webhooks (
    id             BIGINT PRIMARY KEY,
    event_id       TEXT NOT NULL,
    participant_id TEXT NOT NULL,
    url            TEXT NOT NULL,
    body           TEXT NOT NULL,
    created_ms     BIGINT NOT NULL,
    attempts       INTEGER NOT NULL,
    next_ms        BIGINT NOT NULL
);

-- Outbound SIP dialogs placed for participants, with their last state.
CREATE TABLE dialogs (
    id             TEXT PRIMARY KEY,
    account_id     TEXT NOT NULL,
    participant_id TEXT NOT NULL,
    state          TEXT NOT NULL,
    data           TEXT NOT NULL, -- JSON: {"to","from","userToUser"?}
    reason         TEXT,
    details        TEXT,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL
);
CREATE INDEX dialogs_participant ON dialogs (participant_id);
