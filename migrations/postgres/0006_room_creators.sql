-- Who created each room (NULL for rooms created before this was recorded), so the per-user
-- room quota holds across restarts.
ALTER TABLE rooms ADD COLUMN created_by TEXT;
CREATE INDEX rooms_created_by ON rooms (created_by);
