-- One row per room: the last sequence number handed out, so that seq is assigned inside the
-- commit that appends (several writers never clash).
CREATE TABLE rooms (
    name TEXT PRIMARY KEY NOT NULL,
    last_seq INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
);

-- The append-only update log: opaque Yjs v1 update bytes, in commit order.
CREATE TABLE updates (
    room TEXT NOT NULL,
    seq INTEGER NOT NULL,
    data BLOB NOT NULL,
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (room, seq)
);

-- Full document states covering the log up to and including up_to_seq.
CREATE TABLE snapshots (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    room TEXT NOT NULL,
    up_to_seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    data BLOB NOT NULL,
    state_vector BLOB NOT NULL,
    created_at_ms INTEGER NOT NULL
);
CREATE INDEX snapshots_by_room ON snapshots (room, up_to_seq);
