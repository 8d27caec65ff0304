//! Message history and sequences behind one trait, with SQLite, PostgreSQL and in-memory
//! implementations.
//!
//! # Layout
//! - `mod.rs` (this file): the [`HistoryStore`] trait, the record types it speaks in,
//!   [`StoreError`], [`StoreOptions`] and [`open_store`], which picks a backend from a URL.
//! - `writer.rs`: the group-commit writer task shared by the SQL backends. It owns the store's
//!   write connection, drains a bounded queue of writes, commits them in one transaction and answers
//!   each caller after the commit. Sequence numbers are assigned there.
//! - `sql.rs`: [`SqlStore`], every query (reads, and the writes the writer applies) written once
//!   for SQLite and PostgreSQL; a backend names its few differences in [`Dialect`].
//! - [`stats`]: the writer's counters and histograms (batch sizes, commit latency), for metrics.
//! - `migrate.rs`: migrations embedded in the binary (SQL files under `migrations/`).
//! - `sqlite.rs`: opens SQLite (the default): WAL, `synchronous=FULL` unless relaxed, a small
//!   read pool; a new store method needs nothing here.
//! - `postgres.rs`: connects to PostgreSQL, for deployments that share history between nodes;
//!   its writer reconnects after the server drops it. A new store method needs nothing here.
//! - [`history`]: [`History`], the chat's one handle on a store: the domain's types in and
//!   out, store failures turned into the one error clients see, sessions' expiry policy.
//! - `memory.rs`: [`MemoryStore`], everything in bounded memory: `--no-history` (with
//!   [`MemoryLimits::no_history`]) and tests that need no database.
//!
//! # Guarantees (the same for every backend)
//! For the memory store "committed" means "kept until the process ends", within the bounds
//! of its [`MemoryLimits`].
//! - A write future resolves only after the transaction holding it has committed: with
//!   [`Durability::Full`] that means fsynced, so an acknowledged message survives `kill -9` and
//!   power loss.
//! - Writes are applied in the order they were queued; a batch commits or fails as a whole.
//! - Sequences are per conversation, start at 1 and have no gaps: a sequence is consumed only
//!   by a committed message, also across batches and restarts.
//! - Appending again with the same `client_id` from the same author in the same conversation
//!   returns the message stored the first time (same id and seq), flagged as a duplicate.
//! - A read started after a write future resolved sees that write.
//! - Dropping a write future after it was queued does not cancel the write: a message whose
//!   sender went away may still be stored (a resend with its `client_id` then finds it).
//! - Lists of messages are always in ascending sequence order, whatever the query direction.
//!
//! Several stores may share one database (nodes of a cluster on PostgreSQL, or an old and a
//! new process on one SQLite file): sequences come from a counter row per conversation that
//! each batch advances inside its transaction, so they stay gapless (see `writer.rs`).

pub mod history;
mod memory;
mod migrate;
mod postgres;
mod sql;
mod sqlite;
pub mod stats;
mod writer;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

pub use history::History;
pub use memory::{MemoryLimits, MemoryStore};
pub use postgres::PostgresStore;
pub use sql::{Dialect, SqlStore};
pub use sqlite::SqliteStore;
pub use writer::MAX_BODY_BYTES;

/// The most messages one read returns; larger limits are clamped to it. Callers page with
/// [`HistoryStore::before`] / [`HistoryStore::after`].
pub const MAX_PAGE_LIMIT: u32 = 1000;

/// The most rooms one [`HistoryStore::list_rooms`] page returns.
pub const MAX_ROOMS_LISTED: u32 = 10_000;

/// The most conversations [`HistoryStore::direct_conversations`] returns.
pub const MAX_DIRECT_LISTED: u32 = 10_000;

/// The most users [`HistoryStore::live_users`] returns.
pub const MAX_USERS_LISTED: u32 = 100_000;

/// The most memberships [`HistoryStore::live_memberships`] returns.
pub const MAX_MEMBERSHIPS_LISTED: u32 = 1_000_000;

/// The most rooms of one user [`HistoryStore::user_rooms`] returns.
pub const MAX_ROOMS_PER_USER_LISTED: u32 = 1_000;

/// The longest `client_id` accepted, in bytes. It is an idempotency key, not content.
pub const MAX_CLIENT_ID_LEN: usize = 128;

/// The future every store method returns.
///
/// Boxed rather than `impl Future` so that `HistoryStore` stays dyn-compatible: the server picks
/// the backend at run time from a URL and holds an `Arc<dyn HistoryStore>`, and tests can put a
/// fake behind the same trait. One allocation per call is noise next to a database round trip.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Durable history, rooms and sessions of a chat server.
///
/// Methods may be called concurrently from any task. See the module docs for the ordering and
/// durability guarantees. Writes (`append`, `create_room`, `save_*`, `delete_*`,
/// `purge_expired`) go through the group-commit writer; reads go to a read pool.
pub trait HistoryStore: Send + Sync + 'static {
    /// Stores a message and assigns its id and sequence. Resolves after the commit.
    fn append(&self, message: NewMessage) -> StoreFuture<'_, Appended>;

    /// Queues a message for the writer and resolves as soon as it is queued (waiting only
    /// for room in the queue: backpressure), to the future of its commit. Messages queued
    /// one after another get their sequences in that order, so a caller may queue the next
    /// before the previous has committed (pipelining: many messages of one sender share a
    /// group commit) and still keep its order.
    fn append_queued(&self, message: NewMessage) -> StoreFuture<'_, PendingAppend>;

    /// The newest `limit` messages of a conversation, ascending.
    fn latest<'a>(
        &'a self,
        conversation: &'a Conversation,
        limit: u32,
    ) -> StoreFuture<'a, Vec<StoredMessage>>;

    /// Up to `limit` messages with a sequence below `seq`, the closest to it, ascending
    /// (scrollback).
    fn before<'a>(
        &'a self,
        conversation: &'a Conversation,
        seq: i64,
        limit: u32,
    ) -> StoreFuture<'a, Vec<StoredMessage>>;

    /// Up to `limit` messages with a sequence above `seq`, ascending (catch-up: pass the last
    /// sequence the client saw, repeat with the last returned one until a short page).
    fn after<'a>(
        &'a self,
        conversation: &'a Conversation,
        seq: i64,
        limit: u32,
    ) -> StoreFuture<'a, Vec<StoredMessage>>;

    /// The message `author_id` stored in `conversation` with this `client_id`, if any: how a
    /// resend is answered without queueing it (e.g. while its sender is over its rate).
    fn message_by_client_id<'a>(
        &'a self,
        conversation: &'a Conversation,
        author_id: &'a str,
        client_id: &'a str,
    ) -> StoreFuture<'a, Option<StoredMessage>>;

    /// The sequence of the newest committed message, 0 for an empty conversation.
    fn last_seq<'a>(&'a self, conversation: &'a Conversation) -> StoreFuture<'a, i64>;

    /// The direct conversations `user_id` takes part in (at most [`MAX_DIRECT_LISTED`]), with
    /// their last sequences: how a client learns of conversations started while it was away.
    fn direct_conversations<'a>(
        &'a self,
        user_id: &'a str,
    ) -> StoreFuture<'a, Vec<ConversationSummary>>;

    /// Registers a room and, when it has a creator, the creator's membership of it, in one
    /// transaction. Resolves to `false`, changing nothing, if a room with exactly this name
    /// exists already (the caller normalises names before).
    fn create_room(&self, room: RoomRecord) -> StoreFuture<'_, bool>;

    /// The registered rooms whose names sort after `after` (`""` for the first page), ordered
    /// by name; at most `limit` (and at most [`MAX_ROOMS_LISTED`]). Page on with the last name.
    fn list_rooms<'a>(&'a self, after: &'a str, limit: u32) -> StoreFuture<'a, Vec<RoomRecord>>;

    /// Whether a room with exactly this name is registered.
    fn room_exists<'a>(&'a self, name: &'a str) -> StoreFuture<'a, bool>;

    /// Creates or replaces (e.g. to extend its expiry) the session with this token hash.
    fn save_session(&self, session: SessionRecord) -> StoreFuture<'_, ()>;

    /// The session with this token hash, unless it is unknown or expired at `now_ms`.
    fn session<'a>(
        &'a self,
        token_hash: &'a str,
        now_ms: i64,
    ) -> StoreFuture<'a, Option<SessionRecord>>;

    /// Removes a session (logout). Resolves to whether it existed.
    fn delete_session(&self, token_hash: String) -> StoreFuture<'_, bool>;

    /// Creates or replaces the socket.io connection-state-recovery record of a `pid`.
    fn save_recovery(&self, recovery: RecoveryRecord) -> StoreFuture<'_, ()>;

    /// The recovery record of a `pid`, unless it is unknown or expired at `now_ms`.
    fn recovery<'a>(&'a self, pid: &'a str, now_ms: i64)
    -> StoreFuture<'a, Option<RecoveryRecord>>;

    /// Removes a recovery record (once used). Resolves to whether it existed.
    fn delete_recovery(&self, pid: String) -> StoreFuture<'_, bool>;

    /// Creates or updates a user (its name, and its expiry: the later of the stored and the
    /// given one, so an older session saved late never shortens it).
    fn save_user(&self, user: UserRecord) -> StoreFuture<'_, ()>;

    /// The user holding the name with this key at `now_ms`: the one whose expiry is latest
    /// among those not expired. The caller computes the key (the chat's name comparison).
    fn user_named<'a>(
        &'a self,
        name_key: &'a str,
        now_ms: i64,
    ) -> StoreFuture<'a, Option<UserRecord>>;

    /// Takes the name `claim.name_key` for `claim.user_id` until `claim.expires_at_ms`, in one
    /// statement: when nobody holds it, when its holder's claim has expired at `now_ms`, or
    /// when the holder is this user already (its claim then lasts until the later expiry).
    /// Resolves to whether the user holds the name now. Stores sharing one database never
    /// both win a name: the database decides, not a read before the write.
    fn claim_name(&self, claim: NameClaim, now_ms: i64) -> StoreFuture<'_, bool>;

    /// Gives up a name held by `user_id` (another holder's claim is left alone). Resolves to
    /// whether it was held.
    fn release_name(&self, name_key: String, user_id: String) -> StoreFuture<'_, bool>;

    /// Users not expired at `now_ms`, at most [`MAX_USERS_LISTED`] (the latest expiring
    /// first when there are more).
    fn live_users(&self, now_ms: i64) -> StoreFuture<'_, Vec<UserRecord>>;

    /// Removes a user, its memberships and the names it holds (e.g. one whose connection closed before it could
    /// learn its token). Resolves to whether it existed.
    fn delete_user(&self, user_id: String) -> StoreFuture<'_, bool>;

    /// Records that these users connected to `node` (`online`), or left it: a user is
    /// recorded offline only if `node` is the one that recorded it online (`save_user` also
    /// sets `online` and `node`).
    fn set_online(&self, user_ids: Vec<String>, online: bool, node: String) -> StoreFuture<'_, ()>;

    /// Records that a user is a member of a room. Resolves to `false` if it was already.
    fn add_membership(&self, membership: MembershipRecord) -> StoreFuture<'_, bool>;

    /// Removes a membership. Resolves to whether it existed.
    fn remove_membership(&self, user_id: String, room: String) -> StoreFuture<'_, bool>;

    /// The rooms a user is a member of, by name; at most [`MAX_ROOMS_PER_USER_LISTED`].
    fn user_rooms<'a>(&'a self, user_id: &'a str) -> StoreFuture<'a, Vec<String>>;

    /// The memberships of users not expired at `now_ms`, by user then room; at most
    /// [`MAX_MEMBERSHIPS_LISTED`].
    fn live_memberships(&self, now_ms: i64) -> StoreFuture<'_, Vec<MembershipRecord>>;

    /// Removes sessions, recovery records, users and name claims expired at `now_ms` (with
    /// the users' memberships); resolves to how many sessions, recovery records and users.
    fn purge_expired(&self, now_ms: i64) -> StoreFuture<'_, u64>;

    /// What the group-commit writer did since the store opened (for metrics).
    /// `None` for a store without one (memory).
    fn writer_stats(&self) -> Option<Arc<stats::WriterStats>>;

    /// Flushes every write queued so far, stops the writer and closes the connections.
    /// Later calls fail with [`StoreError::Closed`]. Part of graceful shutdown.
    fn close(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

/// The commit of a queued append (see [`HistoryStore::append_queued`]).
pub type PendingAppend = Pin<Box<dyn Future<Output = Result<Appended, StoreError>> + Send>>;

/// What a message belongs to: a room, or the direct conversation of two users.
///
/// Built only through [`Conversation::room`] and [`Conversation::direct`], which puts the pair
/// in canonical order, so `direct(a, b) == direct(b, a)`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Conversation(ConversationKind);

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum ConversationKind {
    Room(String),
    Direct(String, String),
}

impl Conversation {
    /// The conversation of a room, by its (already normalised) name.
    pub fn room(name: impl Into<String>) -> Self {
        Self(ConversationKind::Room(name.into()))
    }

    /// The direct conversation between two user ids, in either order.
    pub fn direct(user_a: impl Into<String>, user_b: impl Into<String>) -> Self {
        let (a, b) = (user_a.into(), user_b.into());
        if a <= b {
            Self(ConversationKind::Direct(a, b))
        } else {
            Self(ConversationKind::Direct(b, a))
        }
    }

    /// The room name, if this is a room.
    pub fn as_room(&self) -> Option<&str> {
        match &self.0 {
            ConversationKind::Room(name) => Some(name),
            ConversationKind::Direct(..) => None,
        }
    }

    /// The two user ids in canonical (ascending) order, if this is a direct conversation.
    pub fn as_direct(&self) -> Option<(&str, &str)> {
        match &self.0 {
            ConversationKind::Room(_) => None,
            ConversationKind::Direct(a, b) => Some((a, b)),
        }
    }

    /// The conversation a storage key names: the inverse of [`Conversation::storage_key`].
    pub(crate) fn from_storage_key(key: &str) -> Option<Self> {
        if let Some(name) = key.strip_prefix("r:") {
            return Some(Self::room(name));
        }
        let (a, b) = parse_direct_key(key)?;
        Some(Self::direct(a, b))
    }

    /// The key stored in the `conversation` column. Unambiguous: the first user id is
    /// length-prefixed, so no choice of ids can make two pairs (or a pair and a room) collide.
    pub(crate) fn storage_key(&self) -> String {
        match &self.0 {
            ConversationKind::Room(name) => format!("r:{name}"),
            ConversationKind::Direct(a, b) => format!("d:{}:{a}:{b}", a.len()),
        }
    }
}

/// The two user ids of a direct conversation's storage key (`d:<byte length of a>:<a>:<b>`).
pub(crate) fn parse_direct_key(key: &str) -> Option<(&str, &str)> {
    let rest = key.strip_prefix("d:")?;
    let (length, rest) = rest.split_once(':')?;
    let length: usize = length.parse().ok()?;
    let a = rest.get(..length)?;
    let b = rest.get(length..)?.strip_prefix(':')?;
    Some((a, b))
}

/// A conversation and the sequence of its newest message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConversationSummary {
    pub conversation: Conversation,
    pub last_seq: i64,
}

/// Who wrote a message: the stable user id and the display name at the time of writing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Author {
    pub user_id: String,
    pub name: String,
}

/// A message to store, as validated by the chat layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewMessage {
    pub conversation: Conversation,
    pub author: Author,
    pub body: String,
    /// The sender's idempotency key: a resend with the same key is not stored twice.
    pub client_id: Option<String>,
    /// The server's clock when the message arrived; stored as the message's timestamp.
    pub sent_at_ms: i64,
}

/// A message as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredMessage {
    /// Server-assigned, unique: 26 characters, sortable by time (a ULID).
    pub id: String,
    pub conversation: Conversation,
    /// Per conversation, gapless, from 1.
    pub seq: i64,
    pub author: Author,
    pub body: String,
    pub client_id: Option<String>,
    pub timestamp_ms: i64,
}

/// The result of [`HistoryStore::append`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Appended {
    pub message: StoredMessage,
    /// True when the `client_id` had been stored before: `message` is the original, and the
    /// chat layer should ack it again without broadcasting it a second time.
    pub duplicate: bool,
}

/// A registered room.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomRecord {
    pub name: String,
    pub created_at_ms: i64,
    /// The user id of its creator (`None` for rooms created before creators were recorded).
    pub created_by: Option<String>,
}

/// An identity session: the hash of the token a client holds, never the token itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRecord {
    pub token_hash: String,
    pub user_id: String,
    pub name: String,
    pub expires_at_ms: i64,
}

/// A user known beyond its connections: who holds a name, until when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserRecord {
    pub user_id: String,
    /// The display name.
    pub name: String,
    /// The name in the form names are compared in (case- and Unicode-insensitive).
    pub name_key: String,
    /// When the user's latest session expires; the name is free again from then on.
    pub expires_at_ms: i64,
    /// Connected, as far as storage knows: set when the user connects, cleared when it
    /// leaves. Still set after a crash, which is how a restart knows who was online.
    pub online: bool,
    /// The node that recorded it online last (see [`HistoryStore::set_online`]): a node
    /// restarting restores only its own users.
    pub node: String,
}

/// A claim of a name (see [`HistoryStore::claim_name`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameClaim {
    /// The name in the form names are compared in (as [`UserRecord::name_key`]).
    pub name_key: String,
    pub user_id: String,
    /// When the claim lapses unless claimed again; the name is free from then on.
    pub expires_at_ms: i64,
}

/// A user's membership of a room.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MembershipRecord {
    pub user_id: String,
    pub room: String,
    pub joined_at_ms: i64,
}

/// What socket.io connection-state recovery needs to resume a socket: its `pid`, whose it was,
/// and an opaque state chosen by the chat layer (e.g. JSON with rooms and last offsets).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveryRecord {
    pub pid: String,
    pub user_id: String,
    pub state: String,
    pub expires_at_ms: i64,
}

/// How much a commit waits for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// Every commit is on disk (fsync) before the write resolves: survives power loss.
    /// SQLite `synchronous=FULL`; PostgreSQL `synchronous_commit=on`.
    #[default]
    Full,
    /// A commit survives a crash of the chat server process, not of the machine; faster.
    /// SQLite `synchronous=NORMAL`; PostgreSQL `synchronous_commit=off`.
    ProcessCrash,
}

/// Tuning of a store; [`StoreOptions::default`] suits a chat server.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    pub durability: Durability,
    /// Writes that may wait for the writer; further writers wait for room (backpressure).
    pub queue_capacity: usize,
    /// The most writes committed in one transaction. 1 means one transaction per write.
    pub max_batch: usize,
    /// Connections in the read pool.
    pub read_connections: u32,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            durability: Durability::Full,
            queue_capacity: 8192,
            max_batch: 1024,
            read_connections: 4,
        }
    }
}

/// Opens (creating if needed) the store a URL names, with default options.
///
/// `postgres://…` / `postgresql://…` → PostgreSQL; `sqlite://path`, `sqlite:path` or a plain
/// file path → SQLite (the file and its parent directories are created on first run).
pub async fn open_store(
    url: &str,
    durability: Durability,
) -> Result<Arc<dyn HistoryStore>, StoreError> {
    let options = StoreOptions {
        durability,
        ..StoreOptions::default()
    };
    open_store_with(url, options).await
}

/// [`open_store`] with explicit options.
pub async fn open_store_with(
    url: &str,
    options: StoreOptions,
) -> Result<Arc<dyn HistoryStore>, StoreError> {
    match Backend::from_url(url)? {
        Backend::Postgres => Ok(Arc::new(PostgresStore::open(url, options).await?)),
        Backend::Sqlite(path) => Ok(Arc::new(SqliteStore::open(path, options).await?)),
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Backend<'a> {
    Postgres,
    Sqlite(&'a str),
}

impl<'a> Backend<'a> {
    fn from_url(url: &'a str) -> Result<Self, StoreError> {
        let url = url.trim();
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Self::Postgres);
        }
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .unwrap_or(url);
        // One database is shared by a writer and a read pool, so it has to be a file.
        if path.is_empty() || path.contains(":memory:") || path.contains("://") {
            return Err(StoreError::InvalidUrl(redact_url(url)));
        }
        Ok(Self::Sqlite(path))
    }
}

/// A URL safe to log: anything between `://` and `@` (credentials) is hidden.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}://***{}", &url[..scheme_end], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// Everything that can go wrong in a store. The `Display` text is for logs; the chat layer
/// maps any of these to one generic error code for clients (never the SQL or the cause).
#[derive(Clone, Debug)]
pub enum StoreError {
    /// The URL names no supported backend (credentials redacted).
    InvalidUrl(String),
    /// The caller passed something the store refuses (e.g. an oversized client id).
    InvalidInput(&'static str),
    /// The database failed while doing `context`.
    Database {
        context: &'static str,
        source: Arc<sqlx::Error>,
    },
    /// Applying the schema migrations failed.
    Migration(Arc<sqlx::migrate::MigrateError>),
    /// Preparing the database file (e.g. creating its directory) failed.
    Io {
        context: &'static str,
        source: Arc<std::io::Error>,
    },
    /// Two writers touched the same database: an insert collided with a sequence already taken.
    Conflict(&'static str),
    /// The store was closed, or its writer stopped.
    Closed,
}

impl StoreError {
    pub(crate) fn db(context: &'static str) -> impl FnOnce(sqlx::Error) -> Self {
        move |source| Self::Database {
            context,
            source: Arc::new(source),
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidUrl(url) => write!(f, "unsupported store URL {url:?}"),
            Self::InvalidInput(what) => write!(f, "invalid store input: {what}"),
            Self::Database { context, source } => {
                write!(f, "database error while {context}: {source}")
            }
            Self::Migration(source) => write!(f, "database migration failed: {source}"),
            Self::Io { context, source } => write!(f, "I/O error while {context}: {source}"),
            Self::Conflict(what) => write!(f, "write conflict: {what}"),
            Self::Closed => f.write_str("the store is closed"),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Database { source, .. } => Some(source.as_ref()),
            Self::Migration(source) => Some(source.as_ref()),
            Self::Io { source, .. } => Some(source.as_ref()),
            _ => None,
        }
    }
}

/// Clamps a requested page size to what one read may return.
fn page_limit(limit: u32) -> i64 {
    i64::from(limit.min(MAX_PAGE_LIMIT))
}

/// Columns of a message row, in the order every read selects them:
/// `seq, id, author_id, author_name, body, client_id, timestamp_ms`.
type MessageRow = (i64, String, String, String, String, Option<String>, i64);

/// A [`MessageRow`] with the conversation's storage key in front.
type KeyedMessageRow = (
    String,
    i64,
    String,
    String,
    String,
    String,
    Option<String>,
    i64,
);

fn message_from_row(conversation: &Conversation, row: MessageRow) -> StoredMessage {
    let (seq, id, user_id, name, body, client_id, timestamp_ms) = row;
    StoredMessage {
        id,
        conversation: conversation.clone(),
        seq,
        author: Author { user_id, name },
        body,
        client_id,
        timestamp_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_direct_conversation_is_the_same_whichever_user_starts_it() {
        assert_eq!(
            Conversation::direct("bob", "alice"),
            Conversation::direct("alice", "bob")
        );
        assert_eq!(
            Conversation::direct("bob", "alice").as_direct(),
            Some(("alice", "bob"))
        );
    }

    #[test]
    fn storage_keys_of_different_conversations_never_collide() {
        let keys = [
            Conversation::room("a:b"),
            Conversation::direct("a", "b:c"),
            Conversation::direct("a:b", "c"),
            Conversation::room("d:1:a:b"),
            Conversation::direct("a", "b"),
        ]
        .map(|c| c.storage_key());
        for (i, key) in keys.iter().enumerate() {
            assert!(!keys[i + 1..].contains(key), "{key} collides");
        }
    }

    #[test]
    fn a_storage_key_names_its_conversation_again() {
        let conversations = [
            Conversation::room("general"),
            Conversation::room("d:1:a:b"),
            Conversation::direct("é:x", "b:c"),
            Conversation::direct("", "z"),
            Conversation::direct("same", "same"),
        ];
        for conversation in conversations {
            let key = conversation.storage_key();
            assert_eq!(
                Conversation::from_storage_key(&key),
                Some(conversation),
                "{key}"
            );
        }
        assert_eq!(Conversation::from_storage_key("d:9:a:b"), None);
        assert_eq!(Conversation::from_storage_key("x:1"), None);
    }

    #[test]
    fn the_backend_is_chosen_from_the_url() {
        assert_eq!(
            Backend::from_url("postgres://u@h/db").ok(),
            Some(Backend::Postgres)
        );
        assert_eq!(
            Backend::from_url("sqlite://data/chat.db").ok(),
            Some(Backend::Sqlite("data/chat.db"))
        );
        assert_eq!(
            Backend::from_url("sqlite:chat.db").ok(),
            Some(Backend::Sqlite("chat.db"))
        );
        assert_eq!(
            Backend::from_url("chat.db").ok(),
            Some(Backend::Sqlite("chat.db"))
        );
        assert!(Backend::from_url("").is_err());
        assert!(Backend::from_url("sqlite::memory:").is_err());
        assert!(Backend::from_url("mysql://h/db").is_err());
    }

    #[test]
    fn credentials_never_reach_an_error_message() {
        let error = Backend::from_url("mysql://user:secret@host/db").unwrap_err();
        assert!(!error.to_string().contains("secret"), "{error}");
    }
}
