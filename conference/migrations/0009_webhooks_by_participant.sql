-- In a cluster, a node delivers a participant's callback only once no older one of
-- that participant waits on another node: looked up by participant.
CREATE INDEX webhooks_participant ON webhooks (participant_id, created_ms);
