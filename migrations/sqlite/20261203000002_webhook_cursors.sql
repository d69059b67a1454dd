-- How far each webhook target has been told about each room: the last seq its room.changed
-- events covered. Events are derived from the durable log against this cursor, so a crash
-- between a commit and its webhook loses nothing: the next scan sends it.
CREATE TABLE webhook_cursors (
    target TEXT NOT NULL,
    room TEXT NOT NULL,
    seq BIGINT NOT NULL,
    PRIMARY KEY (target, room)
);
