//! [`Socket`]: the application's handle on one client connected to one namespace, and
//! [`BroadcastOperator`] for emitting to rooms.
//!
//! Emits never block: they encode the packet and push it onto the connection's bounded outbox.
//! A volatile emit is dropped when the connection is not writable; any other emit that does not
//! fit disconnects that client (it is a slow reader) and is reported as [`EmitError::Overflow`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;

/// The Socket.IO socket id (`sid` of the namespace CONNECT reply), unique per namespace socket.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SocketId(pub(crate) Arc<str>);

impl SocketId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for SocketId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What the client sent when it opened the connection.
#[derive(Debug, Clone)]
pub struct Handshake {
    /// Query string pairs of the first request (v4 clients carry names or tokens here).
    pub query: Vec<(String, String)>,
    /// Headers of the first request.
    pub headers: http::HeaderMap,
    /// Peer address of the TCP connection that opened the session.
    pub remote_addr: Option<SocketAddr>,
    /// 3 or 4: the Engine.IO protocol revision (3 means a socket.io 2.x client).
    pub eio: u8,
    /// The CONNECT auth payload (`{}` when none).
    pub auth: Value,
}

impl Handshake {
    /// The first value of query parameter `key`.
    pub fn query_param(&self, key: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// Why an emit did not reach the client's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmitError {
    /// The socket is already disconnected.
    Closed,
    /// The outbound queue was full: the client has been disconnected as a slow reader.
    Overflow,
    /// The arguments did not serialize to a JSON array.
    InvalidArgs,
}

/// Why a server-side `emit_with_ack` got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckError {
    Timeout,
    Closed,
    Emit(EmitError),
}

/// One client's socket in one namespace, with the application's data `D`.
pub struct Socket<D> {
    pub(crate) _data: D,
}

impl<D: Send + Sync + 'static> Socket<D> {
    /// The socket id.
    pub fn id(&self) -> &SocketId {
        todo!()
    }
    /// The namespace this socket belongs to, e.g. `/`.
    pub fn namespace(&self) -> &str {
        todo!()
    }
    /// The handshake of the underlying connection.
    pub fn handshake(&self) -> &Handshake {
        todo!()
    }
    /// The application's per-socket data.
    pub fn data(&self) -> &D {
        &self._data
    }
    /// Emit `event` to this client. `args` must serialize to a JSON array (a tuple, a slice or
    /// a `Vec`): its elements become the event's arguments.
    pub fn emit<A: Serialize + ?Sized>(&self, event: &str, args: &A) -> Result<(), EmitError> {
        let _ = (event, serde_json::to_value(args));
        todo!()
    }
    /// Emit with binary attachments; `args` refer to them with socket.io placeholders.
    pub fn emit_binary<A: Serialize + ?Sized>(
        &self,
        event: &str,
        args: &A,
        attachments: Vec<Bytes>,
    ) -> Result<(), EmitError> {
        let _ = (event, serde_json::to_value(args), attachments);
        todo!()
    }
    /// Emit that may be dropped when the client is not ready to receive it (typing indicators).
    pub fn emit_volatile<A: Serialize + ?Sized>(&self, event: &str, args: &A) {
        let _ = (event, serde_json::to_value(args));
        todo!()
    }
    /// Emit and wait for the client's acknowledgement arguments.
    pub async fn emit_with_ack<A: Serialize + ?Sized>(
        &self,
        event: &str,
        args: &A,
        timeout: Duration,
    ) -> Result<Vec<Value>, AckError> {
        let _ = (event, serde_json::to_value(args), timeout);
        todo!()
    }
    /// Join a room of this namespace (an index update, O(1)).
    pub fn join(&self, room: &str) {
        let _ = room;
        todo!()
    }
    /// Leave a room.
    pub fn leave(&self, room: &str) {
        let _ = room;
        todo!()
    }
    /// The rooms this socket is in (its own id room excluded).
    pub fn rooms(&self) -> Vec<String> {
        todo!()
    }
    /// Broadcast to everyone in `room` except this socket.
    pub fn to(&self, room: &str) -> BroadcastOperator {
        let _ = room;
        todo!()
    }
    /// Broadcast to every socket of the namespace except this one.
    pub fn broadcast(&self) -> BroadcastOperator {
        todo!()
    }
    /// Disconnect this socket from its namespace (the client sees "io server disconnect").
    pub fn disconnect(&self) {
        todo!()
    }
    /// Whether the socket is still connected.
    pub fn connected(&self) -> bool {
        todo!()
    }
}

/// A broadcast being built: target rooms, exceptions, volatility. The packet is encoded once
/// and the same bytes are queued to every recipient.
pub struct BroadcastOperator {
    pub(crate) _private: (),
}

impl BroadcastOperator {
    /// Add a target room (several rooms: the union, each socket once).
    pub fn to(self, room: &str) -> Self {
        let _ = room;
        todo!()
    }
    /// Exclude the sockets in `room` (a socket id is also a room).
    pub fn except(self, room: &str) -> Self {
        let _ = room;
        todo!()
    }
    /// Drop the packet for recipients that are not writable instead of disconnecting them.
    pub fn volatile(self) -> Self {
        todo!()
    }
    /// Encode once and queue to every recipient. A recipient whose queue overflows is
    /// disconnected; that does not fail the broadcast.
    pub fn emit<A: Serialize + ?Sized>(self, event: &str, args: &A) -> Result<(), EmitError> {
        let _ = (event, serde_json::to_value(args));
        todo!()
    }
}
