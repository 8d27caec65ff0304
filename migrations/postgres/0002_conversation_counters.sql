-- The last sequence of each conversation. The writer advances it in the transaction that stores
-- the messages, so sequences stay gapless also when several nodes share this database (the row
-- lock orders them).
CREATE TABLE conversations (
    conversation TEXT PRIMARY KEY,
    last_seq BIGINT NOT NULL
);

INSERT INTO conversations (conversation, last_seq)
    SELECT conversation, MAX(seq) FROM messages GROUP BY conversation;
