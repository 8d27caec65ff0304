-- Who takes part in each direct conversation, so that a user can list theirs. The writer adds
-- both members when a direct conversation gets its first message.
CREATE TABLE direct_members (
    user_id TEXT NOT NULL,
    conversation TEXT NOT NULL,
    PRIMARY KEY (user_id, conversation)
) WITHOUT ROWID;

-- Members of the direct conversations stored before this migration, from their keys
-- 'd:<byte length of a>:<a>:<b>'. The length counts bytes, so the ids are cut as BLOBs.
WITH prefixed AS (
    SELECT conversation, 2 + instr(substr(conversation, 3), ':') AS colon
    FROM conversations WHERE substr(conversation, 1, 2) = 'd:'
), split AS (
    SELECT conversation, colon, CAST(substr(conversation, 3, colon - 3) AS INTEGER) AS len
    FROM prefixed
)
INSERT OR IGNORE INTO direct_members (user_id, conversation)
    SELECT CAST(substr(CAST(conversation AS BLOB), colon + 1, len) AS TEXT), conversation
    FROM split
    UNION ALL
    SELECT CAST(substr(CAST(conversation AS BLOB), colon + len + 2) AS TEXT), conversation
    FROM split;
