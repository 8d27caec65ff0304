//! [`SocketIo`]: the engine's entry point. Build it with namespaces, mount its router.

use crate::config::EngineConfig;
use crate::handler::Handler;
use crate::socket::BroadcastOperator;

/// Builder: configuration, namespaces, adapter.
pub struct SocketIoBuilder {
    _config: EngineConfig,
}

impl SocketIoBuilder {
    /// Register a namespace (e.g. `/`) and its handler. Unregistered namespaces are refused
    /// with CONNECT_ERROR `{"message":"Invalid namespace"}`.
    pub fn namespace<H: Handler>(self, path: &str, handler: H) -> Self {
        let _ = (path, handler);
        todo!()
    }
    pub fn build(self) -> SocketIo {
        todo!()
    }
}

/// A running Socket.IO server. Cheap to clone (shared inside).
#[derive(Clone)]
pub struct SocketIo {}

impl SocketIo {
    pub fn builder(config: EngineConfig) -> SocketIoBuilder {
        SocketIoBuilder { _config: config }
    }
    /// An axum router serving the Engine.IO endpoint at `config.path` (polling and WebSocket).
    /// Serve it with `into_make_service_with_connect_info::<SocketAddr>()` so remote addresses
    /// are known.
    pub fn router(&self) -> axum::Router {
        todo!()
    }
    /// Broadcast from the server to a namespace (then narrow with `.to(room)`).
    pub fn of(&self, namespace: &str) -> Option<BroadcastOperator> {
        let _ = namespace;
        todo!()
    }
    /// Number of open Engine.IO connections.
    pub fn connection_count(&self) -> usize {
        todo!()
    }
    /// Close every connection (handlers see `ServerShuttingDown`) and wait until every
    /// `on_disconnect` has returned.
    pub async fn shutdown(&self) {
        todo!()
    }
}
