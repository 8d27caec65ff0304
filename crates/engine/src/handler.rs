//! What an application implements: one [`Handler`] per namespace.
//!
//! The engine calls a socket's handler methods one at a time, in the order the client sent its
//! packets: `on_connect`, then each `on_event` awaited to completion before the next, then
//! `on_disconnect` after every earlier event.
//!
//! An event that need not hold up the next ones (a slow lookup whose answer may arrive out of
//! order) opts out by spawning its work: the [`Ack`] is owned and [`Socket::emitter`] gives an
//! owned way to emit to the socket, e.g.
//! `let (ack, to_me) = (event.ack, socket.emitter()); tokio::spawn(async move { … });`

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;

use crate::conn::Conn;
use crate::eio::Frame;
use crate::sio::{self, PacketKind};
use crate::socket::{Socket, SocketId};
pub use crate::types::DisconnectReason;
use crate::types::EmitError;

/// The application side of one namespace.
pub trait Handler: Send + Sync + 'static {
    /// Per-socket application data, created with `Default` when the socket connects.
    /// Put interior mutability (a `Mutex`) inside if handlers change it.
    type Data: Default + Send + Sync + 'static;

    /// A client asks to join this namespace. `auth` is the CONNECT payload (v5) or `{}`
    /// (v4 clients pass data in the handshake query, see [`Socket::handshake`]).
    /// Returning an error refuses the connection with CONNECT_ERROR `{"message": ...}`.
    fn on_connect(
        &self,
        socket: &Socket<Self::Data>,
        auth: &Value,
    ) -> impl Future<Output = Result<(), ConnectError>> + Send;

    /// Connection-state recovery: whether the session of a client presenting the private id
    /// `pid` (the socket would have the public id `id` it had) may be restored, asked before
    /// its socket is made. No: the socket gets a fresh id and pid, as a new one would, and
    /// cannot be restored. Yes: `on_connect` still decides, with
    /// [`Socket::restore_session`]. By default yes.
    fn may_restore(&self, pid: &str, id: &SocketId) -> impl Future<Output = bool> + Send {
        let _ = (pid, id);
        std::future::ready(true)
    }

    /// An EVENT (or BINARY_EVENT) from the client.
    fn on_event(
        &self,
        socket: &Socket<Self::Data>,
        event: Event,
    ) -> impl Future<Output = ()> + Send;

    /// The socket left: client disconnect, transport close, ping timeout, server disconnect.
    fn on_disconnect(
        &self,
        socket: &Socket<Self::Data>,
        reason: DisconnectReason,
    ) -> impl Future<Output = ()> + Send;
}

/// Refusal of a namespace CONNECT; the client sees `connect_error` with this message
/// (and `data`, when set, on v5 clients).
#[derive(Debug, Clone)]
pub struct ConnectError {
    /// Shown to the client as the error's message.
    pub message: String,
    /// Extra details for v5 clients (`err.data`).
    pub data: Option<Value>,
}

impl ConnectError {
    /// A refusal with `message` and no data.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            data: None,
        }
    }
}

/// One event received from a client.
#[derive(Debug)]
pub struct Event {
    /// The event name (first element of the packet's array).
    pub name: String,
    /// The arguments after the name. Binary attachments stay as socket.io placeholders
    /// `{"_placeholder":true,"num":N}` pointing into `attachments`.
    pub args: Vec<Value>,
    /// Binary attachments, in placeholder order.
    pub attachments: Vec<Bytes>,
    /// Present when the client asked for an acknowledgement.
    pub ack: Option<Ack>,
}

/// The way to answer one client-requested acknowledgement; sending consumes it.
pub struct Ack {
    conn: Arc<Conn>,
    prefix: String,
    id: u64,
}

impl std::fmt::Debug for Ack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ack").field("id", &self.id).finish()
    }
}

impl Ack {
    /// `prefix` is the namespace's packet prefix (`""` for `/`, else `/nsp,`).
    pub(crate) fn new(conn: Arc<Conn>, prefix: String, id: u64) -> Self {
        Self { conn, prefix, id }
    }
    /// The ack id the client chose.
    pub fn id(&self) -> u64 {
        self.id
    }
    /// Answer with `args` (must serialize to a JSON array: its elements are the ack's
    /// arguments on the client).
    pub fn send<A: Serialize + ?Sized>(self, args: &A) -> Result<(), EmitError> {
        self.send_binary(args, Vec::new())
    }
    /// Answer with binary attachments referenced by placeholders in `args`.
    pub fn send_binary<A: Serialize + ?Sized>(
        self,
        args: &A,
        attachments: Vec<Bytes>,
    ) -> Result<(), EmitError> {
        let json = sio::args_json(args).ok_or(EmitError::InvalidArgs)?;
        let kind = if attachments.is_empty() {
            PacketKind::Ack
        } else {
            PacketKind::BinaryAck
        };
        let mut frames = Vec::with_capacity(1 + attachments.len());
        frames.push(Frame::text(sio::encode(
            kind,
            &self.prefix,
            attachments.len(),
            Some(self.id),
            &json,
        )));
        frames.extend(attachments.into_iter().map(Frame::Binary));
        self.conn.push(&frames, false)
    }
}
