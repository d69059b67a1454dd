-- The cost of reading and compacting one room's log on PostgreSQL when 100 rooms' rows are
-- interleaved in the heap (as group commits write them) against the same rows in room order.
-- psql -h 127.0.0.1 -U postgres -d test -f bench/pg-log-order.sql (uses and drops tables u_inter, u_order)
DROP TABLE IF EXISTS u_inter, u_order;
CREATE TABLE u_inter (room TEXT NOT NULL, seq BIGINT NOT NULL, data BYTEA NOT NULL, created_at_ms BIGINT NOT NULL, PRIMARY KEY (room, seq));
CREATE TABLE u_order (LIKE u_inter INCLUDING ALL);
-- 100 rooms, 1000 updates each of 60 bytes; interleaved: one row per room per group, as a strict group of 100 rooms writes them
INSERT INTO u_inter SELECT 'room-' || lpad(r::text, 3, '0'), s, convert_to(repeat('x', 60), 'UTF8'), 0 FROM generate_series(1, 1000) s, generate_series(1, 100) r ORDER BY s, r;
INSERT INTO u_order SELECT 'room-' || lpad(r::text, 3, '0'), s, convert_to(repeat('x', 60), 'UTF8'), 0 FROM generate_series(1, 100) r, generate_series(1, 1000) s ORDER BY r, s;
VACUUM ANALYZE u_inter; VACUUM ANALYZE u_order;
CHECKPOINT;
SELECT 'inter pages', pg_relation_size('u_inter')/8192, 'order pages', pg_relation_size('u_order')/8192;
EXPLAIN (ANALYZE, BUFFERS, WAL, COSTS OFF) SELECT seq, data FROM u_inter WHERE room = 'room-050' AND seq > 0 ORDER BY seq;
EXPLAIN (ANALYZE, BUFFERS, WAL, COSTS OFF) SELECT seq, data FROM u_order WHERE room = 'room-050' AND seq > 0 ORDER BY seq;
EXPLAIN (ANALYZE, BUFFERS, WAL, COSTS OFF) DELETE FROM u_inter WHERE room = 'room-050' AND seq <= 1000;
EXPLAIN (ANALYZE, BUFFERS, WAL, COSTS OFF) DELETE FROM u_order WHERE room = 'room-050' AND seq <= 1000;
-- without a checkpoint between: second delete in the same cycle (no full-page images for already-dirtied pages)
EXPLAIN (ANALYZE, BUFFERS, WAL, COSTS OFF) DELETE FROM u_inter WHERE room = 'room-051' AND seq <= 1000;
EXPLAIN (ANALYZE, BUFFERS, WAL, COSTS OFF) DELETE FROM u_order WHERE room = 'room-051' AND seq <= 1000;
DROP TABLE u_inter, u_order;
