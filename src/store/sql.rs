//! The SQL store, written once: every query, read and write, for both SQLite and PostgreSQL.
//! A backend (`sqlite.rs`, `postgres.rs`) gives only how to open its connections and the few
//! words of its dialect in [`Dialect`]; placeholders are `$1, $2, …`, which both understand.

use std::pin::Pin;
use std::sync::Arc;

use sqlx::{
    ColumnIndex, ConnectOptions, Connection, Database, Decode, Encode, Executor, IntoArguments,
    Pool, Type,
};

use super::writer::{ClientKey, WriteConnection, WriterHandle, row_placeholders};
use super::{
    Appended, Conversation, ConversationSummary, HistoryStore, KeyedMessageRow, MAX_DIRECT_LISTED,
    MAX_MEMBERSHIPS_LISTED, MAX_ROOMS_LISTED, MAX_ROOMS_PER_USER_LISTED, MAX_USERS_LISTED,
    MembershipRecord, MessageRow, NameClaim, NewMessage, RecoveryRecord, RoomRecord, SessionRecord,
    StoreError, StoreFuture, StoreOptions, StoredMessage, UserRecord, message_from_row, page_limit,
};

/// Most users per `UPDATE … IN (…)` of `set_online` (SQLite allows 32,766 parameters,
/// PostgreSQL 65,535).
const SET_ONLINE_CHUNK: usize = 500;

/// What a backend's SQL differs in.
pub trait Dialect: Database {
    /// Opens the writer's transaction.
    const BEGIN: &'static str;

    /// Rows a statement changed.
    fn rows_affected(result: &Self::QueryResult) -> u64;
}

/// History in a SQL database: a group-commit writer on one connection, reads from a pool.
pub struct SqlStore<DB: Database> {
    writer: WriterHandle,
    reads: Pool<DB>,
}

impl<DB> SqlStore<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB>,
    str: Type<DB>,
    for<'q> String: Encode<'q, DB>,
    for<'r> String: Decode<'r, DB>,
    String: Type<DB>,
    for<'q> i64: Encode<'q, DB>,
    for<'r> i64: Decode<'r, DB>,
    i64: Type<DB>,
    for<'q> bool: Encode<'q, DB>,
    for<'r> bool: Decode<'r, DB>,
    bool: Type<DB>,
    for<'q> Option<String>: Encode<'q, DB>,
    for<'r> Option<String>: Decode<'r, DB>,
    Option<String>: Type<DB>,
    usize: ColumnIndex<DB::Row>,
{
    /// A store over an open (and migrated) write connection and a read pool. `reconnect`
    /// replaces the write connection when a failed batch left it unusable (a server that
    /// dropped it); `None` keeps the connection (a file that cannot go away).
    pub(crate) fn new(
        connection: DB::Connection,
        reconnect: Option<<DB::Connection as Connection>::Options>,
        reads: Pool<DB>,
        options: &StoreOptions,
    ) -> Self {
        let writer = SqlWriter {
            connection,
            reconnect,
        };
        Self {
            writer: WriterHandle::spawn(writer, options),
            reads,
        }
    }

    /// The `(user_id, text, expires_at_ms)` row `sql` finds for `key`, unless expired.
    async fn unexpired(
        &self,
        sql: &'static str,
        key: &str,
        now_ms: i64,
        context: &'static str,
    ) -> Result<Option<(String, String, i64)>, StoreError> {
        if key.contains('\0') {
            return Ok(None); // cannot be stored, so nothing is there
        }
        sqlx::query_as(sql)
            .bind(key)
            .bind(now_ms)
            .fetch_optional(&self.reads)
            .await
            .map_err(StoreError::db(context))
    }

    async fn messages(
        &self,
        conversation: &Conversation,
        sql: &'static str,
        seq: i64,
        limit: u32,
        newest_first: bool,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let key = conversation.storage_key();
        if key.contains('\0') {
            return Ok(Vec::new()); // cannot be stored, so nothing is there
        }
        let rows: Vec<MessageRow> = sqlx::query_as(sql)
            .bind(key)
            .bind(seq)
            .bind(page_limit(limit))
            .fetch_all(&self.reads)
            .await
            .map_err(StoreError::db("reading messages"))?;
        let mut messages: Vec<_> = rows
            .into_iter()
            .map(|row| message_from_row(conversation, row))
            .collect();
        if newest_first {
            messages.reverse();
        }
        Ok(messages)
    }
}

// Message queries select the columns of `MessageRow`, in its order.
const LATEST: &str = "SELECT seq, id, author_id, author_name, body, client_id, timestamp_ms \
     FROM messages WHERE conversation = $1 AND seq > $2 ORDER BY seq DESC LIMIT $3";
const BEFORE: &str = "SELECT seq, id, author_id, author_name, body, client_id, timestamp_ms \
     FROM messages WHERE conversation = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3";
const AFTER: &str = "SELECT seq, id, author_id, author_name, body, client_id, timestamp_ms \
     FROM messages WHERE conversation = $1 AND seq > $2 ORDER BY seq ASC LIMIT $3";
const LIST_ROOMS: &str = "SELECT name, created_at_ms, created_by FROM rooms WHERE name > $1 \
     ORDER BY name LIMIT $2";
const BY_CLIENT_ID: &str = "SELECT seq, id, author_id, author_name, body, client_id, timestamp_ms \
     FROM messages WHERE conversation = $1 AND author_id = $2 AND client_id = $3";
const DIRECT_CONVERSATIONS: &str = "SELECT c.conversation, c.last_seq \
     FROM direct_members d JOIN conversations c ON c.conversation = d.conversation \
     WHERE d.user_id = $1 ORDER BY c.conversation LIMIT $2";
// Record queries select `user_id, <text>, expires_at_ms` of an unexpired row by its key.
const SESSION: &str = "SELECT user_id, name, expires_at_ms FROM sessions \
     WHERE token_hash = $1 AND expires_at_ms > $2";
const RECOVERY: &str = "SELECT user_id, state, expires_at_ms FROM recovery_sessions \
     WHERE pid = $1 AND expires_at_ms > $2";
const LAST_SEQ: &str = "SELECT COALESCE(MAX(seq), 0) FROM messages WHERE conversation = $1";

impl<DB> HistoryStore for SqlStore<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB>,
    str: Type<DB>,
    for<'q> String: Encode<'q, DB>,
    for<'r> String: Decode<'r, DB>,
    String: Type<DB>,
    for<'q> i64: Encode<'q, DB>,
    for<'r> i64: Decode<'r, DB>,
    i64: Type<DB>,
    for<'q> bool: Encode<'q, DB>,
    for<'r> bool: Decode<'r, DB>,
    bool: Type<DB>,
    for<'q> Option<String>: Encode<'q, DB>,
    for<'r> Option<String>: Decode<'r, DB>,
    Option<String>: Type<DB>,
    usize: ColumnIndex<DB::Row>,
{
    fn append(&self, message: NewMessage) -> StoreFuture<'_, Appended> {
        Box::pin(self.writer.append(message))
    }

    fn append_queued(&self, message: NewMessage) -> StoreFuture<'_, super::PendingAppend> {
        Box::pin(self.writer.append_queued(message))
    }

    fn latest<'a>(
        &'a self,
        conversation: &'a Conversation,
        limit: u32,
    ) -> StoreFuture<'a, Vec<StoredMessage>> {
        Box::pin(self.messages(conversation, LATEST, 0, limit, true))
    }

    fn before<'a>(
        &'a self,
        conversation: &'a Conversation,
        seq: i64,
        limit: u32,
    ) -> StoreFuture<'a, Vec<StoredMessage>> {
        Box::pin(self.messages(conversation, BEFORE, seq, limit, true))
    }

    fn after<'a>(
        &'a self,
        conversation: &'a Conversation,
        seq: i64,
        limit: u32,
    ) -> StoreFuture<'a, Vec<StoredMessage>> {
        Box::pin(self.messages(conversation, AFTER, seq, limit, false))
    }

    fn last_seq<'a>(&'a self, conversation: &'a Conversation) -> StoreFuture<'a, i64> {
        Box::pin(async move {
            let key = conversation.storage_key();
            if key.contains('\0') {
                return Ok(0);
            }
            sqlx::query_scalar(LAST_SEQ)
                .bind(key)
                .fetch_one(&self.reads)
                .await
                .map_err(StoreError::db("reading the last sequence"))
        })
    }

    fn direct_conversations<'a>(
        &'a self,
        user_id: &'a str,
    ) -> StoreFuture<'a, Vec<ConversationSummary>> {
        Box::pin(async move {
            if user_id.contains('\0') {
                return Ok(Vec::new());
            }
            let rows: Vec<(String, i64)> = sqlx::query_as(DIRECT_CONVERSATIONS)
                .bind(user_id)
                .bind(i64::from(MAX_DIRECT_LISTED))
                .fetch_all(&self.reads)
                .await
                .map_err(StoreError::db("listing direct conversations"))?;
            Ok(rows
                .into_iter()
                .filter_map(|(key, last_seq)| {
                    Some(ConversationSummary {
                        conversation: Conversation::from_storage_key(&key)?,
                        last_seq,
                    })
                })
                .collect())
        })
    }

    fn create_room(&self, room: RoomRecord) -> StoreFuture<'_, bool> {
        Box::pin(self.writer.create_room(room))
    }

    fn list_rooms<'a>(&'a self, after: &'a str, limit: u32) -> StoreFuture<'a, Vec<RoomRecord>> {
        Box::pin(async move {
            if after.contains('\0') {
                return Ok(Vec::new());
            }
            let rows: Vec<(String, i64, Option<String>)> = sqlx::query_as(LIST_ROOMS)
                .bind(after)
                .bind(i64::from(limit.min(MAX_ROOMS_LISTED)))
                .fetch_all(&self.reads)
                .await
                .map_err(StoreError::db("listing rooms"))?;
            Ok(rows
                .into_iter()
                .map(|(name, created_at_ms, created_by)| RoomRecord {
                    name,
                    created_at_ms,
                    created_by,
                })
                .collect())
        })
    }

    fn message_by_client_id<'a>(
        &'a self,
        conversation: &'a Conversation,
        author_id: &'a str,
        client_id: &'a str,
    ) -> StoreFuture<'a, Option<StoredMessage>> {
        Box::pin(async move {
            let key = conversation.storage_key();
            if [key.as_str(), author_id, client_id]
                .iter()
                .any(|text| text.contains('\0'))
            {
                return Ok(None); // cannot be stored, so nothing is there
            }
            let row: Option<MessageRow> = sqlx::query_as(BY_CLIENT_ID)
                .bind(key)
                .bind(author_id)
                .bind(client_id)
                .fetch_optional(&self.reads)
                .await
                .map_err(StoreError::db("looking up a client id"))?;
            Ok(row.map(|row| message_from_row(conversation, row)))
        })
    }

    fn room_exists<'a>(&'a self, name: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            if name.contains('\0') {
                return Ok(false);
            }
            let found: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM rooms WHERE name = $1")
                .bind(name)
                .fetch_one(&self.reads)
                .await
                .map_err(StoreError::db("looking up a room"))?;
            Ok(found > 0)
        })
    }

    fn save_session(&self, session: SessionRecord) -> StoreFuture<'_, ()> {
        Box::pin(self.writer.save_session(session))
    }

    fn session<'a>(
        &'a self,
        token_hash: &'a str,
        now_ms: i64,
    ) -> StoreFuture<'a, Option<SessionRecord>> {
        Box::pin(async move {
            let row = self
                .unexpired(SESSION, token_hash, now_ms, "looking up a session")
                .await?;
            Ok(row.map(|(user_id, name, expires_at_ms)| SessionRecord {
                token_hash: token_hash.to_owned(),
                user_id,
                name,
                expires_at_ms,
            }))
        })
    }

    fn delete_session(&self, token_hash: String) -> StoreFuture<'_, bool> {
        Box::pin(self.writer.delete_session(token_hash))
    }

    fn save_recovery(&self, recovery: RecoveryRecord) -> StoreFuture<'_, ()> {
        Box::pin(self.writer.save_recovery(recovery))
    }

    fn recovery<'a>(
        &'a self,
        pid: &'a str,
        now_ms: i64,
    ) -> StoreFuture<'a, Option<RecoveryRecord>> {
        Box::pin(async move {
            let row = self
                .unexpired(RECOVERY, pid, now_ms, "looking up a recovery session")
                .await?;
            Ok(row.map(|(user_id, state, expires_at_ms)| RecoveryRecord {
                pid: pid.to_owned(),
                user_id,
                state,
                expires_at_ms,
            }))
        })
    }

    fn delete_recovery(&self, pid: String) -> StoreFuture<'_, bool> {
        Box::pin(self.writer.delete_recovery(pid))
    }

    fn save_user(&self, user: UserRecord) -> StoreFuture<'_, ()> {
        Box::pin(self.writer.save_user(user))
    }

    fn set_online(&self, user_ids: Vec<String>, online: bool, node: String) -> StoreFuture<'_, ()> {
        Box::pin(self.writer.set_online(user_ids, online, node))
    }

    fn claim_name(&self, claim: NameClaim, now_ms: i64) -> StoreFuture<'_, bool> {
        Box::pin(self.writer.claim_name(claim, now_ms))
    }

    fn release_name(&self, name_key: String, user_id: String) -> StoreFuture<'_, bool> {
        Box::pin(self.writer.release_name(name_key, user_id))
    }

    fn user_named<'a>(
        &'a self,
        name_key: &'a str,
        now_ms: i64,
    ) -> StoreFuture<'a, Option<UserRecord>> {
        Box::pin(async move {
            if name_key.contains('\0') {
                return Ok(None);
            }
            let row: Option<UserRow> = sqlx::query_as(
                "SELECT user_id, name, name_key, expires_at_ms, online, node FROM users \
                 WHERE name_key = $1 AND expires_at_ms > $2 \
                 ORDER BY expires_at_ms DESC LIMIT 1",
            )
            .bind(name_key)
            .bind(now_ms)
            .fetch_optional(&self.reads)
            .await
            .map_err(StoreError::db("looking up a user by name"))?;
            Ok(row.map(user_from_row))
        })
    }

    fn live_users(&self, now_ms: i64) -> StoreFuture<'_, Vec<UserRecord>> {
        Box::pin(async move {
            let rows: Vec<UserRow> = sqlx::query_as(
                "SELECT user_id, name, name_key, expires_at_ms, online, node FROM users \
                 WHERE expires_at_ms > $1 ORDER BY expires_at_ms DESC LIMIT $2",
            )
            .bind(now_ms)
            .bind(i64::from(MAX_USERS_LISTED))
            .fetch_all(&self.reads)
            .await
            .map_err(StoreError::db("listing users"))?;
            Ok(rows.into_iter().map(user_from_row).collect())
        })
    }

    fn delete_user(&self, user_id: String) -> StoreFuture<'_, bool> {
        Box::pin(self.writer.delete_user(user_id))
    }

    fn add_membership(&self, membership: MembershipRecord) -> StoreFuture<'_, bool> {
        Box::pin(self.writer.add_membership(membership))
    }

    fn remove_membership(&self, user_id: String, room: String) -> StoreFuture<'_, bool> {
        Box::pin(self.writer.remove_membership(user_id, room))
    }

    fn user_rooms<'a>(&'a self, user_id: &'a str) -> StoreFuture<'a, Vec<String>> {
        Box::pin(async move {
            if user_id.contains('\0') {
                return Ok(Vec::new());
            }
            sqlx::query_scalar(
                "SELECT room FROM room_members WHERE user_id = $1 ORDER BY room LIMIT $2",
            )
            .bind(user_id)
            .bind(i64::from(MAX_ROOMS_PER_USER_LISTED))
            .fetch_all(&self.reads)
            .await
            .map_err(StoreError::db("listing a user's rooms"))
        })
    }

    fn live_memberships(&self, now_ms: i64) -> StoreFuture<'_, Vec<MembershipRecord>> {
        Box::pin(async move {
            let rows: Vec<(String, String, i64)> = sqlx::query_as(
                "SELECT m.user_id, m.room, m.joined_at_ms FROM room_members m \
                 JOIN users u ON u.user_id = m.user_id WHERE u.expires_at_ms > $1 \
                 ORDER BY m.user_id, m.room LIMIT $2",
            )
            .bind(now_ms)
            .bind(i64::from(MAX_MEMBERSHIPS_LISTED))
            .fetch_all(&self.reads)
            .await
            .map_err(StoreError::db("listing memberships"))?;
            Ok(rows
                .into_iter()
                .map(|(user_id, room, joined_at_ms)| MembershipRecord {
                    user_id,
                    room,
                    joined_at_ms,
                })
                .collect())
        })
    }

    fn purge_expired(&self, now_ms: i64) -> StoreFuture<'_, u64> {
        Box::pin(self.writer.purge_expired(now_ms))
    }

    fn writer_stats(&self) -> Option<Arc<super::stats::WriterStats>> {
        Some(Arc::clone(&self.writer.stats))
    }

    fn close(&self) -> Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            self.writer.close().await;
            self.reads.close().await;
        })
    }
}

/// The writer's connection, and how to replace it.
pub(crate) struct SqlWriter<DB: Database> {
    connection: DB::Connection,
    reconnect: Option<<DB::Connection as Connection>::Options>,
}

impl<DB> WriteConnection for SqlWriter<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB>,
    str: Type<DB>,
    for<'q> String: Encode<'q, DB>,
    for<'r> String: Decode<'r, DB>,
    String: Type<DB>,
    for<'q> i64: Encode<'q, DB>,
    for<'r> i64: Decode<'r, DB>,
    i64: Type<DB>,
    for<'q> bool: Encode<'q, DB>,
    for<'r> bool: Decode<'r, DB>,
    bool: Type<DB>,
    for<'q> Option<String>: Encode<'q, DB>,
    for<'r> Option<String>: Decode<'r, DB>,
    Option<String>: Type<DB>,
    usize: ColumnIndex<DB::Row>,
{
    async fn begin(&mut self) -> Result<(), StoreError> {
        sqlx::query(DB::BEGIN)
            .execute(&mut self.connection)
            .await
            .map(drop)
            .map_err(StoreError::db("starting a write transaction"))
    }

    async fn commit(&mut self) -> Result<(), StoreError> {
        sqlx::query("COMMIT")
            .execute(&mut self.connection)
            .await
            .map(drop)
            .map_err(StoreError::db("committing a write transaction"))
    }

    async fn rollback(&mut self) {
        if sqlx::query("ROLLBACK")
            .execute(&mut self.connection)
            .await
            .is_ok()
        {
            return;
        }
        // Fails harmlessly when SQLite has already rolled back (or nothing was begun). A
        // PostgreSQL connection may be unusable (e.g. the server restarted): replace it, so
        // the next batch can succeed. If that fails too, the next batch fails and we try again.
        if let Some(reconnect) = &self.reconnect {
            match reconnect.connect().await {
                Ok(connection) => self.connection = connection,
                Err(error) => tracing::warn!(%error, "reconnecting the history writer failed"),
            }
        }
    }

    async fn reserve_seqs(
        &mut self,
        counts: &[(&str, i64)],
    ) -> Result<Vec<(String, i64)>, StoreError> {
        let sql = format!(
            "INSERT INTO conversations (conversation, last_seq) VALUES {} \
             ON CONFLICT (conversation) DO UPDATE \
             SET last_seq = conversations.last_seq + excluded.last_seq \
             RETURNING conversation, last_seq",
            row_placeholders(counts.len(), 2)
        );
        let mut query = sqlx::query_as(&sql);
        for (key, count) in counts {
            query = query.bind(*key).bind(*count);
        }
        query
            .fetch_all(&mut self.connection)
            .await
            .map_err(StoreError::db("advancing sequence counters"))
    }

    async fn find_by_client_ids(
        &mut self,
        keys: &[ClientKey<'_>],
    ) -> Result<Vec<(String, MessageRow)>, StoreError> {
        let sql = format!(
            "SELECT m.conversation, m.seq, m.id, m.author_id, m.author_name, m.body, \
             m.client_id, m.timestamp_ms FROM (VALUES {}) AS v JOIN messages m \
             ON m.conversation = v.column1 AND m.author_id = v.column2 \
             AND m.client_id = v.column3 WHERE m.client_id IS NOT NULL",
            row_placeholders(keys.len(), 3)
        );
        let mut query = sqlx::query_as(&sql);
        for wanted in keys {
            query = query
                .bind(wanted.key)
                .bind(wanted.author_id)
                .bind(wanted.client_id);
        }
        let rows: Vec<KeyedMessageRow> = query
            .fetch_all(&mut self.connection)
            .await
            .map_err(StoreError::db("looking up resent messages"))?;
        Ok(rows
            .into_iter()
            .map(
                |(key, seq, id, author_id, name, body, client_id, timestamp_ms)| {
                    (
                        key,
                        (seq, id, author_id, name, body, client_id, timestamp_ms),
                    )
                },
            )
            .collect())
    }

    async fn add_direct_members(&mut self, rows: &[(&str, &str)]) -> Result<(), StoreError> {
        let sql = format!(
            "INSERT INTO direct_members (user_id, conversation) VALUES {} ON CONFLICT DO NOTHING",
            row_placeholders(rows.len(), 2)
        );
        let mut query = sqlx::query(&sql);
        for (user_id, key) in rows {
            query = query.bind(*user_id).bind(*key);
        }
        query
            .execute(&mut self.connection)
            .await
            .map(drop)
            .map_err(StoreError::db("registering direct conversation members"))
    }

    async fn insert_messages(&mut self, rows: &[(&str, &StoredMessage)]) -> Result<(), StoreError> {
        let sql = format!(
            "INSERT INTO messages \
             (conversation, seq, id, author_id, author_name, body, client_id, timestamp_ms) \
             VALUES {}",
            row_placeholders(rows.len(), 8)
        );
        let mut query = sqlx::query(&sql);
        for (key, m) in rows {
            query = query
                .bind(*key)
                .bind(m.seq)
                .bind(&m.id)
                .bind(&m.author.user_id)
                .bind(&m.author.name)
                .bind(&m.body)
                .bind(&m.client_id)
                .bind(m.timestamp_ms);
        }
        query
            .execute(&mut self.connection)
            .await
            .map(drop)
            .map_err(StoreError::db("storing messages"))
    }

    async fn create_room(&mut self, room: &RoomRecord) -> Result<bool, StoreError> {
        let result = sqlx::query(
            "INSERT INTO rooms (name, created_at_ms, created_by) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(&room.name)
        .bind(room.created_at_ms)
        .bind(&room.created_by)
        .execute(&mut self.connection)
        .await
        .map_err(StoreError::db("creating a room"))?;
        let created = DB::rows_affected(&result) == 1;
        // The creator's membership, in the same transaction: a creation is stored whole.
        if created && let Some(creator) = &room.created_by {
            sqlx::query(
                "INSERT INTO room_members (user_id, room, joined_at_ms) VALUES ($1, $2, $3) \
                 ON CONFLICT (user_id, room) DO NOTHING",
            )
            .bind(creator)
            .bind(&room.name)
            .bind(room.created_at_ms)
            .execute(&mut self.connection)
            .await
            .map_err(StoreError::db("adding a room's creator"))?;
        }
        Ok(created)
    }

    async fn save_session(&mut self, session: &SessionRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO sessions (token_hash, user_id, name, expires_at_ms) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (token_hash) DO UPDATE SET user_id = excluded.user_id, \
             name = excluded.name, expires_at_ms = excluded.expires_at_ms",
        )
        .bind(&session.token_hash)
        .bind(&session.user_id)
        .bind(&session.name)
        .bind(session.expires_at_ms)
        .execute(&mut self.connection)
        .await
        .map(drop)
        .map_err(StoreError::db("saving a session"))
    }

    async fn delete_session(&mut self, token_hash: &str) -> Result<bool, StoreError> {
        let result = sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
            .bind(token_hash)
            .execute(&mut self.connection)
            .await
            .map_err(StoreError::db("deleting a session"))?;
        Ok(DB::rows_affected(&result) > 0)
    }

    async fn save_recovery(&mut self, recovery: &RecoveryRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO recovery_sessions (pid, user_id, state, expires_at_ms) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (pid) DO UPDATE SET user_id = excluded.user_id, \
             state = excluded.state, expires_at_ms = excluded.expires_at_ms",
        )
        .bind(&recovery.pid)
        .bind(&recovery.user_id)
        .bind(&recovery.state)
        .bind(recovery.expires_at_ms)
        .execute(&mut self.connection)
        .await
        .map(drop)
        .map_err(StoreError::db("saving a recovery session"))
    }

    async fn delete_recovery(&mut self, pid: &str) -> Result<bool, StoreError> {
        let result = sqlx::query("DELETE FROM recovery_sessions WHERE pid = $1")
            .bind(pid)
            .execute(&mut self.connection)
            .await
            .map_err(StoreError::db("deleting a recovery session"))?;
        Ok(DB::rows_affected(&result) > 0)
    }

    async fn purge_expired(&mut self, now_ms: i64) -> Result<u64, StoreError> {
        let sessions = sqlx::query("DELETE FROM sessions WHERE expires_at_ms <= $1")
            .bind(now_ms)
            .execute(&mut self.connection)
            .await
            .map_err(StoreError::db("purging expired sessions"))?;
        let recoveries = sqlx::query("DELETE FROM recovery_sessions WHERE expires_at_ms <= $1")
            .bind(now_ms)
            .execute(&mut self.connection)
            .await
            .map_err(StoreError::db("purging expired recovery sessions"))?;
        sqlx::query(
            "DELETE FROM room_members WHERE user_id IN \
             (SELECT user_id FROM users WHERE expires_at_ms <= $1)",
        )
        .bind(now_ms)
        .execute(&mut self.connection)
        .await
        .map_err(StoreError::db("purging the memberships of expired users"))?;
        sqlx::query("DELETE FROM names WHERE expires_at_ms <= $1")
            .bind(now_ms)
            .execute(&mut self.connection)
            .await
            .map_err(StoreError::db("purging expired names"))?;
        let users = sqlx::query("DELETE FROM users WHERE expires_at_ms <= $1")
            .bind(now_ms)
            .execute(&mut self.connection)
            .await
            .map_err(StoreError::db("purging expired users"))?;
        Ok(DB::rows_affected(&sessions)
            + DB::rows_affected(&recoveries)
            + DB::rows_affected(&users))
    }

    async fn save_user(&mut self, user: &UserRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO users (user_id, name, name_key, expires_at_ms, online, node) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (user_id) DO UPDATE SET name = excluded.name, \
             name_key = excluded.name_key, \
             expires_at_ms = CASE WHEN users.expires_at_ms > excluded.expires_at_ms \
             THEN users.expires_at_ms ELSE excluded.expires_at_ms END, \
             online = excluded.online, node = excluded.node",
        )
        .bind(&user.user_id)
        .bind(&user.name)
        .bind(&user.name_key)
        .bind(user.expires_at_ms)
        .bind(user.online)
        .bind(&user.node)
        .execute(&mut self.connection)
        .await
        .map(drop)
        .map_err(StoreError::db("saving a user"))
    }

    async fn set_online(
        &mut self,
        user_ids: &[String],
        online: bool,
        node: &str,
    ) -> Result<(), StoreError> {
        // One statement per chunk, not per user: thousands leave at once when a restart's
        // grace period ends, and every write of the batch waits for these. Online: this
        // node has them; offline: only those this node had (another may have them now).
        let update = if online {
            "UPDATE users SET online = $1, node = $2 WHERE user_id IN"
        } else {
            "UPDATE users SET online = $1 WHERE node = $2 AND user_id IN"
        };
        for chunk in user_ids.chunks(SET_ONLINE_CHUNK) {
            let list: Vec<String> = (3..chunk.len() + 3).map(|n| format!("${n}")).collect();
            let sql = format!("{update} ({})", list.join(","));
            let mut query = sqlx::query(&sql).bind(online).bind(node);
            for user_id in chunk {
                query = query.bind(user_id);
            }
            query
                .execute(&mut self.connection)
                .await
                .map_err(StoreError::db("recording who is online"))?;
        }
        Ok(())
    }

    async fn claim_name(&mut self, claim: &NameClaim, now_ms: i64) -> Result<bool, StoreError> {
        // One statement: a concurrent claim of the same key on another connection waits for
        // this one's row lock and then sees it held (PostgreSQL re-checks the `WHERE` on the
        // committed row; SQLite has one writer at a time).
        let holder: Option<String> = sqlx::query_scalar(
            "INSERT INTO names (name_key, user_id, expires_at_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (name_key) DO UPDATE SET user_id = excluded.user_id, \
             expires_at_ms = CASE WHEN names.user_id = excluded.user_id \
             AND names.expires_at_ms > excluded.expires_at_ms \
             THEN names.expires_at_ms ELSE excluded.expires_at_ms END \
             WHERE names.user_id = excluded.user_id OR names.expires_at_ms <= $4 \
             RETURNING user_id",
        )
        .bind(&claim.name_key)
        .bind(&claim.user_id)
        .bind(claim.expires_at_ms)
        .bind(now_ms)
        .fetch_optional(&mut self.connection)
        .await
        .map_err(StoreError::db("claiming a name"))?;
        Ok(holder.as_deref() == Some(claim.user_id.as_str()))
    }

    async fn release_name(&mut self, name_key: &str, user_id: &str) -> Result<bool, StoreError> {
        let result = sqlx::query("DELETE FROM names WHERE name_key = $1 AND user_id = $2")
            .bind(name_key)
            .bind(user_id)
            .execute(&mut self.connection)
            .await
            .map_err(StoreError::db("releasing a name"))?;
        Ok(DB::rows_affected(&result) > 0)
    }

    async fn delete_user(&mut self, user_id: &str) -> Result<bool, StoreError> {
        sqlx::query("DELETE FROM names WHERE user_id = $1")
            .bind(user_id)
            .execute(&mut self.connection)
            .await
            .map_err(StoreError::db("releasing a user's names"))?;
        sqlx::query("DELETE FROM room_members WHERE user_id = $1")
            .bind(user_id)
            .execute(&mut self.connection)
            .await
            .map_err(StoreError::db("removing a user's memberships"))?;
        let result = sqlx::query("DELETE FROM users WHERE user_id = $1")
            .bind(user_id)
            .execute(&mut self.connection)
            .await
            .map_err(StoreError::db("removing a user"))?;
        Ok(DB::rows_affected(&result) > 0)
    }

    async fn add_membership(&mut self, membership: &MembershipRecord) -> Result<bool, StoreError> {
        let result = sqlx::query(
            "INSERT INTO room_members (user_id, room, joined_at_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id, room) DO NOTHING",
        )
        .bind(&membership.user_id)
        .bind(&membership.room)
        .bind(membership.joined_at_ms)
        .execute(&mut self.connection)
        .await
        .map_err(StoreError::db("adding a room member"))?;
        Ok(DB::rows_affected(&result) == 1)
    }

    async fn remove_membership(&mut self, user_id: &str, room: &str) -> Result<bool, StoreError> {
        let result = sqlx::query("DELETE FROM room_members WHERE user_id = $1 AND room = $2")
            .bind(user_id)
            .bind(room)
            .execute(&mut self.connection)
            .await
            .map_err(StoreError::db("removing a room member"))?;
        Ok(DB::rows_affected(&result) > 0)
    }

    async fn close(self) {
        let _ = self.connection.close().await;
    }
}

/// Columns of a user row: `user_id, name, name_key, expires_at_ms, online, node`.
type UserRow = (String, String, String, i64, bool, String);

fn user_from_row((user_id, name, name_key, expires_at_ms, online, node): UserRow) -> UserRecord {
    UserRecord {
        user_id,
        name,
        name_key,
        expires_at_ms,
        online,
        node,
    }
}
