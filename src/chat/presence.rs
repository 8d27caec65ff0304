//! Presence: who is online, for how long a user whose connection dropped still counts as
//! present (its grace period, and the restart grace of users online when the server
//! stopped), and who hears about it. [`Presence`] is the seam: [`LocalPresence`] keeps it in
//! this process (in the [`Community`], under its lock, and in the engine's `presence` room);
//! a cluster keeps it in a shared store with expiry instead (`chat::redis_presence`).
//!
//! What needs the shared store is asked outside the community lock, before the call that
//! takes the lock ([`Presence::held_elsewhere`]), or answered later by a task of the
//! implementation (a departure is then decided at a later [`Presence::expire`]).
//!
//! Who hears a user's `presence`: the sockets that asked for everyone's
//! (`presence:subscribe`), and the users it shares a room with other than `general`
//! (see [`crate::domain::Audience::Watchers`]): everyone is in `general`, and announcing
//! every arrival to everyone costs O(users²) frames.

use std::future::Future;
use std::pin::Pin;

use engine::{BroadcastOperator, Socket, SocketId};

use super::connection::Connection;
use super::rooms::{PRESENCE_ROOM, user_room};
use crate::domain::{Community, Outgoing, RoomName, Swept, UserId, UserName};

/// A boxed future, for the seam's questions that cross the network.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Presence, behind one interface. Every call that takes the community is made with its lock
/// held (it is the first lock of the lock order), so presence changes are ordered with the
/// arrivals, departures and messages every client sees.
pub trait Presence: Send + Sync {
    /// `presence:subscribe`: from now on `socket` hears every user's `presence`.
    fn subscribe(&self, socket: &Socket<Connection>);

    /// `presence:unsubscribe`: back to the presence of the users it shares a room with.
    fn unsubscribe(&self, socket: &Socket<Connection>);

    /// Add to `op` everyone who hears a presence change of a user in `rooms`.
    fn watchers(
        &self,
        op: BroadcastOperator,
        community: &Community<SocketId>,
        rooms: &[RoomName],
    ) -> BroadcastOperator;

    /// Asked without the community lock, before users arrive (or are restored, or are
    /// recorded offline): for each, whether another node of a cluster holds it (then it is
    /// online already, and stays online when it leaves here). Always false in one process.
    fn held_elsewhere<'a>(&'a self, users: &'a [UserId]) -> BoxFuture<'a, Vec<bool>>;

    /// A socket of a user was connected ([`Community::connect`], or a tutorial user's
    /// [`Community::add_tutorial`]) with these `notices`; `elsewhere`: what
    /// [`Presence::held_elsewhere`] said of its user. Returns the notices to deliver (an
    /// arrival another node announced is not announced again).
    fn socket_arrived(
        &self,
        community: &Community<SocketId>,
        socket: &SocketId,
        elsewhere: bool,
        notices: Vec<Outgoing<SocketId>>,
    ) -> Vec<Outgoing<SocketId>>;

    /// A socket is gone at `now_ms`. A full-protocol user whose last socket it was starts its
    /// grace period; a tutorial user leaves at once unless `resumable` (its connection
    /// dropped and connection-state recovery may bring it back): then it is held too.
    fn socket_left(
        &self,
        community: &mut Community<SocketId>,
        socket: &SocketId,
        resumable: bool,
        now_ms: u64,
    ) -> Vec<Outgoing<SocketId>>;

    /// End the grace periods that are over at `now_ms`: the departures to announce and the
    /// full-protocol users who left.
    fn expire(&self, community: &mut Community<SocketId>, now_ms: u64) -> Swept<SocketId>;

    /// Full-protocol users present without a socket (their grace period is running).
    fn in_grace(&self, community: &Community<SocketId>) -> Vec<UserId>;

    /// At startup: a user online when the server stopped stays present, without a socket,
    /// until `leaves_at_ms` (the restart grace), so reconnecting clients come back silently.
    fn restore_online(
        &self,
        community: &mut Community<SocketId>,
        user: UserId,
        name: UserName,
        rooms: Vec<RoomName>,
        leaves_at_ms: u64,
    );

    /// Connection-state recovery, asked without the lock: whether the socket `socket` (the
    /// id a recovering pid derives) is still connected on another node of a cluster, which
    /// is then not resumed here (the engine answers the same for a socket still here).
    fn connected_elsewhere<'a>(&'a self, _socket: &'a SocketId) -> BoxFuture<'a, bool> {
        Box::pin(std::future::ready(false))
    }

    /// Who is present on the other nodes of a cluster (asked without the lock), by name;
    /// `None` in one process, or when the shared store does not answer.
    fn online_elsewhere(&self) -> BoxFuture<'_, Option<Vec<UserName>>> {
        Box::pin(std::future::ready(None))
    }

    /// Asked at every sweep, with the lock: the users present here whom the other nodes of a
    /// cluster were told are gone (this node paused for longer than its heartbeat lives and
    /// was taken for dead), to announce to them again. Empty in one process.
    fn returned(&self, _community: &Community<SocketId>) -> Vec<UserId> {
        Vec::new()
    }

    /// The server stops: stop any background work (a cluster's heartbeat then expires).
    fn stop(&self) {}
}

/// Presence in this process: grace periods in the [`Community`], subscribers in the engine
/// room [`PRESENCE_ROOM`].
#[derive(Debug, Default)]
pub struct LocalPresence;

impl Presence for LocalPresence {
    fn subscribe(&self, socket: &Socket<Connection>) {
        socket.join(PRESENCE_ROOM);
    }

    fn unsubscribe(&self, socket: &Socket<Connection>) {
        socket.leave(PRESENCE_ROOM);
    }

    fn watchers(
        &self,
        mut op: BroadcastOperator,
        community: &Community<SocketId>,
        rooms: &[RoomName],
    ) -> BroadcastOperator {
        op = op.to(PRESENCE_ROOM);
        // The engine sends once to a socket in several of these rooms.
        for room in rooms {
            for user in community.member_ids(room) {
                op = op.to(&user_room(user));
            }
        }
        op
    }

    fn held_elsewhere<'a>(&'a self, users: &'a [UserId]) -> BoxFuture<'a, Vec<bool>> {
        let nowhere = vec![false; users.len()];
        Box::pin(std::future::ready(nowhere))
    }

    fn socket_arrived(
        &self,
        _community: &Community<SocketId>,
        _socket: &SocketId,
        _elsewhere: bool,
        notices: Vec<Outgoing<SocketId>>,
    ) -> Vec<Outgoing<SocketId>> {
        notices
    }

    fn socket_left(
        &self,
        community: &mut Community<SocketId>,
        socket: &SocketId,
        resumable: bool,
        now_ms: u64,
    ) -> Vec<Outgoing<SocketId>> {
        if resumable {
            community.drop_connection(socket, now_ms)
        } else {
            community.disconnect(socket, now_ms)
        }
    }

    fn expire(&self, community: &mut Community<SocketId>, now_ms: u64) -> Swept<SocketId> {
        if !community.has_away_users() {
            return Swept {
                notices: Vec::new(),
                departed: Vec::new(),
            };
        }
        community.sweep(now_ms)
    }

    fn in_grace(&self, community: &Community<SocketId>) -> Vec<UserId> {
        community.users_in_grace()
    }

    fn restore_online(
        &self,
        community: &mut Community<SocketId>,
        user: UserId,
        name: UserName,
        rooms: Vec<RoomName>,
        leaves_at_ms: u64,
    ) {
        community.restore_present(user, name, rooms, leaves_at_ms);
    }
}
