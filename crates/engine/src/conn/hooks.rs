//! The two ways a connection calls up into the layers above it, as traits this module owns
//! and those layers implement (dependency inversion): [`Host`], the server that owns the
//! connection, and [`SockDyn`], one of its namespace sockets. So `conn` imports nothing
//! above it: no server, no namespace, no handler type.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;

use super::Conn;
use crate::config::EngineConfig;
use crate::types::DisconnectReason;

/// One dispatcher job: a handler call and its bookkeeping.
pub(crate) type Job = Pin<Box<dyn Future<Output = ()> + Send>>;

/// What a connection needs from the server that owns it (implemented by the server).
pub(crate) trait Host: Send + Sync + 'static {
    fn config(&self) -> &EngineConfig;
    /// New connections are refused and closing ones do not wait for their farewell.
    fn shutting_down(&self) -> bool;
    /// The job that runs the namespace CONNECT of `conn` to `nsp`: `on_connect`, then the
    /// reply (CONNECT_ERROR for a namespace the server does not have).
    fn connect(
        &self,
        conn: Arc<Conn>,
        nsp: String,
        auth: Value,
        query: Vec<(String, String)>,
    ) -> Job;
    /// Register an open connection under its sid.
    fn add_session(&self, conn: &Arc<Conn>);
    /// Forget the connection: it is closed and its cleanup is over.
    fn remove_session(&self, sid: &str);
}

/// One EVENT (or BINARY_EVENT, attachments complete) as decoded, before the namespace
/// turns it into the handler's `Event`.
#[derive(Debug)]
pub(crate) struct EventPacket {
    pub(crate) name: String,
    pub(crate) args: Vec<Value>,
    pub(crate) attachments: Vec<Bytes>,
    /// The ack id, when the client asked for an acknowledgement.
    pub(crate) ack_id: Option<u64>,
}

/// A connected namespace socket, whatever its handler type.
pub(crate) trait SockDyn: Send + Sync {
    fn nsp(&self) -> &str;
    fn on_event(self: Arc<Self>, event: EventPacket) -> Job;
    /// Forget the socket (rooms, state) and run the handler's `on_disconnect`.
    fn on_disconnect(self: Arc<Self>, reason: DisconnectReason) -> Job;
    fn on_ack(&self, id: u64, args: Vec<Value>);
}
