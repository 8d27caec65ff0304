-- Who holds each name, enforced by the primary key: a claim is one upsert that takes the row
-- only when it is free, expired or already the claimant's, so two nodes sharing this
-- database can never both win a name (the `users` index is not unique: a check on it followed
-- by an insert lets two connects through). Full-protocol users hold their names until their
-- latest session expires; tutorial users for a short while, refreshed while they are present.
CREATE TABLE names (
    name_key TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL,
    expires_at_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX names_user ON names (user_id);
CREATE INDEX names_expiry ON names (expires_at_ms);

-- The names users hold already: the latest-expiring holder of each.
INSERT INTO names (name_key, user_id, expires_at_ms)
    SELECT u.name_key, u.user_id, u.expires_at_ms FROM users u
    WHERE NOT EXISTS (
        SELECT 1 FROM users o WHERE o.name_key = u.name_key
        AND (o.expires_at_ms > u.expires_at_ms
             OR (o.expires_at_ms = u.expires_at_ms AND o.user_id > u.user_id))
    );
