-- Central event store, version 1 (SQLite: the single-site pilot).
-- Idempotent on the event id and on (device, store, seq): a redelivered message changes nothing.
CREATE TABLE events (
    id          TEXT PRIMARY KEY,
    device      TEXT NOT NULL,
    site        TEXT NOT NULL,
    store       TEXT NOT NULL DEFAULT '',
    seq         INTEGER NOT NULL CHECK (seq >= 1),
    type        TEXT NOT NULL,
    priority    TEXT NOT NULL,
    ts          TEXT NOT NULL,
    received_at TEXT NOT NULL,
    body        TEXT NOT NULL,
    UNIQUE (device, store, seq)
);
CREATE INDEX events_device_ts ON events (device, ts);

CREATE TABLE devices (
    device         TEXT PRIMARY KEY,
    site           TEXT NOT NULL,
    role           TEXT,
    version        TEXT,
    store          TEXT,
    online         INTEGER,
    boot_seq       INTEGER,
    started_at     TEXT,
    state_at       TEXT,
    offline_reason TEXT,
    last_seen      TEXT
);

CREATE TABLE rejects (
    n           INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at TEXT NOT NULL,
    topic       TEXT NOT NULL,
    reason      TEXT NOT NULL,
    payload     BLOB NOT NULL
);
