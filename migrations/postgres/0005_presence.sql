-- Who was online: set when a user connects, cleared when it leaves. After a restart (also
-- after a crash) the users still marked online are kept present while their clients
-- reconnect, instead of being announced as leaving and arriving again.
ALTER TABLE users ADD COLUMN online BOOLEAN NOT NULL DEFAULT FALSE;
