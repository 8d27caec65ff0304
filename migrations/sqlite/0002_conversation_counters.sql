-- The last sequence of each conversation. The writer advances it in the transaction that stores
-- the messages, so sequences stay gapless also when several writers share one database.
CREATE TABLE conversations (
    conversation TEXT PRIMARY KEY NOT NULL,
    last_seq INTEGER NOT NULL
) WITHOUT ROWID;

INSERT INTO conversations (conversation, last_seq)
    SELECT conversation, MAX(seq) FROM messages GROUP BY conversation;
