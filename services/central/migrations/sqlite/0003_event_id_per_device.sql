-- The event id is unique per device, not across the estate: a device (or someone holding its
-- certificate) that sends another device's event ids on its own topic must not make central
-- drop that device's genuine events as duplicates. Idempotency is unchanged for the device
-- that owns the id: (device, id) and (device, store, seq) both absorb a redelivery.
CREATE TABLE events_v3 (
    id          TEXT NOT NULL,
    device      TEXT NOT NULL,
    site        TEXT NOT NULL,
    store       TEXT NOT NULL DEFAULT '',
    seq         INTEGER NOT NULL CHECK (seq >= 1),
    type        TEXT NOT NULL,
    priority    TEXT NOT NULL,
    ts          TEXT NOT NULL,
    received_at TEXT NOT NULL,
    body        TEXT NOT NULL,
    PRIMARY KEY (device, id),
    UNIQUE (device, store, seq)
);
INSERT INTO events_v3 (id, device, site, store, seq, type, priority, ts, received_at, body)
    SELECT id, device, site, store, seq, type, priority, ts, received_at, body FROM events;
DROP TABLE events;
ALTER TABLE events_v3 RENAME TO events;
CREATE INDEX events_device_ts ON events (device, ts);
