-- Which node recorded a user online: a node restores after its restart only the users it had
-- online itself, and records only its own users offline, so one node's restart never "restores"
-- and later departs the users another node has online. A single node uses 'local' (which the
-- users online before this migration get).
ALTER TABLE users ADD COLUMN node TEXT NOT NULL DEFAULT 'local';
