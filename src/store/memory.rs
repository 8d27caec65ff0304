//! The in-memory store: the same trait and guarantees as the SQL stores, nothing on disk, and
//! every collection bounded by [`MemoryLimits`]. `--no-history` runs on it (with
//! [`MemoryLimits::no_history`]); tests use it where a database would only cost time.
//!
//! "Durable" here means "until the process ends": a write resolves at once, and every handle
//! opened with [`MemoryStore::open_again`] sees the same data (as processes sharing one
//! database would). When a bound is reached the store forgets rather than grows: the oldest
//! messages of a conversation, an arbitrary session or recovery record, the user whose name
//! is freed soonest; rooms and memberships beyond their bound are not recorded.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::writer::{check_append, message_id, reject_nul};
use super::{
    Appended, Conversation, ConversationSummary, HistoryStore, MAX_DIRECT_LISTED,
    MAX_MEMBERSHIPS_LISTED, MAX_ROOMS_LISTED, MAX_ROOMS_PER_USER_LISTED, MAX_USERS_LISTED,
    MembershipRecord, NameClaim, NewMessage, PendingAppend, RecoveryRecord, RoomRecord,
    SessionRecord, StoreError, StoreFuture, StoredMessage, UserRecord, page_limit, stats,
};

/// How much an in-memory store keeps. Sequence counters are kept for every conversation (a
/// forgotten counter would number a conversation from 1 again).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryLimits {
    /// The newest messages kept per conversation; older ones are no longer read nor
    /// recognised as resends. 0 keeps none: no scrollback.
    pub messages_per_conversation: usize,
    /// The most conversations whose messages are kept; one more loses the messages of an
    /// arbitrary other.
    pub conversations: usize,
    pub sessions: usize,
    pub recoveries: usize,
    /// The most users, and the most name claims; 0 keeps none, so nobody holds a name beyond
    /// its connections (every claim then succeeds: one process alone checks its names).
    pub users: usize,
    pub rooms: usize,
    pub memberships: usize,
}

impl MemoryLimits {
    /// What `--no-history` keeps: sequences and sessions only. No scrollback, names held only
    /// while their users are present, no recovery records.
    pub fn no_history() -> Self {
        Self {
            messages_per_conversation: 0,
            conversations: 0,
            sessions: 100_000,
            recoveries: 0,
            users: 0,
            rooms: 0,
            memberships: 0,
        }
    }
}

impl Default for MemoryLimits {
    /// Enough for tests and small servers: every read the SQL stores answer is answered alike.
    fn default() -> Self {
        Self {
            messages_per_conversation: 10_000,
            conversations: 1_000,
            sessions: 100_000,
            recoveries: 100_000,
            users: MAX_USERS_LISTED as usize,
            rooms: MAX_ROOMS_LISTED as usize,
            memberships: 1_000_000,
        }
    }
}

/// History in memory (see the module docs).
pub struct MemoryStore {
    data: Arc<Mutex<Data>>,
    /// This handle was closed; other handles on the same data stay open.
    closed: AtomicBool,
}

impl MemoryStore {
    /// An empty store keeping at most `limits`.
    pub fn new(limits: MemoryLimits) -> Self {
        Self {
            data: Arc::new(Mutex::new(Data {
                limits,
                logs: HashMap::new(),
                sessions: HashMap::new(),
                recoveries: HashMap::new(),
                users: HashMap::new(),
                names: HashMap::new(),
                rooms: BTreeMap::new(),
                memberships: BTreeMap::new(),
            })),
            closed: AtomicBool::new(false),
        }
    }

    /// Another open handle on the same data: what opening the same database again is for
    /// the SQL stores (a restart, or a second node).
    pub fn open_again(&self) -> Self {
        Self {
            data: Arc::clone(&self.data),
            closed: AtomicBool::new(false),
        }
    }

    fn data(&self) -> Result<MutexGuard<'_, Data>, StoreError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        Ok(self.data.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Runs `f` on the data; the store's answer, as a future.
    fn with<'a, T: Send + 'a>(
        &'a self,
        f: impl FnOnce(&mut Data) -> Result<T, StoreError>,
    ) -> StoreFuture<'a, T> {
        let result = self.data().and_then(|mut data| f(&mut data));
        Box::pin(std::future::ready(result))
    }
}

/// The messages of one conversation.
#[derive(Default)]
struct Log {
    last_seq: i64,
    /// The newest messages, ascending and consecutive by sequence.
    messages: VecDeque<StoredMessage>,
    /// `(author id, client id)` → sequence, for the messages kept.
    by_client_id: HashMap<(String, String), i64>,
}

impl Log {
    fn by_client_id(&self, author_id: &str, client_id: &str) -> Option<&StoredMessage> {
        let seq = self
            .by_client_id
            .get(&(author_id.to_owned(), client_id.to_owned()))?;
        let first = self.messages.front()?.seq;
        self.messages.get(usize::try_from(seq - first).ok()?)
    }

    fn forget_messages(&mut self) {
        self.messages.clear();
        self.by_client_id.clear();
    }
}

struct Data {
    limits: MemoryLimits,
    logs: HashMap<Conversation, Log>,
    sessions: HashMap<String, SessionRecord>,
    recoveries: HashMap<String, RecoveryRecord>,
    users: HashMap<String, UserRecord>,
    /// Name key → (holder's user id, expiry).
    names: HashMap<String, (String, i64)>,
    rooms: BTreeMap<String, RoomRecord>,
    /// `(user id, room)` → joined at.
    memberships: BTreeMap<(String, String), i64>,
}

impl Data {
    fn append(&mut self, message: NewMessage) -> Appended {
        let keep = if self.limits.conversations == 0 {
            0
        } else {
            self.limits.messages_per_conversation
        };
        let has_messages = self
            .logs
            .get(&message.conversation)
            .is_some_and(|log| !log.messages.is_empty());
        if keep > 0 && !has_messages {
            self.make_room_for_a_conversation(&message.conversation);
        }
        let log = self.logs.entry(message.conversation.clone()).or_default();
        if let Some(client_id) = &message.client_id
            && let Some(original) = log.by_client_id(&message.author.user_id, client_id)
        {
            return Appended {
                message: original.clone(),
                duplicate: true,
            };
        }
        log.last_seq += 1;
        let stored = StoredMessage {
            id: message_id(message.sent_at_ms),
            conversation: message.conversation,
            seq: log.last_seq,
            author: message.author,
            body: message.body,
            client_id: message.client_id,
            timestamp_ms: message.sent_at_ms,
        };
        if keep > 0 {
            if log.messages.len() >= keep
                && let Some(oldest) = log.messages.pop_front()
                && let Some(client_id) = oldest.client_id
            {
                log.by_client_id.remove(&(oldest.author.user_id, client_id));
            }
            if let Some(client_id) = &stored.client_id {
                log.by_client_id.insert(
                    (stored.author.user_id.clone(), client_id.clone()),
                    stored.seq,
                );
            }
            log.messages.push_back(stored.clone());
        }
        Appended {
            message: stored,
            duplicate: false,
        }
    }

    /// Before a conversation's first kept message: at the bound, another loses its messages.
    fn make_room_for_a_conversation(&mut self, newcomer: &Conversation) {
        let others = |(conversation, log): &(&Conversation, &Log)| {
            *conversation != newcomer && !log.messages.is_empty()
        };
        if self.logs.iter().filter(others).count() < self.limits.conversations {
            return;
        }
        if let Some((_, log)) = self
            .logs
            .iter_mut()
            .find(|(conversation, log)| *conversation != newcomer && !log.messages.is_empty())
        {
            log.forget_messages();
        }
    }

    fn messages(
        &self,
        conversation: &Conversation,
        keep: impl Fn(i64) -> bool,
        limit: u32,
        newest: bool,
    ) -> Vec<StoredMessage> {
        let Some(log) = self.logs.get(conversation) else {
            return Vec::new();
        };
        let limit = usize::try_from(page_limit(limit)).unwrap_or(0);
        let matching = log.messages.iter().filter(|message| keep(message.seq));
        if newest {
            let mut page: Vec<_> = matching.rev().take(limit).cloned().collect();
            page.reverse();
            page
        } else {
            matching.take(limit).cloned().collect()
        }
    }

    fn add_membership(&mut self, membership: MembershipRecord) -> bool {
        let key = (membership.user_id, membership.room);
        if self.memberships.contains_key(&key) {
            return false;
        }
        if self.memberships.len() < self.limits.memberships {
            self.memberships.insert(key, membership.joined_at_ms);
        }
        true
    }

    fn claim_name(&mut self, claim: NameClaim, now_ms: i64) -> bool {
        if self.limits.users == 0 {
            return true;
        }
        if let Some((holder, expires_at_ms)) = self.names.get_mut(&claim.name_key) {
            if *holder == claim.user_id {
                *expires_at_ms = (*expires_at_ms).max(claim.expires_at_ms);
                return true;
            }
            if *expires_at_ms > now_ms {
                return false;
            }
        } else if self.names.len() >= self.limits.users {
            // Full: the expired claims go, else the one lapsing soonest.
            self.names
                .retain(|_, (_, expires_at_ms)| *expires_at_ms > now_ms);
            if self.names.len() >= self.limits.users
                && let Some(soonest) = self
                    .names
                    .iter()
                    .min_by_key(|(_, (_, expires_at_ms))| *expires_at_ms)
                    .map(|(key, _)| key.clone())
            {
                self.names.remove(&soonest);
            }
        }
        self.names
            .insert(claim.name_key, (claim.user_id, claim.expires_at_ms));
        true
    }

    fn remove_memberships_of(&mut self, user_id: &str) {
        self.memberships.retain(|(user, _), _| user != user_id);
    }

    fn live(&self, user_id: &str, now_ms: i64) -> bool {
        self.users
            .get(user_id)
            .is_some_and(|user| user.expires_at_ms > now_ms)
    }
}

/// Inserts into a bounded map, forgetting an arbitrary entry when it is full.
fn insert_bounded<V>(map: &mut HashMap<String, V>, bound: usize, key: String, value: V) {
    if bound == 0 {
        return;
    }
    if map.len() >= bound
        && !map.contains_key(&key)
        && let Some(evicted) = map.keys().next().cloned()
    {
        map.remove(&evicted);
    }
    map.insert(key, value);
}

impl HistoryStore for MemoryStore {
    fn append(&self, message: NewMessage) -> StoreFuture<'_, Appended> {
        self.with(|data| {
            check_append(&message)?;
            Ok(data.append(message))
        })
    }

    fn append_queued(&self, message: NewMessage) -> StoreFuture<'_, PendingAppend> {
        // Stored before this resolves, so queued order is sequence order.
        self.with(|data| {
            check_append(&message)?;
            let appended = data.append(message);
            let pending: PendingAppend = Box::pin(std::future::ready(Ok(appended)));
            Ok(pending)
        })
    }

    fn latest<'a>(
        &'a self,
        conversation: &'a Conversation,
        limit: u32,
    ) -> StoreFuture<'a, Vec<StoredMessage>> {
        self.with(|data| Ok(data.messages(conversation, |_| true, limit, true)))
    }

    fn before<'a>(
        &'a self,
        conversation: &'a Conversation,
        seq: i64,
        limit: u32,
    ) -> StoreFuture<'a, Vec<StoredMessage>> {
        self.with(move |data| Ok(data.messages(conversation, |s| s < seq, limit, true)))
    }

    fn after<'a>(
        &'a self,
        conversation: &'a Conversation,
        seq: i64,
        limit: u32,
    ) -> StoreFuture<'a, Vec<StoredMessage>> {
        self.with(move |data| Ok(data.messages(conversation, |s| s > seq, limit, false)))
    }

    fn message_by_client_id<'a>(
        &'a self,
        conversation: &'a Conversation,
        author_id: &'a str,
        client_id: &'a str,
    ) -> StoreFuture<'a, Option<StoredMessage>> {
        self.with(|data| {
            Ok(data
                .logs
                .get(conversation)
                .and_then(|log| log.by_client_id(author_id, client_id))
                .cloned())
        })
    }

    fn last_seq<'a>(&'a self, conversation: &'a Conversation) -> StoreFuture<'a, i64> {
        self.with(|data| Ok(data.logs.get(conversation).map_or(0, |log| log.last_seq)))
    }

    fn direct_conversations<'a>(
        &'a self,
        user_id: &'a str,
    ) -> StoreFuture<'a, Vec<ConversationSummary>> {
        self.with(|data| {
            let mut found: Vec<(String, ConversationSummary)> = data
                .logs
                .iter()
                .filter(|(conversation, log)| {
                    log.last_seq > 0
                        && conversation
                            .as_direct()
                            .is_some_and(|(a, b)| a == user_id || b == user_id)
                })
                .map(|(conversation, log)| {
                    let summary = ConversationSummary {
                        conversation: conversation.clone(),
                        last_seq: log.last_seq,
                    };
                    (conversation.storage_key(), summary)
                })
                .collect();
            found.sort_by(|a, b| a.0.cmp(&b.0));
            found.truncate(MAX_DIRECT_LISTED as usize);
            Ok(found.into_iter().map(|(_, summary)| summary).collect())
        })
    }

    fn create_room(&self, room: RoomRecord) -> StoreFuture<'_, bool> {
        self.with(|data| {
            reject_nul(&[&room.name, room.created_by.as_deref().unwrap_or_default()])?;
            if data.rooms.contains_key(&room.name) {
                return Ok(false);
            }
            if data.rooms.len() < data.limits.rooms {
                if let Some(creator) = &room.created_by {
                    data.add_membership(MembershipRecord {
                        user_id: creator.clone(),
                        room: room.name.clone(),
                        joined_at_ms: room.created_at_ms,
                    });
                }
                data.rooms.insert(room.name.clone(), room);
            }
            Ok(true)
        })
    }

    fn list_rooms<'a>(&'a self, after: &'a str, limit: u32) -> StoreFuture<'a, Vec<RoomRecord>> {
        self.with(|data| {
            let limit = limit.min(MAX_ROOMS_LISTED) as usize;
            Ok(data
                .rooms
                .range::<str, _>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded))
                .take(limit)
                .map(|(_, room)| room.clone())
                .collect())
        })
    }

    fn room_exists<'a>(&'a self, name: &'a str) -> StoreFuture<'a, bool> {
        self.with(|data| Ok(data.rooms.contains_key(name)))
    }

    fn save_session(&self, session: SessionRecord) -> StoreFuture<'_, ()> {
        self.with(|data| {
            reject_nul(&[&session.token_hash, &session.user_id, &session.name])?;
            let bound = data.limits.sessions;
            insert_bounded(
                &mut data.sessions,
                bound,
                session.token_hash.clone(),
                session,
            );
            Ok(())
        })
    }

    fn session<'a>(
        &'a self,
        token_hash: &'a str,
        now_ms: i64,
    ) -> StoreFuture<'a, Option<SessionRecord>> {
        self.with(|data| {
            Ok(data
                .sessions
                .get(token_hash)
                .filter(|session| session.expires_at_ms > now_ms)
                .cloned())
        })
    }

    fn delete_session(&self, token_hash: String) -> StoreFuture<'_, bool> {
        self.with(move |data| Ok(data.sessions.remove(&token_hash).is_some()))
    }

    fn save_recovery(&self, recovery: RecoveryRecord) -> StoreFuture<'_, ()> {
        self.with(|data| {
            reject_nul(&[&recovery.pid, &recovery.user_id, &recovery.state])?;
            let bound = data.limits.recoveries;
            insert_bounded(&mut data.recoveries, bound, recovery.pid.clone(), recovery);
            Ok(())
        })
    }

    fn recovery<'a>(
        &'a self,
        pid: &'a str,
        now_ms: i64,
    ) -> StoreFuture<'a, Option<RecoveryRecord>> {
        self.with(|data| {
            Ok(data
                .recoveries
                .get(pid)
                .filter(|recovery| recovery.expires_at_ms > now_ms)
                .cloned())
        })
    }

    fn delete_recovery(&self, pid: String) -> StoreFuture<'_, bool> {
        self.with(move |data| Ok(data.recoveries.remove(&pid).is_some()))
    }

    fn save_user(&self, user: UserRecord) -> StoreFuture<'_, ()> {
        self.with(|data| {
            reject_nul(&[&user.user_id, &user.name, &user.name_key])?;
            if let Some(stored) = data.users.get_mut(&user.user_id) {
                stored.expires_at_ms = stored.expires_at_ms.max(user.expires_at_ms);
                stored.name = user.name;
                stored.name_key = user.name_key;
                stored.online = user.online;
                stored.node = user.node;
                return Ok(());
            }
            if data.limits.users == 0 {
                return Ok(());
            }
            if data.users.len() >= data.limits.users
                && let Some(soonest) = data
                    .users
                    .values()
                    .min_by_key(|user| user.expires_at_ms)
                    .map(|user| user.user_id.clone())
            {
                data.users.remove(&soonest);
                data.remove_memberships_of(&soonest);
            }
            data.users.insert(user.user_id.clone(), user);
            Ok(())
        })
    }

    fn user_named<'a>(
        &'a self,
        name_key: &'a str,
        now_ms: i64,
    ) -> StoreFuture<'a, Option<UserRecord>> {
        self.with(|data| {
            Ok(data
                .users
                .values()
                .filter(|user| user.name_key == name_key && user.expires_at_ms > now_ms)
                .max_by_key(|user| user.expires_at_ms)
                .cloned())
        })
    }

    fn live_users(&self, now_ms: i64) -> StoreFuture<'_, Vec<UserRecord>> {
        self.with(|data| {
            let mut users: Vec<UserRecord> = data
                .users
                .values()
                .filter(|user| user.expires_at_ms > now_ms)
                .cloned()
                .collect();
            users.sort_by_key(|user| std::cmp::Reverse(user.expires_at_ms));
            users.truncate(MAX_USERS_LISTED as usize);
            Ok(users)
        })
    }

    fn claim_name(&self, claim: NameClaim, now_ms: i64) -> StoreFuture<'_, bool> {
        self.with(move |data| {
            reject_nul(&[&claim.name_key, &claim.user_id])?;
            Ok(data.claim_name(claim, now_ms))
        })
    }

    fn release_name(&self, name_key: String, user_id: String) -> StoreFuture<'_, bool> {
        self.with(move |data| {
            let held = data
                .names
                .get(&name_key)
                .is_some_and(|(holder, _)| *holder == user_id);
            if held {
                data.names.remove(&name_key);
            }
            Ok(held)
        })
    }

    fn delete_user(&self, user_id: String) -> StoreFuture<'_, bool> {
        self.with(move |data| {
            data.names.retain(|_, (holder, _)| *holder != user_id);
            data.remove_memberships_of(&user_id);
            Ok(data.users.remove(&user_id).is_some())
        })
    }

    fn set_online(&self, user_ids: Vec<String>, online: bool, node: String) -> StoreFuture<'_, ()> {
        self.with(move |data| {
            for user_id in user_ids {
                if let Some(user) = data.users.get_mut(&user_id) {
                    // Offline only where this node recorded it online (as the SQL stores).
                    if online {
                        user.online = true;
                        user.node.clone_from(&node);
                    } else if user.node == node {
                        user.online = false;
                    }
                }
            }
            Ok(())
        })
    }

    fn add_membership(&self, membership: MembershipRecord) -> StoreFuture<'_, bool> {
        self.with(|data| {
            reject_nul(&[&membership.user_id, &membership.room])?;
            Ok(data.add_membership(membership))
        })
    }

    fn remove_membership(&self, user_id: String, room: String) -> StoreFuture<'_, bool> {
        self.with(move |data| Ok(data.memberships.remove(&(user_id, room)).is_some()))
    }

    fn user_rooms<'a>(&'a self, user_id: &'a str) -> StoreFuture<'a, Vec<String>> {
        self.with(|data| {
            Ok(data
                .memberships
                .keys()
                .filter(|(user, _)| user == user_id)
                .take(MAX_ROOMS_PER_USER_LISTED as usize)
                .map(|(_, room)| room.clone())
                .collect())
        })
    }

    fn live_memberships(&self, now_ms: i64) -> StoreFuture<'_, Vec<MembershipRecord>> {
        self.with(|data| {
            Ok(data
                .memberships
                .iter()
                .filter(|((user, _), _)| data.live(user, now_ms))
                .take(MAX_MEMBERSHIPS_LISTED as usize)
                .map(|((user_id, room), joined_at_ms)| MembershipRecord {
                    user_id: user_id.clone(),
                    room: room.clone(),
                    joined_at_ms: *joined_at_ms,
                })
                .collect())
        })
    }

    fn purge_expired(&self, now_ms: i64) -> StoreFuture<'_, u64> {
        self.with(|data| {
            let before = data.sessions.len() + data.recoveries.len() + data.users.len();
            data.sessions
                .retain(|_, session| session.expires_at_ms > now_ms);
            data.recoveries
                .retain(|_, recovery| recovery.expires_at_ms > now_ms);
            data.names
                .retain(|_, (_, expires_at_ms)| *expires_at_ms > now_ms);
            let expired: Vec<String> = data
                .users
                .values()
                .filter(|user| user.expires_at_ms <= now_ms)
                .map(|user| user.user_id.clone())
                .collect();
            for user_id in &expired {
                data.users.remove(user_id);
                data.remove_memberships_of(user_id);
            }
            let after = data.sessions.len() + data.recoveries.len() + data.users.len();
            Ok((before - after) as u64)
        })
    }

    fn writer_stats(&self) -> Option<Arc<stats::WriterStats>> {
        None
    }

    fn close(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        self.closed.store(true, Ordering::Release);
        Box::pin(std::future::ready(()))
    }
}
