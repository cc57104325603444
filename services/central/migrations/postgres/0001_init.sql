-- Central event store, version 1 (PostgreSQL: the service-wide ingest).
-- Idempotent on the event id and on (device, store, seq): a redelivered message changes nothing.
CREATE TABLE events (
    id          text PRIMARY KEY,
    device      text NOT NULL,
    site        text NOT NULL,
    store       text NOT NULL DEFAULT '',
    seq         bigint NOT NULL CHECK (seq >= 1),
    type        text NOT NULL,
    priority    text NOT NULL,
    ts          timestamptz NOT NULL,
    received_at timestamptz NOT NULL,
    body        jsonb NOT NULL,
    UNIQUE (device, store, seq)
);
CREATE INDEX events_device_ts ON events (device, ts);

CREATE TABLE devices (
    device         text PRIMARY KEY,
    site           text NOT NULL,
    role           text,
    version        text,
    store          text,
    online         boolean,
    boot_seq       bigint,
    started_at     timestamptz,
    state_at       timestamptz,
    offline_reason text,
    last_seen      timestamptz
);

CREATE TABLE rejects (
    n           bigserial PRIMARY KEY,
    received_at timestamptz NOT NULL,
    topic       text NOT NULL,
    reason      text NOT NULL,
    payload     bytea NOT NULL
);
