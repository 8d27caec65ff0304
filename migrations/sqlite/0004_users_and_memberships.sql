-- Users who hold a session, and the rooms they are members of, so both survive a restart.
-- `name_key` is the name in the form names are compared in (computed by the chat layer);
-- a name belongs to the user holding it while `expires_at_ms` (its latest session's expiry)
-- has not passed. Not unique: an expired holder's row may linger until it is purged.
CREATE TABLE users (
    user_id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    name_key TEXT NOT NULL,
    expires_at_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX users_name_key ON users (name_key, expires_at_ms);
CREATE INDEX users_expiry ON users (expires_at_ms);

-- Room memberships besides `general` (everyone is in it).
CREATE TABLE room_members (
    user_id TEXT NOT NULL,
    room TEXT NOT NULL,
    joined_at_ms INTEGER NOT NULL,
    PRIMARY KEY (user_id, room)
) WITHOUT ROWID;
