-- A v3 browser's subscribing peer connection as the browser holds it: the m-lines of
-- the last offer it was sent (kind and mid, in order) and that offer's sdpRevision.
-- The SDK keeps that connection across WebSocket reconnects, so whichever node (or
-- restarted process) serves the device next must offer on the same layout with a
-- higher revision. One row per participant (its current device); deleted with it.
CREATE TABLE subscribe_layouts (
    participant_id TEXT PRIMARY KEY,
    device_id      TEXT NOT NULL, -- the SDK's uniqueId
    revision       BIGINT NOT NULL,
    lines          TEXT NOT NULL  -- "audio:mid video:mid application:mid …"
);
