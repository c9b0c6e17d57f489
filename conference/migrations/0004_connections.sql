-- Browser devices and SIP calls whose onConnect was sent and whose onLeave was not:
-- what a crash leaves open. At the next start each is ended with onDisconnect (if its
-- connection was open) and onLeave, through the outbox.
CREATE TABLE connections (
    participant_id TEXT NOT NULL,
    source         TEXT NOT NULL, -- 'browser' | 'sip'
    device_id      TEXT NOT NULL, -- the SDK's uniqueId, or the SIP Call-ID
    callback_url   TEXT NOT NULL,
    tag            TEXT,
    connected      INTEGER NOT NULL,
    since_ms       BIGINT NOT NULL,
    PRIMARY KEY (participant_id, source, device_id)
);
