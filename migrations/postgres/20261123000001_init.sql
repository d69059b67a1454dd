-- One row per room: the last sequence number handed out. Appending locks this row, so
-- several processes appending to one room get consecutive, unique seqs.
CREATE TABLE rooms (
    name TEXT PRIMARY KEY NOT NULL,
    last_seq BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);

-- The append-only update log: opaque Yjs v1 update bytes, in commit order.
CREATE TABLE updates (
    room TEXT NOT NULL,
    seq BIGINT NOT NULL,
    data BYTEA NOT NULL,
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (room, seq)
);

-- Full document states covering the log up to and including up_to_seq.
CREATE TABLE snapshots (
    id BIGSERIAL PRIMARY KEY,
    room TEXT NOT NULL,
    up_to_seq BIGINT NOT NULL,
    kind TEXT NOT NULL,
    data BYTEA NOT NULL,
    state_vector BYTEA NOT NULL,
    created_at_ms BIGINT NOT NULL
);
CREATE INDEX snapshots_by_room ON snapshots (room, up_to_seq);
