-- CRDT values beside each room's document: the encoded state of one counter or register.
CREATE TABLE crdt_values (
    room TEXT NOT NULL,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    state BYTEA NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (room, name)
);
