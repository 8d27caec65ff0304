//! The socket layer: chat event handlers over the engine.
//!
//! Handlers are thin: they pick the arguments out of an event, call the domain
//! ([`Community`]), store what must be stored ([`History`], from [`crate::store`]), and deliver the notices the
//! domain returns. The rules live in [`crate::domain`].
//!
//! # Layout
//! - this file: [`Chat`] (shared state) and [`ChatHandler`], the engine [`Handler`] of
//!   namespace `/`, with every event registered in one `match`.
//! - [`tutorial`]: the classic tutorial's protocol (`addUser`/`sendChat` in, `updateChat`/
//!   `updateUsers` out, camelCase or lowercase).
//! - [`full`]: the full protocol of PROTOCOL.md section 2 (identity, rooms, history, DMs).
//! - [`identity`]: who a connecting client is (a session token or a free name), one
//!   [`identity::claim_identity`] for both protocols.
//! - [`deliver`]: notices → emits, and the engine rooms that make that cheap.
//! - [`presence`]: the opt-in to every user's presence.
//! - [`recovery`]: Socket.IO connection-state recovery backed by the durable history.
//! - [`wire`]: every request and message shape on the wire; a leaf the others import.

pub mod deliver;
pub mod full;
pub mod identity;
pub mod presence;
pub mod recovery;
pub mod tutorial;
pub mod wire;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use engine::{ConnectError, DisconnectReason, Event, Handler, Socket, SocketId, SocketIo};
use serde_json::Value;
use tracing::debug;

use crate::domain::{
    Community, DomainError, Draft, InOrder, Limits, Message, Outgoing, Protocol, QuotaLimits,
    Quotas, RateLimit, RoomName, Tail, UserId,
};
use crate::store::Conversation;
use crate::store::history::{self, History};
use wire::{Spelling, WireMessage};

/// Longest a stored message waits for a predecessor before it is delivered anyway.
const MAX_ORDER_WAIT_MS: u64 = 2_000;

/// Expired sessions and recovery records are purged every this many sweeps (a minute).
const PURGE_EVERY_TICKS: u64 = 120;

/// How often users whose grace period has run out are announced as gone.
const SWEEP_EVERY: Duration = Duration::from_millis(500);

/// Most rooms whose latest messages are kept in memory (see [`Tail`]). A tail's messages are
/// JSON values, a few times their estimated size: at most about
/// `MAX_TAILS` × 4 × [`crate::domain::tail::TAIL_BYTES`] = 32 MiB.
const MAX_TAILS: usize = 256;

/// What one sweep found, for the history.
struct Swept {
    /// Sessions (token, user) nobody can ever use.
    unreachable: Vec<(String, UserId)>,
    /// Users whose grace period ended.
    departed: Vec<UserId>,
}

/// State shared by every socket of the chat.
pub struct Chat {
    /// Users, sockets and rooms. A std `Mutex`: every critical section is short and
    /// synchronous (domain call + non-blocking emits), never held across an `.await`.
    /// Emitting while holding it is deliberate: every client then sees arrivals, departures
    /// and messages in one and the same order. The one large payload, the tutorial's user
    /// list, is only queued under it (see [`deliver::UsersOutbox`]); it is encoded and sent
    /// after, so a burst of departures does not stop every other thread.
    community: Mutex<Community<SocketId>>,
    /// Messages and sessions.
    pub history: History,
    /// The engine, for broadcasts; set once right after it is built (it owns our handler).
    io: OnceLock<SocketIo>,
    /// Sockets registered during `on_connect`, with the time, until the sweeper has seen
    /// them in the engine. A socket the engine never confirmed (its connection closed while
    /// `on_connect` ran) is removed here; one whose `session` could not be sent and that
    /// created its user takes the user with it (see [`Chat::forget_if_unconfirmed`]).
    unconfirmed: Mutex<HashMap<SocketId, Unconfirmed>>,
    /// Room and new-user quotas. Lock order: `community`, then this.
    quotas: Mutex<Quotas>,
    /// Per conversation, the messages stored but not yet delivered because a predecessor
    /// is still on its way. Locked only while `community` is held (lock order: community,
    /// then this).
    order: Mutex<HashMap<Conversation, InOrder<Message>>>,
    /// The latest messages of up to [`MAX_TAILS`] rooms, for catch-up without reading the
    /// history. Lock order: community, then `order`, then this.
    tails: Mutex<HashMap<Conversation, Tail<Value>>>,
    /// Socket.IO connection-state recovery is on: room messages carry an offset.
    pub(crate) recovery: bool,
    /// Shutting down: nobody is swept any more, so the users connected at the stop stay
    /// recorded as online however long the shutdown takes.
    closing: AtomicBool,
    /// The tutorial's next user list, sent by one task outside the community lock.
    users_out: Arc<deliver::UsersOutbox>,
}

impl Chat {
    pub fn new(limits: Limits, quotas: QuotaLimits, history: History, recovery: bool) -> Self {
        Self {
            community: Mutex::new(Community::new(limits)),
            history,
            io: OnceLock::new(),
            unconfirmed: Mutex::new(HashMap::new()),
            quotas: Mutex::new(Quotas::new(quotas)),
            order: Mutex::new(HashMap::new()),
            tails: Mutex::new(HashMap::new()),
            recovery,
            closing: AtomicBool::new(false),
            users_out: Arc::default(),
        }
    }

    /// Hand over the engine once built, and start announcing users whose grace period ends.
    pub fn start(self: &Arc<Self>, io: SocketIo) {
        let _ = self.io.set(io);
        // The tutorial's user lists: encoded and sent here, never under the community lock.
        let users_out = Arc::clone(&self.users_out);
        let chat: Weak<Chat> = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let names = users_out.next().await;
                let Some(chat) = chat.upgrade() else { return };
                if let Some(io) = chat.io() {
                    deliver::send_users(io, &names);
                }
            }
        });
        let chat: Weak<Chat> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut ticks: u64 = 0;
            loop {
                tick.tick().await;
                let Some(chat) = chat.upgrade() else { return };
                if chat.closing.load(Ordering::Relaxed) {
                    continue;
                }
                let swept = chat.sweep();
                // Queued first, so that a user back right after its departure most likely
                // saves `online` after this write (best effort; a wrong flag only changes who
                // is restored present after the next restart).
                chat.history.mark_offline(swept.departed).await;
                for (token, user) in swept.unreachable {
                    chat.history.forget_user(&token, &user).await;
                }
                ticks += 1;
                if ticks.is_multiple_of(PURGE_EVERY_TICKS) {
                    chat.quotas().forget_idle(now_ms_u64());
                    chat.history.purge_expired(now_ms()).await;
                }
            }
        });
    }

    /// The server is shutting down: stop announcing and recording departures. Returns the
    /// users whose connections had dropped before (they were leaving).
    pub fn begin_shutdown(&self) -> Vec<UserId> {
        let community = self.community();
        self.closing.store(true, Ordering::Relaxed);
        community.users_in_grace()
    }

    /// Lock the community. The domain validates before it mutates, so a panic while the lock
    /// was held cannot leave it half-updated: a poisoned lock is still safe to use.
    pub(crate) fn community(&self) -> MutexGuard<'_, Community<SocketId>> {
        self.community
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn io(&self) -> Option<&SocketIo> {
        self.io.get()
    }

    /// Lock the quotas (after `community` when both are needed).
    pub(crate) fn quotas(&self) -> MutexGuard<'_, Quotas> {
        self.quotas.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Count one message from `socket` against its rate limit.
    pub(crate) fn take_message_token(
        &self,
        socket: &Socket<Connection>,
    ) -> Result<(), DomainError> {
        let per_second = self.community().limits().messages_per_second;
        socket.data().take_message_token(per_second)
    }

    /// Number of users present.
    pub fn user_count(&self) -> usize {
        self.community().user_count()
    }

    /// Before storing the first message of a conversation in this process (or reading a
    /// room's latest messages): learn what was delivered before, so its messages can be
    /// released in sequence order, and start the room's tail there.
    pub(crate) async fn prime(&self, conversation: &Conversation) -> Result<(), DomainError> {
        {
            let order = self.order_lock();
            if let Some(state) = order.get(conversation) {
                self.start_tail(conversation, state.released());
                return Ok(());
            }
        }
        let last = self.history.last_seq(conversation).await?;
        let order = &mut *self.order_lock();
        let released = order
            .entry(conversation.clone())
            .or_insert_with(|| InOrder::after(last))
            .released();
        self.start_tail(conversation, released);
        Ok(())
    }

    /// Give a room a tail, if it has none, starting after `released`. Called with the
    /// `order` lock held, so no message of the room is released in between: a tail never
    /// claims a message it was not given. A full set of tails loses an arbitrary one (that
    /// room reads the history until it is primed again).
    fn start_tail(&self, conversation: &Conversation, released: i64) {
        if conversation.as_room().is_none() {
            return;
        }
        let mut tails = self.tails_lock();
        if tails.contains_key(conversation) {
            return;
        }
        if tails.len() >= MAX_TAILS
            && let Some(evicted) = tails.keys().next().cloned()
        {
            tails.remove(&evicted);
        }
        tails.insert(conversation.clone(), Tail::after(released));
    }

    /// Up to `limit` messages of `conversation` after `since` (wire form and estimated
    /// size), from memory; `None` if memory does not reach back that far.
    pub(crate) fn recent_after(
        &self,
        conversation: &Conversation,
        since: i64,
        limit: u32,
    ) -> Option<Vec<(Value, usize)>> {
        let tails = self.tails_lock();
        let recent = tails.get(conversation)?.after_seq(since, limit as usize)?;
        Some(
            recent
                .into_iter()
                .map(|(json, size)| (json.clone(), size))
                .collect(),
        )
    }

    fn tails_lock(&self) -> MutexGuard<'_, HashMap<Conversation, Tail<Value>>> {
        self.tails.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queue a validated message for storing (see [`History::append_queued`]).
    pub(crate) async fn enqueue(
        &self,
        draft: Draft,
        client_id: Option<String>,
    ) -> Result<history::PendingMessage, DomainError> {
        self.prime(&history::conversation_of(&draft.place)).await?;
        self.history.append_queued(draft, client_id, now_ms()).await
    }

    /// Pipeline a message of `socket`: wait for room among its messages in flight, queue it
    /// for storing, and return; a task then waits for the commit and for the socket's
    /// previous message to be finished, and calls `finish` (ack, deliver). So one socket
    /// may have many messages in one group commit, and its acks and deliveries still come
    /// in the order it sent them. `on_disconnect` waits for the last one (see
    /// [`Connection::wait_for_pipeline`]).
    pub(crate) async fn pipeline<F>(
        self: &Arc<Self>,
        socket: &Socket<Connection>,
        draft: Draft,
        client_id: Option<String>,
        finish: F,
    ) where
        F: FnOnce(&Chat, Result<(Message, bool), DomainError>) + Send + 'static,
    {
        let in_flight = Arc::clone(&socket.data().in_flight);
        // The semaphore is never closed, so this only fails if it were: then go unbounded.
        let permit = in_flight.acquire_owned().await.ok();
        let pending = self.enqueue(draft, client_id).await;
        let (done, finished) = tokio::sync::oneshot::channel::<()>();
        let previous = socket.data().chain(finished);
        let chat = Arc::clone(self);
        tokio::spawn(async move {
            let result = match pending {
                Ok(pending) => pending.await,
                Err(error) => Err(error),
            };
            if let Some(previous) = previous {
                let _ = previous.await;
            }
            finish(&chat, result);
            drop(permit);
            let _ = done.send(());
        });
    }

    /// Deliver a stored message to everyone who should see it, after its predecessors.
    pub(crate) fn post(&self, message: Message) {
        let community = self.community();
        let conversation = history::conversation_of(&message.place);
        let seq = message.seq;
        let ready = self
            .order_lock()
            .entry(conversation)
            .or_insert_with(|| InOrder::after(seq - 1))
            .accept(seq, message, now_ms_u64());
        self.deliver_messages(&community, ready);
    }

    fn deliver_messages(&self, community: &Community<SocketId>, messages: Vec<Message>) {
        if messages.is_empty() {
            return;
        }
        {
            let mut tails = self.tails_lock();
            for message in &messages {
                if let Some(tail) = tails.get_mut(&history::conversation_of(&message.place)) {
                    let size = wire::message_size(
                        &message.text,
                        message.from.as_str(),
                        message.client_id.as_deref(),
                    );
                    tail.push(
                        message.seq,
                        WireMessage::live(message, None).to_value(),
                        size,
                    );
                }
            }
        }
        for message in messages {
            let notices = community.posted(message);
            self.deliver(community, None, &notices);
        }
    }

    /// Deliver notices (see [`deliver::deliver`]); call with the community locked.
    pub(crate) fn deliver(
        &self,
        community: &Community<SocketId>,
        actor: Option<&Socket<Connection>>,
        notices: &[Outgoing<SocketId>],
    ) {
        if let Some(io) = self.io() {
            let position = || self.general_position();
            deliver::deliver(
                io,
                community,
                actor,
                notices,
                self.recovery.then_some(&position as &dyn Fn() -> String),
                &self.users_out,
            );
        }
    }

    /// Where `general`'s stream stands, as a recovery offset (`seq:ts:general`): carried
    /// by tutorial notices that are no stored message, so a client resuming from one gets
    /// every message after what it had seen. Lock order: community, then order.
    pub(crate) fn general_position(&self) -> String {
        let released = self.released(&history::general_conversation()).unwrap_or(0);
        format!("{released}:{}:{}", now_ms(), RoomName::general().as_str())
    }

    /// The highest sequence of `conversation` broadcast by this process, if any.
    pub(crate) fn released(&self, conversation: &Conversation) -> Option<i64> {
        self.order_lock().get(conversation).map(InOrder::released)
    }

    fn order_lock(&self) -> MutexGuard<'_, HashMap<Conversation, InOrder<Message>>> {
        self.order.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn is_full_protocol(&self, socket: &Socket<Connection>) -> bool {
        self.community().protocol_of(socket.id()) == Some(Protocol::Full)
    }

    /// A socket left. `resumable`: its client may come back with connection-state recovery
    /// (its connection dropped), so a tutorial user is held for the grace period too.
    fn disconnect(&self, socket: &Socket<Connection>, resumable: bool) {
        let mut community = self.community();
        let notices = if resumable {
            community.drop_connection(socket.id(), now_ms_u64())
        } else {
            community.disconnect(socket.id(), now_ms_u64())
        };
        socket.data().set_spelling(None);
        self.deliver(&community, None, &notices);
    }

    /// Remember a socket registered during `on_connect` (see `unconfirmed`); `fresh`: the
    /// token and user this connection created, if it created them; `unsent`: its `session`
    /// (the token) could not be sent, the connection having closed.
    pub(crate) fn registered_on_connect(
        &self,
        socket: &SocketId,
        fresh: Option<(String, UserId)>,
        unsent: bool,
    ) {
        let mut unconfirmed = self
            .unconfirmed
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        unconfirmed.insert(
            socket.clone(),
            Unconfirmed {
                registered_ms: now_ms_u64(),
                fresh,
                unsent,
            },
        );
    }

    /// A socket is gone: if it created its user and its connection closed before its
    /// `session` event (the token) could even be queued, nobody can ever use that token:
    /// forget the user, so its name is free at once rather than held for the session's 30
    /// days. Call after [`Chat::disconnect`]. Returns whether the user was forgotten.
    async fn forget_if_unconfirmed(&self, socket: &SocketId) -> bool {
        let entry = self
            .unconfirmed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(socket);
        let Some(Unconfirmed {
            fresh: Some((token, user)),
            unsent: true,
            ..
        }) = entry
        else {
            return false;
        };
        if self.closing.load(Ordering::Relaxed) {
            return false;
        }
        {
            let mut community = self.community();
            // Another socket of the user (it had the token after all) keeps it.
            let Some(mut notices) = community.forget_user(&user) else {
                return false;
            };
            debug!(socket = %socket, "new user's connection closed before its token was sent");
            notices.extend(community.users_notice());
            self.deliver(&community, None, &notices);
        }
        self.history.forget_user(&token, &user).await;
        true
    }

    /// Announce departures; returns who left, and the sessions (token, user) of connections
    /// that closed while connecting and created their user: nobody can ever use them, so
    /// the caller deletes them from history.
    fn sweep(&self) -> Swept {
        let now = now_ms_u64();
        let ghosts = self.unconfirmed_ghosts(now);
        let mut community = self.community();
        let mut notices = Vec::new();
        let mut unreachable = Vec::new();
        for (socket, fresh) in ghosts {
            // Not a ghost after all if its disconnect was handled (it lived, however briefly).
            if community.user_id_of(&socket).is_none() {
                continue;
            }
            debug!(socket = %socket, "socket closed while connecting; forgetting it");
            notices.extend(community.disconnect(&socket, now));
            if let Some((token, user)) = fresh
                && let Some(departures) = community.forget_user(&user)
            {
                notices.extend(departures);
                unreachable.push((token, user));
            }
        }
        // One user list for all the ghosts (`forget_user` leaves it out).
        if !notices.is_empty() {
            notices.extend(community.users_notice());
        }
        let mut departed = Vec::new();
        if community.has_away_users() {
            let swept = community.sweep(now);
            notices.extend(swept.notices);
            departed = swept.departed;
        }
        if !notices.is_empty() {
            self.deliver(&community, None, &notices);
        }
        // A message whose predecessor never came (its sender's task vanished) waits at most
        // this long.
        let overdue: Vec<Message> = self
            .order_lock()
            .values_mut()
            .filter(|order| order.is_waiting())
            .flat_map(|order| order.expire(now, MAX_ORDER_WAIT_MS))
            .collect();
        self.deliver_messages(&community, overdue);
        Swept {
            unreachable,
            departed,
        }
    }

    /// Sockets registered at least a second ago that the engine does not know: their
    /// connection closed during `on_connect`. Those it knows are confirmed and forgotten here.
    fn unconfirmed_ghosts(&self, now: u64) -> Vec<(SocketId, Option<(String, UserId)>)> {
        let Some(io) = self.io() else {
            return Vec::new();
        };
        let mut unconfirmed = self
            .unconfirmed
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut ghosts = Vec::new();
        unconfirmed.retain(|socket, entry| {
            if now.saturating_sub(entry.registered_ms) < 1_000 {
                return true;
            }
            let known = io
                .of("/")
                .is_some_and(|namespace| !namespace.to(socket.as_str()).is_empty());
            if !known {
                ghosts.push((socket.clone(), entry.fresh.take()));
            }
            false
        });
        ghosts
    }
}

/// A socket registered during `on_connect` that the engine has not confirmed yet.
struct Unconfirmed {
    registered_ms: u64,
    /// The token and user its connect created (a new name), if it created them.
    fresh: Option<(String, UserId)>,
    /// Its `session` could not be sent: the connection had closed.
    unsent: bool,
}

/// Milliseconds since the Unix epoch (the store's timestamps).
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}

pub(crate) fn now_ms_u64() -> u64 {
    u64::try_from(now_ms()).unwrap_or(0)
}

/// Most messages of one socket stored but not yet answered; past it the socket's next
/// message waits (its events are handled one at a time), so memory stays bounded.
const MAX_IN_FLIGHT_PER_SOCKET: usize = 64;

/// Per-socket state, created empty when a socket connects.
#[derive(Debug)]
pub struct Connection {
    /// Room for this socket's messages in flight (see [`Chat::pipeline`]).
    in_flight: Arc<tokio::sync::Semaphore>,
    /// Resolves when the socket's last pipelined message is finished (acked and delivered).
    pipeline_tail: Mutex<Option<tokio::sync::oneshot::Receiver<()>>>,
    /// The event spelling this socket used to add itself; `None` until it has a name.
    spelling: Mutex<Option<Spelling>>,
    /// How fast this socket may send messages; created on its first message.
    rate: Mutex<Option<RateLimit>>,
    /// When this socket was resumed by connection-state recovery, and the deadline of the
    /// record it resumed from.
    resumed: Mutex<Option<(i64, i64)>>,
}

impl Default for Connection {
    fn default() -> Self {
        Self {
            in_flight: Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT_PER_SOCKET)),
            pipeline_tail: Mutex::new(None),
            spelling: Mutex::default(),
            rate: Mutex::default(),
            resumed: Mutex::default(),
        }
    }
}

impl Connection {
    /// Make `next` the pipeline's tail; returns the previous tail, which the caller waits
    /// for before finishing.
    fn chain(
        &self,
        next: tokio::sync::oneshot::Receiver<()>,
    ) -> Option<tokio::sync::oneshot::Receiver<()>> {
        self.pipeline_tail
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .replace(next)
    }

    /// Wait until every pipelined message of this socket is finished.
    pub(crate) async fn wait_for_pipeline(&self) {
        let tail = self
            .pipeline_tail
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(tail) = tail {
            let _ = tail.await;
        }
    }

    /// Count one message against this socket's rate limit.
    pub(crate) fn take_message_token(&self, per_second: u32) -> Result<(), DomainError> {
        let now = now_ms_u64();
        let mut rate = self.rate.lock().unwrap_or_else(PoisonError::into_inner);
        rate.get_or_insert_with(|| RateLimit::new(per_second, now))
            .take(now)
    }

    pub(crate) fn set_resumed(&self, at_ms: i64, deadline_ms: i64) {
        *self.resumed.lock().unwrap_or_else(PoisonError::into_inner) = Some((at_ms, deadline_ms));
    }

    pub(crate) fn resumed(&self) -> Option<(i64, i64)> {
        *self.resumed.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn spelling(&self) -> Option<Spelling> {
        *self.spelling.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn set_spelling(&self, spelling: Option<Spelling>) {
        *self.spelling.lock().unwrap_or_else(PoisonError::into_inner) = spelling;
    }
}

/// The engine handler of namespace `/`.
#[derive(Clone)]
pub struct ChatHandler {
    chat: Arc<Chat>,
}

impl ChatHandler {
    pub fn new(chat: Arc<Chat>) -> Self {
        Self { chat }
    }
}

impl Handler for ChatHandler {
    type Data = Connection;

    async fn on_connect(
        &self,
        socket: &Socket<Connection>,
        auth: &Value,
    ) -> Result<(), ConnectError> {
        // With a name or token: a full-protocol user. Without: a tutorial client, which
        // names itself later with `addUser`.
        full::connect(&self.chat, socket, auth).await
    }

    async fn on_event(&self, socket: &Socket<Connection>, event: Event) {
        let chat = &self.chat;
        let Event {
            name, args, ack, ..
        } = event;
        match name.as_str() {
            "addUser" => tutorial::add_user(chat, socket, Spelling::CamelCase, &args).await,
            "adduser" => tutorial::add_user(chat, socket, Spelling::Lowercase, &args).await,
            "sendChat" => tutorial::send_chat(chat, socket, Spelling::CamelCase, &args).await,
            "sendchat" => tutorial::send_chat(chat, socket, Spelling::Lowercase, &args).await,
            "room:list" => full::room_list(chat, socket, &args, ack),
            "room:create" => full::room_create(chat, socket, &args, ack).await,
            "room:join" => full::room_join(chat, socket, &args, ack).await,
            "room:leave" => full::room_leave(chat, socket, &args, ack).await,
            "room:members" => full::room_members(chat, socket, &args, ack),
            "message:send" => full::message_send(chat, socket, &args, ack).await,
            "message:history" => full::message_history(chat, socket, &args, ack).await,
            "sync" => full::sync(chat, socket, &args, ack).await,
            "dm:send" => full::dm_send(chat, socket, &args, ack).await,
            "dm:history" => full::dm_history(chat, socket, &args, ack).await,
            "typing" => full::typing(chat, socket, &args),
            "presence:subscribe" => presence::subscribe(chat, socket, ack),
            "presence:unsubscribe" => presence::unsubscribe(chat, socket, ack),
            other => {
                debug!(socket = %socket.id(), event = other, "unknown event");
                full::answer(ack, Err(full::unknown_event()));
            }
        }
    }

    async fn on_disconnect(&self, socket: &Socket<Connection>, reason: DisconnectReason) {
        debug!(socket = %socket.id(), reason = reason.as_str(), "socket left");
        // The user's last messages are answered and delivered before it is announced gone.
        socket.data().wait_for_pipeline().await;
        let resumable = recovery::may_resume_after(reason)
            .then(|| recovery::snapshot(&self.chat, socket))
            .flatten();
        self.chat.disconnect(socket, resumable.is_some());
        if self.chat.forget_if_unconfirmed(socket.id()).await {
            return;
        }
        if let Some(snapshot) = resumable {
            recovery::remember_left(&self.chat, socket, snapshot).await;
        }
    }
}
