//! Engine configuration: every tunable, with the defaults of Node's socket.io where they exist.

use std::time::Duration;

/// Tunables of the engine. Build with `EngineConfig::default()` and override fields.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Mount path of the Socket.IO endpoint, with trailing slash. Default `/socket.io/`.
    pub path: String,
    /// How often the server pings (Engine.IO v4) or expects client pings (v3). Default 25 s.
    pub ping_interval: Duration,
    /// How long to wait for the pong (v4) / next ping (v3) before closing. Default 20 s.
    pub ping_timeout: Duration,
    /// Largest accepted packet, HTTP body or WebSocket message, in bytes. Default 1,000,000.
    pub max_payload: usize,
    /// Time a client has to send its first Socket.IO CONNECT packet after the Engine.IO
    /// open; a session that sent none by then is closed. Official clients send it at once;
    /// an unused handshake should not hold a session (and its slot under the connection
    /// caps) for long. Default 10 s.
    pub first_connect_timeout: Duration,
    /// Time a client has, from the Engine.IO open, to have a namespace socket connected
    /// (its CONNECT accepted) once it sent a CONNECT. Default 45 s, socket.io's
    /// `connectTimeout`.
    pub connect_timeout: Duration,
    /// Allow the WebSocket transport. Default true.
    pub allow_websocket: bool,
    /// Allow the polling transport. Default true.
    pub allow_polling: bool,
    /// Allow the polling→WebSocket upgrade. Default true.
    pub allow_upgrades: bool,
    /// Accept Engine.IO v3 / Socket.IO v4 clients (socket.io-client 2.x). Default true.
    pub allow_eio3: bool,
    /// Allowed `Origin` values for CORS and WebSocket; `None` allows any origin.
    pub allowed_origins: Option<Vec<String>>,
    /// Bound, in bytes, on one connection's queued outbound data. A non-volatile packet that
    /// does not fit behind already queued data disconnects the slow reader (reason
    /// "transport error"): the queued data is dropped and the client is told why (WebSocket
    /// close 1008 with a reason after the frame in progress; on polling, a final close packet
    /// carrying the reason). A packet into an empty outbox is always accepted, so one large
    /// ack is not mistaken for a slow reader. Default 1 MiB.
    pub max_outbound_bytes: usize,
    /// Time limit for reading an HTTP request body. Default 10 s.
    pub http_request_timeout: Duration,
    /// Socket.IO connection-state recovery: reply with a `pid` in CONNECT. Default false.
    pub connection_state_recovery: bool,
    /// Reverse proxies whose `X-Forwarded-For` names the client (see
    /// [`crate::Handshake::client_addr`]); give the same to [`crate::ServeOptions`]. Default
    /// none.
    pub trusted_proxies: crate::TrustedProxies,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            path: "/socket.io/".to_owned(),
            ping_interval: Duration::from_secs(25),
            ping_timeout: Duration::from_secs(20),
            max_payload: 1_000_000,
            first_connect_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(45),
            allow_websocket: true,
            allow_polling: true,
            allow_upgrades: true,
            allow_eio3: true,
            trusted_proxies: crate::TrustedProxies::default(),
            allowed_origins: None,
            max_outbound_bytes: 1 << 20,
            http_request_timeout: Duration::from_secs(10),
            connection_state_recovery: false,
        }
    }
}
