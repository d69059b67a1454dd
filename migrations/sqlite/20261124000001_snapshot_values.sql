-- The room's CRDT values at the time of each snapshot (the server's encoding, opaque to the
-- store), so restore points and state-at-time exports carry them. NULL for snapshots written
-- before this column existed.
ALTER TABLE snapshots ADD COLUMN values_state BLOB;
