-- One row rewritten by readiness checks after a failed write: proves the store can
-- write (and fsync) a typical group of changes again (the pad is 64 KiB).
CREATE TABLE store_probe (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    at INTEGER NOT NULL,
    pad BLOB NOT NULL
);
