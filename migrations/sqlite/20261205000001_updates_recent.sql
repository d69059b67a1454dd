-- The newest small updates, in insertion order (a rowid table, no index). A group commit of
-- many rooms appended each room's updates to that room's own leaf page of `updates`, one 4 KiB
-- WAL frame per room per commit (for strict durability in 100 rooms, a group of 30-40 small
-- updates wrote 30-40 pages); here the same group fills one or two pages. The store moves
-- these rows into `updates` in (room, seq) order a batch at a time, between group commits, and
-- every read of a room's log reads both tables. Updates of a page or more go straight into
-- `updates`. Within one room, a seq is in one of the two tables, once.
CREATE TABLE updates_recent (
    room TEXT NOT NULL,
    seq INTEGER NOT NULL,
    data BLOB NOT NULL,
    created_at_ms INTEGER NOT NULL
);
