-- The event id is unique per device, not across the estate: a device (or someone holding its
-- certificate) that sends another device's event ids on its own topic must not make central
-- drop that device's genuine events as duplicates. Idempotency is unchanged for the device
-- that owns the id: (device, id) and (device, store, seq) both absorb a redelivery.
-- Rebuilds the primary key's index: on a large table, run it in a quiet hour.
ALTER TABLE events DROP CONSTRAINT events_pkey;
ALTER TABLE events ADD PRIMARY KEY (device, id);
