//! What an application implements: one [`Handler`] per namespace.
//!
//! The engine calls a socket's handler methods one at a time, in the order the client sent its
//! packets: `on_connect`, then each `on_event` awaited to completion before the next, then
//! `on_disconnect` after every earlier event.

use std::future::Future;

use bytes::Bytes;
use serde_json::Value;

use crate::socket::Socket;

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

    /// An EVENT (or BINARY_EVENT) from the client.
    fn on_event(&self, socket: &Socket<Self::Data>, event: Event)
    -> impl Future<Output = ()> + Send;

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
    pub message: String,
    pub data: Option<Value>,
}

impl ConnectError {
    pub fn new(message: impl Into<String>) -> Self {
        Self { message: message.into(), data: None }
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
#[derive(Debug)]
pub struct Ack {
    pub(crate) _private: (),
}

/// Why a socket left its namespace. Strings match socket.io's reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisconnectReason {
    /// The client sent DISCONNECT ("client namespace disconnect").
    ClientNamespaceDisconnect,
    /// The application called [`Socket::disconnect`] ("server namespace disconnect").
    ServerNamespaceDisconnect,
    /// The transport closed without a goodbye ("transport close").
    TransportClose,
    /// The transport failed, or the outbound queue overflowed ("transport error").
    TransportError,
    /// No pong / ping in time ("ping timeout").
    PingTimeout,
    /// The client sent something unparseable ("parse error").
    ParseError,
    /// The server is shutting down ("server shutting down").
    ServerShuttingDown,
}

impl DisconnectReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::ClientNamespaceDisconnect => "client namespace disconnect",
            Self::ServerNamespaceDisconnect => "server namespace disconnect",
            Self::TransportClose => "transport close",
            Self::TransportError => "transport error",
            Self::PingTimeout => "ping timeout",
            Self::ParseError => "parse error",
            Self::ServerShuttingDown => "server shutting down",
        }
    }
}
