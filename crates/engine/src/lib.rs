//! chinwag-engine: a lean Socket.IO server engine.
//!
//! It speaks Engine.IO v4 and v3 (WebSocket, HTTP long-polling, the polling→WebSocket upgrade)
//! and Socket.IO v5 and v4 (namespaces, events, acks, binary attachments), with one task per
//! connection, bounded outbound queues and encode-once broadcasts. It knows nothing about chat.
//!
//! # Layout
//! - [`config`]: [`EngineConfig`], every tunable with its default.
//! - `eio`: Engine.IO packet and payload codecs (pure, no I/O).
//! - `sio`: Socket.IO packet codec (pure, no I/O).
//! - [`handler`]: the [`Handler`] trait an application implements per namespace.
//! - [`socket`]: [`Socket`], the application's handle on one connected namespace socket.
//! - [`adapter`]: room index and the [`Adapter`] trait for cluster fan-out.
//! - [`server`]: [`SocketIo`], the builder and the HTTP service to mount.
//!
//! # The API in one example
//! ```ignore
//! struct Chat;
//! impl Handler for Chat {
//!     type Data = ();
//!     async fn on_connect(&self, s: &Socket<()>, auth: &serde_json::Value) -> Result<(), ConnectError> { Ok(()) }
//!     async fn on_event(&self, s: &Socket<()>, ev: Event) {
//!         s.to("general").emit("chat", &ev.args).ok();
//!         if let Some(ack) = ev.ack { ack.send(&["ok"]).ok(); }
//!     }
//!     async fn on_disconnect(&self, s: &Socket<()>, reason: DisconnectReason) {}
//! }
//! let io = SocketIo::builder(EngineConfig::default()).namespace("/", Chat).build();
//! let app = axum::Router::new().merge(io.router());
//! ```

pub mod adapter;
pub mod config;
mod conn;
mod eio;
pub mod handler;
mod ns;
pub mod server;
mod sio;
pub mod socket;
mod transport;

pub use adapter::{Adapter, BroadcastPacket, LocalAdapter};
pub use config::EngineConfig;
pub use handler::{Ack, ConnectError, DisconnectReason, Event, Handler};
pub use server::{SocketIo, SocketIoBuilder};
pub use socket::{AckError, BroadcastOperator, EmitError, Handshake, Socket, SocketId};
