//! [`History`]: where messages and sessions live — the durable store, or memory when history
//! is turned off (`--no-history`, for measuring what durability costs).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use sha2::{Digest, Sha256};
use tracing::{error, warn};

use crate::domain::{DomainError, Draft, ErrorCode, Message, Place, RoomName, UserId, UserName};
use crate::store::{
    Author, Conversation, HistoryStore, MAX_ROOMS_LISTED, MembershipRecord, NewMessage,
    RecoveryRecord, RoomRecord, SessionRecord, StoreError, StoredMessage, UserRecord,
};

/// How long a session token stays valid after its last use.
pub const SESSION_TTL_MS: i64 = 30 * 24 * 60 * 60 * 1000;

/// A session's expiry is pushed back on connect when it was last pushed back longer ago than
/// this: a reconnect storm (a restart) then costs no writes.
pub const SESSION_REFRESH_MS: i64 = 60 * 60 * 1000;

/// Most sessions kept when history is off (memory is the only place they live then).
const MAX_MEMORY_SESSIONS: usize = 100_000;

/// The commit of a queued message: the message as stored, and whether it is a resend.
pub type PendingMessage = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<(Message, bool), DomainError>> + Send>,
>;

/// A session: who a token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub user: UserId,
    pub name: String,
}

/// A user known from storage, as the server starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMember {
    pub user: UserId,
    pub name: UserName,
    pub rooms: Vec<RoomName>,
    /// It was connected when the server last stopped (or crashed).
    pub online: bool,
}

/// Message history and sessions behind one handle.
pub enum History {
    Durable(Arc<dyn HistoryStore>),
    /// No durability: sequences and sessions in memory, no scrollback.
    Memory(Mutex<MemoryHistory>),
}

#[derive(Default)]
pub struct MemoryHistory {
    last_seq: HashMap<Conversation, i64>,
    sessions: HashMap<String, Session>,
}

/// The store's conversation for a draft's place.
pub fn conversation_of(place: &Place) -> Conversation {
    match place {
        Place::Room(room) => Conversation::room(room.as_str()),
        Place::Direct { from, to, .. } => Conversation::direct(from.as_str(), to.as_str()),
    }
}

/// The hash under which a token is stored: the token itself is never stored or logged.
pub fn token_hash(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

/// A fresh random identifier of `bytes` random bytes, hex-encoded.
pub fn random_hex(bytes: usize) -> String {
    let mut buffer = vec![0_u8; bytes];
    rand::fill(buffer.as_mut_slice());
    hex(&buffer)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The one error clients see when the store fails; the cause goes to the log.
fn unavailable(context: &str, err: &StoreError) -> DomainError {
    error!(%err, context, "history store failed");
    DomainError::new(
        ErrorCode::Unavailable,
        "history is unavailable right now, please retry",
    )
}

impl History {
    /// Store a message; resolves once it is durable. Returns the message and whether it is a
    /// resend of one stored before (same author, place and client id).
    pub async fn append(
        &self,
        draft: Draft,
        client_id: Option<String>,
        now_ms: i64,
    ) -> Result<(Message, bool), DomainError> {
        self.append_queued(draft, client_id, now_ms).await?.await
    }

    /// Queue a message for storing; resolves once it is queued (its sequence is then fixed
    /// relative to the caller's earlier messages), to the future of its commit.
    pub async fn append_queued(
        &self,
        draft: Draft,
        client_id: Option<String>,
        now_ms: i64,
    ) -> Result<PendingMessage, DomainError> {
        let conversation = conversation_of(&draft.place);
        match self {
            Self::Durable(store) => {
                let pending = store
                    .append_queued(NewMessage {
                        conversation,
                        author: Author {
                            user_id: draft.author.as_str().to_owned(),
                            name: draft.author_name.as_str().to_owned(),
                        },
                        body: draft.body.into_string(),
                        client_id,
                        sent_at_ms: now_ms,
                    })
                    .await
                    .map_err(|err| unavailable("append", &err))?;
                let (place, from) = (draft.place, draft.author_name);
                Ok(Box::pin(async move {
                    let appended = pending.await.map_err(|err| unavailable("append", &err))?;
                    let stored = appended.message;
                    let message = Message {
                        id: stored.id,
                        place,
                        seq: stored.seq,
                        timestamp_ms: stored.timestamp_ms,
                        from,
                        text: stored.body,
                        client_id: stored.client_id,
                    };
                    Ok((message, appended.duplicate))
                }))
            }
            Self::Memory(memory) => {
                let seq = {
                    let mut memory = memory.lock().unwrap_or_else(PoisonError::into_inner);
                    let seq = memory.last_seq.entry(conversation).or_insert(0);
                    *seq += 1;
                    *seq
                };
                let message = Message {
                    id: random_hex(13),
                    place: draft.place,
                    seq,
                    timestamp_ms: now_ms,
                    from: draft.author_name,
                    text: draft.body.into_string(),
                    client_id,
                };
                Ok(Box::pin(std::future::ready(Ok((message, false)))))
            }
        }
    }

    /// The sequence of the newest message of a conversation (0 when empty).
    pub async fn last_seq(&self, conversation: &Conversation) -> Result<i64, DomainError> {
        match self {
            Self::Durable(store) => store
                .last_seq(conversation)
                .await
                .map_err(|e| unavailable("last_seq", &e)),
            Self::Memory(memory) => {
                let memory = memory.lock().unwrap_or_else(PoisonError::into_inner);
                Ok(memory.last_seq.get(conversation).copied().unwrap_or(0))
            }
        }
    }

    /// Up to `limit` messages after `seq`, ascending (catch-up).
    pub async fn after(
        &self,
        conversation: &Conversation,
        seq: i64,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, DomainError> {
        match self {
            Self::Durable(store) => store
                .after(conversation, seq, limit)
                .await
                .map_err(|e| unavailable("after", &e)),
            Self::Memory(_) => Ok(Vec::new()),
        }
    }

    /// Up to `limit` messages before `seq` (or the latest when `None`), ascending.
    pub async fn before(
        &self,
        conversation: &Conversation,
        seq: Option<i64>,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, DomainError> {
        match (self, seq) {
            (Self::Durable(store), Some(seq)) => store
                .before(conversation, seq, limit)
                .await
                .map_err(|e| unavailable("before", &e)),
            (Self::Durable(store), None) => store
                .latest(conversation, limit)
                .await
                .map_err(|e| unavailable("latest", &e)),
            (Self::Memory(_), _) => Ok(Vec::new()),
        }
    }

    /// Record a new room and its creator's membership, in one write. Resolves to `false`,
    /// storing nothing, if the room is stored already (e.g. created by another node).
    pub async fn create_room(
        &self,
        name: &RoomName,
        creator: &UserId,
        now_ms: i64,
    ) -> Result<bool, DomainError> {
        match self {
            Self::Durable(store) => store
                .create_room(RoomRecord {
                    name: name.as_str().to_owned(),
                    created_at_ms: now_ms,
                    created_by: Some(creator.as_str().to_owned()),
                })
                .await
                .map_err(|e| unavailable("create_room", &e)),
            Self::Memory(_) => Ok(true),
        }
    }

    /// Every room recorded so far, with its creator when known, read page by page.
    pub async fn rooms(&self) -> Result<Vec<(String, Option<UserId>)>, DomainError> {
        let Self::Durable(store) = self else {
            return Ok(Vec::new());
        };
        let mut rooms: Vec<(String, Option<UserId>)> = Vec::new();
        loop {
            let after = rooms
                .last()
                .map_or("", |(name, _)| name.as_str())
                .to_owned();
            let page = store
                .list_rooms(&after, MAX_ROOMS_LISTED)
                .await
                .map_err(|e| unavailable("list_rooms", &e))?;
            let full = page.len() >= MAX_ROOMS_LISTED as usize;
            rooms.extend(
                page.into_iter()
                    .map(|room| (room.name, room.created_by.map(UserId::new))),
            );
            if !full {
                return Ok(rooms);
            }
        }
    }

    /// The message `author` stored in `conversation` under `client_id`, if any (without
    /// history there is no such memory: `None`).
    pub async fn message_by_client_id(
        &self,
        conversation: &Conversation,
        author: &UserId,
        client_id: &str,
    ) -> Result<Option<StoredMessage>, DomainError> {
        match self {
            Self::Durable(store) => store
                .message_by_client_id(conversation, author.as_str(), client_id)
                .await
                .map_err(|e| unavailable("message_by_client_id", &e)),
            Self::Memory(_) => Ok(None),
        }
    }

    /// Remember that `token` belongs to `session` (extends its validity), and that its user
    /// holds its name until the session expires.
    pub async fn save_session(
        &self,
        token: &str,
        session: &Session,
        now_ms: i64,
    ) -> Result<(), DomainError> {
        let token_hash = token_hash(token);
        match self {
            Self::Durable(store) => {
                let expires_at_ms = now_ms.saturating_add(SESSION_TTL_MS);
                let name_key = UserName::parse(&session.name)
                    .map(|name| name.key().as_str().to_owned())
                    .map_err(|_| {
                        DomainError::new(ErrorCode::InvalidName, "the session's name is invalid")
                    })?;
                // Both writes are queued at once, so they usually share one commit.
                let (saved_session, saved_user) = tokio::join!(
                    store.save_session(SessionRecord {
                        token_hash,
                        user_id: session.user.as_str().to_owned(),
                        name: session.name.clone(),
                        expires_at_ms,
                    }),
                    store.save_user(UserRecord {
                        user_id: session.user.as_str().to_owned(),
                        name: session.name.clone(),
                        name_key,
                        expires_at_ms,
                        online: true,
                    })
                );
                saved_session.map_err(|e| unavailable("save_session", &e))?;
                saved_user.map_err(|e| unavailable("save_user", &e))
            }
            Self::Memory(memory) => {
                let mut memory = memory.lock().unwrap_or_else(PoisonError::into_inner);
                if memory.sessions.len() >= MAX_MEMORY_SESSIONS {
                    // Bounded: forget an arbitrary old session rather than grow forever.
                    if let Some(key) = memory.sessions.keys().next().cloned() {
                        memory.sessions.remove(&key);
                    }
                }
                memory.sessions.insert(token_hash, session.clone());
                Ok(())
            }
        }
    }

    /// The session `token` belongs to, if it is known and not expired, and whether its
    /// expiry is due to be pushed back (see [`SESSION_REFRESH_MS`]).
    pub async fn session(
        &self,
        token: &str,
        now_ms: i64,
    ) -> Result<Option<(Session, bool)>, DomainError> {
        let token_hash = token_hash(token);
        match self {
            Self::Durable(store) => Ok(store
                .session(&token_hash, now_ms)
                .await
                .map_err(|e| unavailable("session", &e))?
                .map(|record| {
                    let refreshed_at = record.expires_at_ms.saturating_sub(SESSION_TTL_MS);
                    let due = now_ms.saturating_sub(refreshed_at) >= SESSION_REFRESH_MS;
                    let session = Session {
                        user: UserId::new(record.user_id),
                        name: record.name,
                    };
                    (session, due)
                })),
            Self::Memory(memory) => {
                let memory = memory.lock().unwrap_or_else(PoisonError::into_inner);
                // In memory a session never expires: nothing to push back.
                Ok(memory
                    .sessions
                    .get(&token_hash)
                    .cloned()
                    .map(|session| (session, false)))
            }
        }
    }

    /// The user holding `name` at `now_ms` (a session that has not expired), if any. Without
    /// history, nobody: names are then held only while their users are present.
    pub async fn user_named(
        &self,
        name: &UserName,
        now_ms: i64,
    ) -> Result<Option<(UserId, UserName)>, DomainError> {
        match self {
            Self::Durable(store) => Ok(store
                .user_named(name.key().as_str(), now_ms)
                .await
                .map_err(|e| unavailable("user_named", &e))?
                .and_then(|record| {
                    let name = UserName::parse(&record.name).ok()?;
                    Some((UserId::new(record.user_id), name))
                })),
            Self::Memory(_) => Ok(None),
        }
    }

    /// The rooms `user` is a member of besides `general`, as stored.
    pub async fn user_rooms(&self, user: &UserId) -> Result<Vec<RoomName>, DomainError> {
        match self {
            Self::Durable(store) => Ok(store
                .user_rooms(user.as_str())
                .await
                .map_err(|e| unavailable("user_rooms", &e))?
                .iter()
                .filter_map(|room| RoomName::parse(room).ok())
                .collect()),
            Self::Memory(_) => Ok(Vec::new()),
        }
    }

    /// Record that `user` is a member of `room`; resolves once stored.
    pub async fn add_membership(
        &self,
        user: &UserId,
        room: &RoomName,
        now_ms: i64,
    ) -> Result<(), DomainError> {
        match self {
            Self::Durable(store) => store
                .add_membership(MembershipRecord {
                    user_id: user.as_str().to_owned(),
                    room: room.as_str().to_owned(),
                    joined_at_ms: now_ms,
                })
                .await
                .map(drop)
                .map_err(|e| unavailable("add_membership", &e)),
            Self::Memory(_) => Ok(()),
        }
    }

    /// Record that `user` left `room`; resolves once stored.
    pub async fn remove_membership(
        &self,
        user: &UserId,
        room: &RoomName,
    ) -> Result<(), DomainError> {
        match self {
            Self::Durable(store) => store
                .remove_membership(user.as_str().to_owned(), room.as_str().to_owned())
                .await
                .map(drop)
                .map_err(|e| unavailable("remove_membership", &e)),
            Self::Memory(_) => Ok(()),
        }
    }

    /// Every user whose session has not expired at `now_ms`, with its stored rooms: what the
    /// community starts from after a restart.
    pub async fn live_members(&self, now_ms: i64) -> Result<Vec<StoredMember>, DomainError> {
        let Self::Durable(store) = self else {
            return Ok(Vec::new());
        };
        let users = store
            .live_users(now_ms)
            .await
            .map_err(|e| unavailable("live_users", &e))?;
        let memberships = store
            .live_memberships(now_ms)
            .await
            .map_err(|e| unavailable("live_memberships", &e))?;
        let mut rooms: HashMap<String, Vec<RoomName>> = HashMap::new();
        for membership in memberships {
            if let Ok(room) = RoomName::parse(&membership.room) {
                rooms.entry(membership.user_id).or_default().push(room);
            }
        }
        Ok(users
            .into_iter()
            .filter_map(|user| {
                let name = UserName::parse(&user.name).ok()?;
                let rooms = rooms.remove(&user.user_id).unwrap_or_default();
                Some(StoredMember {
                    user: UserId::new(user.user_id),
                    name,
                    rooms,
                    online: user.online,
                })
            })
            .collect())
    }

    /// Remember what a connection-state-recovery `pid` resumes, until `expires_at_ms`.
    pub async fn save_recovery(
        &self,
        pid: &str,
        user: &UserId,
        state: String,
        expires_at_ms: i64,
    ) -> Result<(), DomainError> {
        match self {
            Self::Durable(store) => store
                .save_recovery(RecoveryRecord {
                    pid: pid.to_owned(),
                    user_id: user.as_str().to_owned(),
                    state,
                    expires_at_ms,
                })
                .await
                .map_err(|e| unavailable("save_recovery", &e)),
            // Recovery is turned off without history.
            Self::Memory(_) => Ok(()),
        }
    }

    /// What `pid` resumes (its user, state and expiry), unless unknown or expired.
    pub async fn recovery(
        &self,
        pid: &str,
        now_ms: i64,
    ) -> Result<Option<(UserId, String, i64)>, DomainError> {
        match self {
            Self::Durable(store) => Ok(store
                .recovery(pid, now_ms)
                .await
                .map_err(|e| unavailable("recovery", &e))?
                .map(|record| {
                    (
                        UserId::new(record.user_id),
                        record.state,
                        record.expires_at_ms,
                    )
                })),
            Self::Memory(_) => Ok(None),
        }
    }

    /// Record that these users left, so a restart does not count them as online. A failure
    /// is logged: at worst they are listed online for a while after a restart.
    pub async fn mark_offline(&self, users: Vec<UserId>) {
        self.set_online(users, false).await;
    }

    /// Record that these users are online (when they arrive without saving their session).
    pub async fn mark_online(&self, users: Vec<UserId>) {
        self.set_online(users, true).await;
    }

    async fn set_online(&self, users: Vec<UserId>, online: bool) {
        if users.is_empty() {
            return;
        }
        if let Self::Durable(store) = self {
            let ids = users
                .into_iter()
                .map(|user| user.as_str().to_owned())
                .collect();
            if let Err(err) = store.set_online(ids, online).await {
                warn!(%err, online, "recording who is online failed");
            }
        }
    }

    /// Forget a session and its user, created for a connection that closed before it could
    /// learn its token (nobody can ever use either, and the user would hold its name).
    pub async fn forget_user(&self, token: &str, user: &UserId) {
        match self {
            Self::Durable(store) => {
                let (session, user) = tokio::join!(
                    store.delete_session(token_hash(token)),
                    store.delete_user(user.as_str().to_owned())
                );
                if let Err(err) = session.and(user) {
                    error!(%err, "forgetting an unreachable session failed");
                }
            }
            Self::Memory(memory) => {
                let mut memory = memory.lock().unwrap_or_else(PoisonError::into_inner);
                memory.sessions.remove(&token_hash(token));
            }
        }
    }

    /// Forget sessions and recovery records that have expired.
    pub async fn purge_expired(&self, now_ms: i64) {
        if let Self::Durable(store) = self
            && let Err(err) = store.purge_expired(now_ms).await
        {
            error!(%err, "purging expired sessions failed");
        }
    }

    /// The durable store's writer counters; `None` without history.
    pub fn writer_stats(&self) -> Option<Arc<crate::store::stats::WriterStats>> {
        match self {
            Self::Durable(store) => Some(store.writer_stats()),
            Self::Memory(_) => None,
        }
    }

    /// Flush and close the store (part of shutdown).
    pub async fn close(&self) {
        if let Self::Durable(store) = self {
            store.close().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_hash_is_stable_and_hides_the_token() {
        let token = random_hex(32);
        assert_eq!(token.len(), 64);
        assert_eq!(token_hash(&token), token_hash(&token));
        assert_ne!(token_hash(&token), token);
        assert_ne!(random_hex(32), token, "tokens are random");
    }
}
