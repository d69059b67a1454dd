-- Leases: which process does a job that only one of a cluster should do (webhook delivery to a
-- target), until when. A holder renews its lease while it works; another process takes it over
-- once it has expired (the holder died or stopped).
CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at_ms BIGINT NOT NULL
);
