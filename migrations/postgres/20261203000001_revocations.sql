-- Revoked tokens (POST /api/admin/revoke): by user, by token id (jti), or every token issued
-- before a time. Kept in the store so revocations outlive restarts and reach every process.
CREATE TABLE revocations (
    id BIGSERIAL PRIMARY KEY,
    user_name TEXT,
    jti TEXT,
    issued_before BIGINT,
    created_at_ms BIGINT NOT NULL
);
