-- In a cluster, a dialog's call lives on the node that placed it: its record says
-- which, so a restarting node ends only its own, and a live node takes over those of a
-- node that stopped.
ALTER TABLE dialogs ADD COLUMN node TEXT NOT NULL DEFAULT '';
