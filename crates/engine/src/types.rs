//! Leaf types shared by the connection, the transports and the API: no module of this
//! crate below them, so anything may use them without closing an import circle.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::config::EngineConfig;

/// Which transport currently carries the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    Polling,
    /// A WebSocket answered the probe; polling GETs are answered with noop.
    Upgrading,
    WebSocket,
}

/// Why the server cut a connection off, told to the client before it goes: the code and
/// reason of the WebSocket close frame, or the data of the final polling close packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Farewell {
    /// More than `max_outbound_bytes` waited to be sent.
    SlowReader,
    /// A write did not finish within a heartbeat period (ping interval + timeout).
    StalledReader,
}

impl Farewell {
    /// The WebSocket close code: 1008, policy violation.
    pub(crate) fn code(self) -> u16 {
        match self {
            Self::SlowReader | Self::StalledReader => 1008,
        }
    }
    /// A sentence for the client's log (at most 123 bytes, a close frame's limit).
    pub(crate) fn reason(self, config: &EngineConfig) -> String {
        match self {
            Self::SlowReader => format!(
                "slow reader: more than {} bytes waited to be sent",
                config.max_outbound_bytes
            ),
            Self::StalledReader => format!(
                "slow reader: a write waited more than {} ms",
                (config.ping_interval + config.ping_timeout).as_millis()
            ),
        }
    }
}

/// A protocol violation by the client: the connection is closed.
#[derive(Debug)]
pub(crate) struct ProtocolError(pub &'static str);

/// How long a dispatcher may sleep when nothing is scheduled.
pub(crate) const FAR_FUTURE: Duration = Duration::from_secs(3600);

/// Why a socket left its namespace. Strings match socket.io's reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisconnectReason {
    /// The client sent DISCONNECT ("client namespace disconnect").
    ClientNamespaceDisconnect,
    /// The application called [`crate::Socket::disconnect`] ("server namespace disconnect").
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
    /// The reason as socket.io spells it.
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

/// What the client sent when it opened the connection.
#[derive(Debug, Clone)]
pub struct Handshake {
    /// Query string pairs of the first request (v4 clients carry names or tokens here),
    /// without Engine.IO's own `EIO`, `transport`, `t`, `b64` and `sid`.
    pub query: Vec<(String, String)>,
    /// Headers of the first request.
    pub headers: http::HeaderMap,
    /// Peer address of the TCP connection that opened the session.
    pub remote_addr: Option<SocketAddr>,
    /// The client's address, for caps per client: the peer's, or when the peer is a trusted
    /// proxy ([`crate::EngineConfig::trusted_proxies`]) the right-most untrusted address of
    /// its `X-Forwarded-For`.
    pub client_addr: Option<std::net::IpAddr>,
    /// 3 or 4: the Engine.IO protocol revision (3 means a socket.io 2.x client).
    pub eio: u8,
    // The CONNECT auth payload is not kept: `Handler::on_connect` receives it. (A JSON
    // object costs about 0.7 KiB, for the life of every socket.)
}

impl Handshake {
    /// The first value of query parameter `key`.
    pub fn query_param(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
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

impl std::fmt::Display for EmitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Closed => "socket closed",
            Self::Overflow => "outbound queue full: client disconnected",
            Self::InvalidArgs => "emit arguments must serialize to a JSON array",
        })
    }
}

impl std::error::Error for EmitError {}

/// The Socket.IO socket id (`sid` of the namespace CONNECT reply), unique per namespace socket.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SocketId(pub(crate) Arc<str>);

impl SocketId {
    /// The id as a string (it is also the name of the socket's own room).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for SocketId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A fresh random id (Engine.IO sid, socket id, pid): 15 random bytes, base64url, 20 chars.
pub(crate) fn random_id() -> String {
    let bytes: [u8; 15] = rand::random();
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Whether `s` could be an id we issued (bounded length, base64url alphabet).
pub(crate) fn looks_like_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The key public socket ids are derived from recovery private ids with, so a client cannot
/// forge the id that belongs to someone else's pid: random per process, or a secret shared by
/// the nodes of a cluster (see [`crate::EngineConfig::socket_id_key`]), so that a client
/// resumed on another node keeps its socket id.
pub(crate) enum SocketIds {
    PerProcess(RandomState),
    Shared([u8; 32]),
}

impl SocketIds {
    pub(crate) fn new(shared: Option<&crate::config::SocketIdKey>) -> Self {
        match shared {
            Some(key) => Self::Shared(key.0),
            None => Self::PerProcess(RandomState::new()),
        }
    }

    /// The public socket id belonging to a recovery private id.
    pub(crate) fn derive(&self, pid: &str) -> SocketId {
        let mut bytes = [0u8; 16];
        match self {
            Self::Shared(key) => {
                // SHA-256 of key and pid, cut to 16 bytes (a fixed-length key first, so a
                // keyed PRF): the same pid gives the same id on every node.
                use sha2::{Digest, Sha256};
                let digest = Sha256::new()
                    .chain_update(key)
                    .chain_update(pid.as_bytes())
                    .finalize();
                bytes.copy_from_slice(&digest[..16]);
            }
            Self::PerProcess(state) => {
                for (i, chunk) in bytes.chunks_mut(8).enumerate() {
                    let mut hasher = state.build_hasher();
                    hasher.write_u8(i as u8);
                    hasher.write(pid.as_bytes());
                    chunk.copy_from_slice(&hasher.finish().to_le_bytes());
                }
            }
        }
        SocketId(URL_SAFE_NO_PAD.encode(bytes).into())
    }
}
