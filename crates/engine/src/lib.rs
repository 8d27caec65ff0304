//! chinwag-engine: a lean Socket.IO server engine.
//!
//! It speaks Engine.IO v4 and v3 (WebSocket, HTTP long-polling, the polling→WebSocket upgrade)
//! and Socket.IO v5 and v4 (namespaces, events, acks, binary attachments), with one task per
//! connection, bounded outbound queues and encode-once broadcasts. It knows nothing about chat.
//!
//! # Layout
//! The modules form layers; each imports only from layers below it, so there is no import
//! circle (a module calls *up* only through a trait it owns, implemented above it):
//!
//! ```text
//! 8  transport                   -> server, conn, types, eio, serve
//! 7  server                      -> ns, handler, socket, adapter, conn, types, config, eio, serve
//! 6  ns                          -> handler, socket, adapter, conn, types, eio, sio
//! 5  handler                     -> socket, conn, types, eio, sio
//! 4  socket                      -> adapter, conn, types, eio, sio
//! 3  adapter                     -> conn, types, eio, sio
//! 2  conn                        -> types, config, eio, serve, sio
//! 1  types                       -> config
//! 0  config, eio, proxy, serve, sio   (leaves; config and serve use proxy, pure)
//! ```
//!
//! - [`config`]: [`EngineConfig`], every tunable with its default.
//! - `eio`: Engine.IO packet and payload codecs, v4 and v3, and the query-string parser
//!   (pure, no I/O).
//! - `sio`: Socket.IO packet codec (pure, no I/O).
//! - [`proxy`]: [`TrustedProxies`], whose `X-Forwarded-For` names the client (pure, no I/O).
//! - [`serve()`]: the hardened accept loop to run the router with (header-read timeout,
//!   connection caps in total and per address, graceful shutdown).
//! - `types`: the leaf types every layer shares ([`DisconnectReason`], [`Handshake`],
//!   [`EmitError`], [`SocketId`], the transport kind, the slow-reader farewell, id
//!   generation and the key socket ids are derived from); it imports nothing above it.
//! - `conn`: one Engine.IO connection — `conn::outbox` (bounded in bytes, the CONNECT
//!   barrier), `conn::inbox` (namespace packets and the dispatcher), `conn::heartbeat`, close
//!   and cleanup, all under one mutex. The heart of ordering and backpressure. It reaches the
//!   layers above only through the traits of `conn::hooks`: `Host` (config, shutdown, the
//!   session map, a namespace CONNECT), implemented by the server, and `SockDyn` (a
//!   namespace socket: events, acks, disconnect), implemented by `ns`.
//! - [`adapter`]: the room index of each namespace (with the adapter its broadcasts go to)
//!   and the [`Adapter`] trait for cluster fan-out.
//! - [`socket`]: [`Socket`], the application's handle on one connected namespace socket, and
//!   [`BroadcastOperator`].
//! - [`handler`]: the [`Handler`] trait an application implements per namespace, and
//!   [`Event`] / [`Ack`].
//! - `ns`: the type-erased bridge from a connection to each namespace's [`Handler`]: runs a
//!   CONNECT, turns a decoded event into an [`Event`] with its [`Ack`].
//! - [`server`]: [`SocketIo`] and its builder, the connections' `Host`; `SocketIo::router`
//!   (the HTTP service to mount) is written in `transport`, so the server does not import
//!   the transport.
//! - `transport`: the HTTP side, at the top of the imports — routing, handshake, errors,
//!   CORS; `transport::polling` (GET/POST, the session driver task), `transport::ws` (the one
//!   task per WebSocket) and `transport::frame_writer` (WebSocket frames written straight to
//!   the socket).
//!
//! # How a packet flows
//! A reader (the WebSocket task or a polling POST) decodes packets: heartbeats and acks are
//! handled at once; CONNECT, DISCONNECT and events go to the connection's inbox. A dispatcher
//! (the same WebSocket task, or the polling session's driver task) runs inbox items one at a
//! time, so a socket's handlers never overlap and `on_disconnect` comes after every earlier
//! event. Emits encode once and push onto the connection's outbox; the writer (the WebSocket
//! task, or the waiting poll) drains it in batches.
//!
//! # The API in one example
//! ```no_run
//! use engine::{ConnectError, DisconnectReason, EngineConfig, Event, Handler, Socket, SocketIo};
//!
//! struct Chat;
//! impl Handler for Chat {
//!     type Data = ();
//!     async fn on_connect(&self, s: &Socket<()>, auth: &serde_json::Value) -> Result<(), ConnectError> {
//!         s.join("general");
//!         Ok(())
//!     }
//!     async fn on_event(&self, s: &Socket<()>, ev: Event) {
//!         s.to("general").emit("chat", &ev.args).ok();
//!         if let Some(ack) = ev.ack {
//!             ack.send(&["ok"]).ok();
//!         }
//!     }
//!     async fn on_disconnect(&self, s: &Socket<()>, reason: DisconnectReason) {}
//! }
//!
//! # async fn run() -> std::io::Result<()> {
//! let io = SocketIo::builder(EngineConfig::default()).namespace("/", Chat).build();
//! let app = axum::Router::new().merge(io.router());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let stop = async { let _ = tokio::signal::ctrl_c().await; };
//! engine::serve(listener, app, engine::ServeOptions::default(), stop).await
//! # }
//! ```

pub mod adapter;
pub mod config;
mod conn;
mod eio;
pub mod handler;
mod ns;
pub mod proxy;
mod serve;
pub mod server;
mod sio;
pub mod socket;
mod transport;
mod types;

#[cfg(test)]
mod codec_props;

/// Feed untrusted bytes to every packet and payload decoder (for the fuzz target and the
/// property tests). Not part of the API.
#[doc(hidden)]
pub fn fuzz_decoders(data: &[u8]) {
    let _ = eio::decode_payload_v4(data);
    let _ = eio::decode_payload_v3_text(data);
    let _ = eio::decode_payload_v3_binary(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = eio::decode_text(text);
        let _ = sio::decode(text);
        let _ = eio::parse_query(text);
    }
}

pub use adapter::{Adapter, BroadcastPacket, LocalAdapter};
pub use config::{EngineConfig, SocketIdKey};
pub use handler::{Ack, ConnectError, DisconnectReason, Event, Handler};
pub use proxy::TrustedProxies;
pub use serve::{ServeOptions, ServeStats, serve};
pub use server::{SocketIo, SocketIoBuilder};
pub use socket::{AckError, BroadcastOperator, EmitError, Handshake, Socket, SocketId};
