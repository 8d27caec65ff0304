//! The application layer: the chat's shared state and what it does with it, between the
//! socket handlers (`socket/`) and the rules ([`crate::domain`]) and storage
//! ([`crate::store`]). Nothing here decodes a request: handlers pass it parsed values.
//!
//! # Layout
//! Leaves first; each file imports only the ones above it, and the `impl Chat` files only
//! this one and the leaves (sweeper → sessions → order → this file).
//! - `clock`: the wall clock (the domain is given the time).
//! - [`outgoing`]: what clients receive: the message form, offsets, tutorial spellings.
//! - [`rooms`]: the engine rooms that make delivering to a group one broadcast.
//! - [`connection`]: [`Connection`], the per-socket state.
//! - [`presence`]: the [`Presence`] seam (grace periods, restart grace, who hears whose
//!   presence) and [`LocalPresence`], its implementation in this process.
//! - [`redis_presence`]: [`redis_presence::RedisPresence`], the presence seam kept in Redis
//!   with per-node heartbeats (cluster mode), so a user is online while any live node has it.
//! - [`deliver`]: notices → emits.
//! - this file: [`Chat`] (shared state, its mutexes and their lock order) and the calls that
//!   only lock.
//! - `order`: delivering notices, pipelining a socket's messages, releasing stored
//!   messages in sequence order ([`InOrder`]), the rooms' in-memory tails and `general`'s
//!   recovery position.
//! - `names`: tutorial users' names in the store (claimed, refreshed, released).
//! - `sessions`: a socket leaving, and the sockets registered while connecting that the
//!   engine never confirmed.
//! - `cluster`: in a cluster, publishing on the bus and applying the other nodes' events;
//!   the gap repair (a missing predecessor read from the store), on a single node too.
//! - `sweeper`: the background tasks: departures after the grace period, overdue messages,
//!   purges, the tutorial's user lists.
//!
//! # Lock order
//! `community`, then `quotas`; `community`, then `order`, then `tails`; `unconfirmed` alone
//! or after `community`; `tutorial_names` alone or after `community`. None is held across an `.await`.

mod clock;
mod cluster;
pub mod connection;
pub mod deliver;
mod names;
mod order;
pub mod outgoing;
pub mod presence;
pub mod redis_presence;
pub mod rooms;
mod sessions;
mod sweeper;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use engine::{Socket, SocketId, SocketIo};
use serde_json::Value;

pub(crate) use clock::{now_ms, now_ms_u64};
pub use connection::Connection;
pub use presence::{LocalPresence, Presence};

use crate::cluster::Bus;
use crate::domain::{
    Community, DomainError, InOrder, Limits, Message, Protocol, QuotaLimits, Quotas, Tail, UserId,
    UserName,
};
use crate::store::Conversation;
use crate::store::history::History;

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
    /// The latest messages of up to [`order::MAX_TAILS`] rooms, for catch-up without reading the
    /// history. Lock order: community, then `order`, then this.
    tails: Mutex<HashMap<Conversation, Tail<Value>>>,
    /// Socket.IO connection-state recovery is on: room messages carry an offset.
    pub(crate) recovery: bool,
    /// Shutting down: nobody is swept any more, so the users connected at the stop stay
    /// recorded as online however long the shutdown takes.
    closing: AtomicBool,
    /// The tutorial's next user list, sent by one task outside the community lock.
    users_out: Arc<deliver::UsersOutbox>,
    /// Who is present and who hears about it; its community-side state is under the
    /// `community` lock.
    presence: Box<dyn Presence>,
    /// The cluster bus, in a cluster (see [`Chat::follow`]).
    bus: OnceLock<Arc<dyn Bus>>,
    /// Tutorial users who claimed their names in the store, until their claims are
    /// released (see `names.rs`).
    tutorial_names: Mutex<HashMap<UserId, UserName>>,
    /// Gaps in a conversation's sequence repaired from the store, and the messages that
    /// repaired them (for `/metrics`).
    pub(crate) repairs: RepairCounters,
}

/// What the gap repair did (see `cluster.rs`).
#[derive(Debug, Default)]
pub struct RepairCounters {
    pub gaps: AtomicU64,
    pub messages: AtomicU64,
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
            presence: Box::new(LocalPresence),
            bus: OnceLock::new(),
            tutorial_names: Mutex::new(HashMap::new()),
            repairs: RepairCounters::default(),
        }
    }

    /// Keep presence elsewhere than in this process (the seam of a cluster).
    pub fn with_presence(mut self, presence: Box<dyn Presence>) -> Self {
        self.presence = presence;
        self
    }

    /// Presence; calls that take the community are made with its lock held.
    pub(crate) fn presence(&self) -> &dyn Presence {
        &*self.presence
    }

    /// The server is shutting down: stop announcing and recording departures. Returns the
    /// users whose connections had dropped before (they were leaving).
    pub fn begin_shutdown(&self) -> Vec<UserId> {
        let community = self.community();
        self.closing.store(true, Ordering::Relaxed);
        self.presence.in_grace(&community)
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

    pub(crate) fn is_full_protocol(&self, socket: &Socket<Connection>) -> bool {
        self.community().protocol_of(socket.id()) == Some(Protocol::Full)
    }
}

/// A socket registered during `on_connect` that the engine has not confirmed yet.
struct Unconfirmed {
    pub(super) registered_ms: u64,
    /// The token and user its connect created (a new name), if it created them.
    pub(super) fresh: Option<(String, UserId)>,
    /// Its `session` could not be sent: the connection had closed.
    pub(super) unsent: bool,
}
