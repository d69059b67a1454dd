-- Each room's log stored in (room, seq) order. In a rowid table rows lie in insertion order,
-- so with many rooms writing at once a page holds rows of dozens of rooms, and compaction's
-- delete of one room's first 1,000 updates rewrote about 1,000 pages (4 MB of WAL); here it
-- rewrites the room's own few pages. It also drops the separate (room, seq) index that every
-- insert wrote beside the row.
CREATE TABLE updates_by_room (
    room TEXT NOT NULL,
    seq INTEGER NOT NULL,
    data BLOB NOT NULL,
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (room, seq)
) WITHOUT ROWID;

INSERT INTO updates_by_room (room, seq, data, created_at_ms)
SELECT room, seq, data, created_at_ms FROM updates;

DROP TABLE updates;

ALTER TABLE updates_by_room RENAME TO updates;
