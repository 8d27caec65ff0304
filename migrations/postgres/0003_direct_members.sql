-- Who takes part in each direct conversation, so that a user can list theirs. The writer adds
-- both members when a direct conversation gets its first message.
CREATE TABLE direct_members (
    user_id TEXT NOT NULL,
    conversation TEXT NOT NULL,
    PRIMARY KEY (user_id, conversation)
);

-- Members of the direct conversations stored before this migration, from their keys
-- 'd:<byte length of a>:<a>:<b>'. The length counts bytes, so the ids are cut as bytea.
WITH prefixed AS (
    SELECT conversation, convert_to(conversation, 'UTF8') AS bytes,
           2 + strpos(substr(conversation, 3), ':') AS colon
    FROM conversations WHERE left(conversation, 2) = 'd:'
), split AS (
    SELECT conversation, bytes, colon, CAST(substr(conversation, 3, colon - 3) AS INTEGER) AS len
    FROM prefixed
)
INSERT INTO direct_members (user_id, conversation)
    SELECT convert_from(substring(bytes FROM colon + 1 FOR len), 'UTF8'), conversation FROM split
    UNION
    SELECT convert_from(substring(bytes FROM colon + len + 2), 'UTF8'), conversation FROM split
ON CONFLICT DO NOTHING;
