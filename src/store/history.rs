//! [`History`]: where messages and sessions live, in the chat's terms — a store (SQLite,
//! PostgreSQL, or memory when history is turned off with `--no-history`, for measuring what
//! durability costs) seen through the domain's types.

use std::collections::HashMap;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tracing::{error, warn};

use super::{
    Author, Conversation, HistoryStore, MAX_ROOMS_LISTED, MembershipRecord, NameClaim, NewMessage,
    RecoveryRecord, RoomRecord, SessionRecord, StoreError, StoredMessage, UserRecord,
};
use crate::domain::session;
use crate::domain::{DomainError, Draft, ErrorCode, Message, Place, RoomName, UserId, UserName};

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

/// The node name of a server that shares its store with no other node (see
/// [`History::with_node`]).
pub const SINGLE_NODE: &str = "local";

/// Message history and sessions behind one handle.
pub struct History {
    store: Arc<dyn HistoryStore>,
    /// This server's name among the nodes sharing the store: who it records online, and
    /// whom it restores after a restart, are its own users only.
    node: String,
}

/// The store's conversation for a draft's place.
pub fn conversation_of(place: &Place) -> Conversation {
    match place {
        Place::Room(room) => Conversation::room(room.as_str()),
        Place::Direct { from, to, .. } => Conversation::direct(from.as_str(), to.as_str()),
    }
}

/// `general` as a stored conversation.
pub fn general_conversation() -> Conversation {
    Conversation::room(RoomName::general().as_str())
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

/// The store's claim of `user` on `name`.
fn name_claim(user: &UserId, name: &UserName, expires_at_ms: i64) -> NameClaim {
    NameClaim {
        name_key: name.key().as_str().to_owned(),
        user_id: user.as_str().to_owned(),
        expires_at_ms,
    }
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
    /// The chat's view of `store`.
    pub fn new(store: Arc<dyn HistoryStore>) -> Self {
        Self {
            store,
            node: SINGLE_NODE.to_owned(),
        }
    }

    /// The same history as node `node` of a cluster sharing the store; the name must differ
    /// from every other node's. A restart restores only the users recorded online under
    /// the name it starts with, and frees only the tutorial names claimed under it: a
    /// cluster node takes a new name (its uid) at every start, and Redis presence decides
    /// whether the users of a node that is gone are still online.
    pub fn with_node(mut self, node: impl Into<String>) -> Self {
        self.node = node.into();
        self
    }

    /// This server's node name (see [`History::with_node`]).
    pub fn node(&self) -> &str {
        &self.node
    }

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
        let pending = self
            .store
            .append_queued(NewMessage {
                conversation: conversation_of(&draft.place),
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

    /// The sequence of the newest message of a conversation (0 when empty).
    pub async fn last_seq(&self, conversation: &Conversation) -> Result<i64, DomainError> {
        self.store
            .last_seq(conversation)
            .await
            .map_err(|e| unavailable("last_seq", &e))
    }

    /// Up to `limit` messages after `seq`, ascending (catch-up).
    pub async fn after(
        &self,
        conversation: &Conversation,
        seq: i64,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, DomainError> {
        self.store
            .after(conversation, seq, limit)
            .await
            .map_err(|e| unavailable("after", &e))
    }

    /// Up to `limit` messages before `seq` (or the latest when `None`), ascending.
    pub async fn before(
        &self,
        conversation: &Conversation,
        seq: Option<i64>,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, DomainError> {
        match seq {
            Some(seq) => self
                .store
                .before(conversation, seq, limit)
                .await
                .map_err(|e| unavailable("before", &e)),
            None => self
                .store
                .latest(conversation, limit)
                .await
                .map_err(|e| unavailable("latest", &e)),
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
        self.store
            .create_room(RoomRecord {
                name: name.as_str().to_owned(),
                created_at_ms: now_ms,
                created_by: Some(creator.as_str().to_owned()),
            })
            .await
            .map_err(|e| unavailable("create_room", &e))
    }

    /// Whether `room` is recorded (e.g. created by another node sharing the store).
    pub async fn room_exists(&self, room: &RoomName) -> Result<bool, DomainError> {
        self.store
            .room_exists(room.as_str())
            .await
            .map_err(|e| unavailable("room_exists", &e))
    }

    /// Every room recorded so far, with its creator when known, read page by page.
    pub async fn rooms(&self) -> Result<Vec<(String, Option<UserId>)>, DomainError> {
        let mut rooms: Vec<(String, Option<UserId>)> = Vec::new();
        loop {
            let after = rooms
                .last()
                .map_or("", |(name, _)| name.as_str())
                .to_owned();
            let page = self
                .store
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
        self.store
            .message_by_client_id(conversation, author.as_str(), client_id)
            .await
            .map_err(|e| unavailable("message_by_client_id", &e))
    }

    /// Take `name` for `user` until `expires_at_ms`, in the store (which several nodes may
    /// share): refused as taken when someone else holds it at `now_ms`. The user's own claim
    /// is extended.
    pub async fn claim_name(
        &self,
        user: &UserId,
        name: &UserName,
        expires_at_ms: i64,
        now_ms: i64,
    ) -> Result<(), DomainError> {
        let claim = name_claim(user, name, expires_at_ms);
        match self.store.claim_name(claim, now_ms).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(name.taken()),
            Err(err) => Err(unavailable("claim_name", &err)),
        }
    }

    /// Extend the claims of present tutorial users on their names by
    /// [`session::TUTORIAL_NAME_TTL_MS`] from `now_ms`. Queued at once, so they share
    /// commits; a claim found lost is logged.
    pub async fn refresh_tutorial_names(&self, claims: &[(UserId, UserName)], now_ms: i64) {
        let expires_at_ms = now_ms.saturating_add(session::TUTORIAL_NAME_TTL_MS);
        // Spawned, so that they are queued at once (an unpolled claim is not queued).
        let mut refreshes = tokio::task::JoinSet::new();
        for (user, name) in claims {
            let store = Arc::clone(&self.store);
            let claim = name_claim(user, name, expires_at_ms);
            refreshes.spawn(async move { (store.claim_name(claim.clone(), now_ms).await, claim) });
        }
        while let Some(refreshed) = refreshes.join_next().await {
            match refreshed {
                Ok((Ok(true), _)) => {}
                Ok((Ok(false), claim)) => {
                    warn!(user = claim.user_id, "a present user's name claim was lost");
                }
                Ok((Err(err), _)) => warn!(%err, "refreshing a name claim failed"),
                Err(err) => warn!(%err, "refreshing a name claim failed"),
            }
        }
    }

    /// Give up `user`'s claim on `name` (a tutorial user who left). A failure is logged: the
    /// claim then lapses at its expiry.
    pub async fn release_name(&self, user: &UserId, name: &UserName) {
        let released = self
            .store
            .release_name(name.key().as_str().to_owned(), user.as_str().to_owned())
            .await;
        if let Err(err) = released {
            warn!(%err, "releasing a name failed");
        }
    }

    /// [`History::release_name`] for several users at once (queued together, so they share
    /// commits).
    pub async fn release_names(&self, claims: Vec<(UserId, UserName)>) {
        let mut releases = tokio::task::JoinSet::new();
        for (user, name) in claims {
            let store = Arc::clone(&self.store);
            releases.spawn(async move {
                store
                    .release_name(name.key().as_str().to_owned(), user.as_str().to_owned())
                    .await
            });
        }
        while let Some(released) = releases.join_next().await {
            if let Ok(Err(err)) = released {
                warn!(%err, "releasing a name failed");
            }
        }
    }

    /// The user id of the tutorial user of socket `socket` on this node: tutorial users live
    /// as long as their sockets, so ids name the node (see
    /// [`History::release_tutorial_names`]).
    pub fn tutorial_user(&self, socket: &str) -> UserId {
        UserId::new(format!("{}{socket}", self.tutorial_prefix()))
    }

    fn tutorial_prefix(&self) -> String {
        format!("t:{}:", self.node)
    }

    /// Give up the names this node's tutorial users held when it stopped (or crashed): they
    /// are gone with the process. Called as the server starts; a failure is logged (the
    /// claims then lapse after [`session::TUTORIAL_NAME_TTL_MS`]).
    pub async fn release_tutorial_names(&self) {
        let released = self
            .store
            .release_names_with_prefix(self.tutorial_prefix())
            .await;
        if let Err(err) = released {
            warn!(%err, "releasing the names of the last run's tutorial users failed");
        }
    }

    /// Remember that `token` belongs to `session` (extends its validity), and that its user
    /// holds its name until the session expires (a new user claims it first, with
    /// [`History::claim_name`]).
    pub async fn save_session(
        &self,
        token: &str,
        session: &Session,
        now_ms: i64,
    ) -> Result<(), DomainError> {
        let expires_at_ms = session::expires_at(now_ms);
        let name = UserName::parse(&session.name).map_err(|_| {
            DomainError::new(ErrorCode::InvalidName, "the session's name is invalid")
        })?;
        let name_key = name.key().as_str().to_owned();
        // The writes are queued at once, so they usually share one commit.
        let (claimed, saved_session, saved_user) = tokio::join!(
            self.store
                .claim_name(name_claim(&session.user, &name, expires_at_ms), now_ms),
            self.store.save_session(SessionRecord {
                token_hash: token_hash(token),
                user_id: session.user.as_str().to_owned(),
                name: session.name.clone(),
                expires_at_ms,
            }),
            self.store.save_user(UserRecord {
                user_id: session.user.as_str().to_owned(),
                name: session.name.clone(),
                name_key,
                expires_at_ms,
                online: true,
                node: self.node.clone(),
            })
        );
        saved_session.map_err(|e| unavailable("save_session", &e))?;
        saved_user.map_err(|e| unavailable("save_user", &e))?;
        // A returning user keeps its session even if someone else holds its name in the
        // store (two holders of one name from before names were claimed there).
        if !claimed.map_err(|e| unavailable("claim_name", &e))? {
            warn!(user = session.user.as_str(), %name, "a session's name is held by another user");
        }
        Ok(())
    }

    /// The session `token` belongs to, if it is known and not expired, and whether its
    /// expiry is due to be pushed back (see [`session::refresh_due`]).
    pub async fn session(
        &self,
        token: &str,
        now_ms: i64,
    ) -> Result<Option<(Session, bool)>, DomainError> {
        Ok(self
            .store
            .session(&token_hash(token), now_ms)
            .await
            .map_err(|e| unavailable("session", &e))?
            .map(|record| {
                let due = session::refresh_due(record.expires_at_ms, now_ms);
                let session = Session {
                    user: UserId::new(record.user_id),
                    name: record.name,
                };
                (session, due)
            }))
    }

    /// The user holding `name` at `now_ms` (a session that has not expired), if any. Without
    /// history, nobody: names are then held only while their users are present.
    pub async fn user_named(
        &self,
        name: &UserName,
        now_ms: i64,
    ) -> Result<Option<(UserId, UserName)>, DomainError> {
        Ok(self
            .store
            .user_named(name.key().as_str(), now_ms)
            .await
            .map_err(|e| unavailable("user_named", &e))?
            .and_then(|record| {
                let name = UserName::parse(&record.name).ok()?;
                Some((UserId::new(record.user_id), name))
            }))
    }

    /// The rooms `user` is a member of besides `general`, as stored.
    pub async fn user_rooms(&self, user: &UserId) -> Result<Vec<RoomName>, DomainError> {
        Ok(self
            .store
            .user_rooms(user.as_str())
            .await
            .map_err(|e| unavailable("user_rooms", &e))?
            .iter()
            .filter_map(|room| RoomName::parse(room).ok())
            .collect())
    }

    /// Record that `user` is a member of `room`; resolves once stored.
    pub async fn add_membership(
        &self,
        user: &UserId,
        room: &RoomName,
        now_ms: i64,
    ) -> Result<(), DomainError> {
        self.store
            .add_membership(MembershipRecord {
                user_id: user.as_str().to_owned(),
                room: room.as_str().to_owned(),
                joined_at_ms: now_ms,
            })
            .await
            .map(drop)
            .map_err(|e| unavailable("add_membership", &e))
    }

    /// Record that `user` left `room`; resolves once stored.
    pub async fn remove_membership(
        &self,
        user: &UserId,
        room: &RoomName,
    ) -> Result<(), DomainError> {
        self.store
            .remove_membership(user.as_str().to_owned(), room.as_str().to_owned())
            .await
            .map(drop)
            .map_err(|e| unavailable("remove_membership", &e))
    }

    /// Every user whose session has not expired at `now_ms`, with its stored rooms: what the
    /// community starts from after a restart. `online` only for the users this node had
    /// online.
    pub async fn live_members(&self, now_ms: i64) -> Result<Vec<StoredMember>, DomainError> {
        let users = self
            .store
            .live_users(now_ms)
            .await
            .map_err(|e| unavailable("live_users", &e))?;
        let memberships = self
            .store
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
                    // Online on another node: that node's, not ours to restore.
                    online: user.online && user.node == self.node,
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
        self.store
            .save_recovery(RecoveryRecord {
                pid: pid.to_owned(),
                user_id: user.as_str().to_owned(),
                state,
                expires_at_ms,
            })
            .await
            .map_err(|e| unavailable("save_recovery", &e))
    }

    /// What `pid` resumes (its user, state and expiry), unless unknown or expired.
    pub async fn recovery(
        &self,
        pid: &str,
        now_ms: i64,
    ) -> Result<Option<(UserId, String, i64)>, DomainError> {
        Ok(self
            .store
            .recovery(pid, now_ms)
            .await
            .map_err(|e| unavailable("recovery", &e))?
            .map(|record| {
                (
                    UserId::new(record.user_id),
                    record.state,
                    record.expires_at_ms,
                )
            }))
    }

    /// Record that these users left this node, so a restart does not count them as online
    /// (a user recorded online by another node since stays so). A failure is logged: at
    /// worst they are listed online for a while after a restart.
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
        let ids = users
            .into_iter()
            .map(|user| user.as_str().to_owned())
            .collect();
        if let Err(err) = self.store.set_online(ids, online, self.node.clone()).await {
            warn!(%err, online, "recording who is online failed");
        }
    }

    /// Forget a session and its user, created for a connection that closed before it could
    /// learn its token (nobody can ever use either, and the user would hold its name).
    pub async fn forget_user(&self, token: &str, user: &UserId) {
        let (session, user) = tokio::join!(
            self.store.delete_session(token_hash(token)),
            self.store.delete_user(user.as_str().to_owned())
        );
        if let Err(err) = session.and(user) {
            error!(%err, "forgetting an unreachable session failed");
        }
    }

    /// Forget sessions and recovery records that have expired.
    pub async fn purge_expired(&self, now_ms: i64) {
        if let Err(err) = self.store.purge_expired(now_ms).await {
            error!(%err, "purging expired sessions failed");
        }
    }

    /// The store's writer counters; `None` without history.
    pub fn writer_stats(&self) -> Option<Arc<super::stats::WriterStats>> {
        self.store.writer_stats()
    }

    /// Flush and close the store (part of shutdown).
    pub async fn close(&self) {
        self.store.close().await;
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
