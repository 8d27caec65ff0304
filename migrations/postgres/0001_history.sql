-- History, rooms and sessions of chinwag (PostgreSQL).
CREATE TABLE messages (
    conversation TEXT NOT NULL,
    seq BIGINT NOT NULL,
    id TEXT NOT NULL,
    author_id TEXT NOT NULL,
    author_name TEXT NOT NULL,
    body TEXT NOT NULL,
    client_id TEXT,
    timestamp_ms BIGINT NOT NULL,
    PRIMARY KEY (conversation, seq)
);

-- A resend with the same idempotency key from the same author is the same message.
CREATE UNIQUE INDEX messages_client_id
    ON messages (conversation, author_id, client_id)
    WHERE client_id IS NOT NULL;

CREATE TABLE rooms (
    name TEXT PRIMARY KEY,
    created_at_ms BIGINT NOT NULL
);

CREATE TABLE sessions (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    name TEXT NOT NULL,
    expires_at_ms BIGINT NOT NULL
);
CREATE INDEX sessions_expiry ON sessions (expires_at_ms);

CREATE TABLE recovery_sessions (
    pid TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    state TEXT NOT NULL,
    expires_at_ms BIGINT NOT NULL
);
CREATE INDEX recovery_sessions_expiry ON recovery_sessions (expires_at_ms);
