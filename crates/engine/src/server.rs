//! [`SocketIo`]: the engine's entry point. Build it with namespaces, mount its router.
//!
//! The server is the connections' `conn::Host`: it owns the session map and turns a
//! namespace CONNECT into that namespace's job, so `conn` needs no import of this module.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;
use tokio::sync::Notify;

use crate::adapter::{Adapter, BroadcastPacket, LocalAdapter, NsCore, Targets};
use crate::config::EngineConfig;
use crate::conn::{Conn, Host, Job};
use crate::eio::Frame;
use crate::handler::Handler;
use crate::ns::{Namespace, NsDyn, connect_error_frame};
use crate::serve::ServeStats;
use crate::socket::BroadcastOperator;
use crate::types::{DisconnectReason, SocketIds};

/// A namespace waiting for `build`, where it gets its room index and the adapter.
type PendingNamespace = Box<dyn FnOnce(NsCore) -> Arc<dyn NsDyn> + Send + Sync>;

/// Builder: configuration, namespaces, adapter.
pub struct SocketIoBuilder {
    config: EngineConfig,
    namespaces: HashMap<String, PendingNamespace>,
    adapter: Arc<dyn Adapter>,
    limits: Option<Arc<ServeStats>>,
}

impl SocketIoBuilder {
    /// Register a namespace (e.g. `/`) and its handler. Unregistered namespaces are refused
    /// with CONNECT_ERROR `{"message":"Invalid namespace"}`.
    pub fn namespace<H: Handler>(mut self, path: &str, handler: H) -> Self {
        let pending: PendingNamespace = Box::new(move |core: NsCore| {
            Arc::new(Namespace {
                core: Arc::new(core),
                handler,
            })
        });
        self.namespaces.insert(path.to_owned(), pending);
        self
    }
    /// Use a cluster adapter (default: [`LocalAdapter`]).
    pub fn adapter<A: Adapter>(mut self, adapter: A) -> Self {
        self.adapter = Arc::new(adapter);
        self
    }
    /// Count polling sessions against the caps of the [`crate::serve()`] loop these stats
    /// are passed to (in [`crate::ServeOptions::stats`]): a polling session holds no
    /// connection between its requests, so it counts as one connection (per address too)
    /// while it lives on polling; a handshake over the caps gets 503. WebSocket sessions
    /// are counted by their connection.
    pub fn connection_limits(mut self, stats: Arc<ServeStats>) -> Self {
        self.limits = Some(stats);
        self
    }
    /// Finish: the server is ready to be mounted with [`SocketIo::router`].
    pub fn build(self) -> SocketIo {
        let adapter = self.adapter;
        let namespaces = self
            .namespaces
            .into_iter()
            .map(|(path, pending)| {
                let core = NsCore::new(&path, adapter.clone());
                (path, pending(core))
            })
            .collect();
        let socket_ids = SocketIds::new(self.config.socket_id_key.as_ref());
        SocketIo {
            inner: Arc::new(ServerInner {
                config: self.config,
                namespaces,
                limits: self.limits,
                sessions: Mutex::new(HashMap::new()),
                sessions_changed: Notify::new(),
                shutting_down: AtomicBool::new(false),
                socket_ids,
            }),
        }
    }
}

/// State shared by every connection of one server.
pub(crate) struct ServerInner {
    pub(crate) config: EngineConfig,
    pub(crate) namespaces: HashMap<String, Arc<dyn NsDyn>>,
    /// Where polling sessions are counted against the connection caps, if anywhere.
    pub(crate) limits: Option<Arc<ServeStats>>,
    /// Every open Engine.IO connection by sid (polling needs the lookup; shutdown and
    /// `connection_count` need the set). A std `Mutex`: inserts, lookups and removals only.
    sessions: Mutex<HashMap<Arc<str>, Arc<Conn>>>,
    /// `notify_waiters` when a session is removed.
    sessions_changed: Notify,
    pub(crate) shutting_down: AtomicBool,
    /// Keyed per process: socket ids derived from recovery pids cannot be forged.
    socket_ids: SocketIds,
}

impl ServerInner {
    fn sessions(&self) -> MutexGuard<'_, HashMap<Arc<str>, Arc<Conn>>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }
    pub(crate) fn session(&self, sid: &str) -> Option<Arc<Conn>> {
        self.sessions().get(sid).cloned()
    }
}

impl Host for ServerInner {
    fn config(&self) -> &EngineConfig {
        &self.config
    }
    fn shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }
    fn connect(
        &self,
        conn: Arc<Conn>,
        nsp: String,
        auth: Value,
        query: Vec<(String, String)>,
    ) -> Job {
        match self.namespaces.get(nsp.as_str()) {
            Some(ns) => ns.clone().connect(conn, auth, query, &self.socket_ids),
            None => {
                let reply = connect_error_frame(conn.eio, &nsp, "Invalid namespace", None);
                let _ = conn.push(&[reply], false);
                // A zero-sized future: boxing it allocates nothing.
                Box::pin(std::future::ready(()))
            }
        }
    }
    fn add_session(&self, conn: &Arc<Conn>) {
        self.sessions().insert(conn.sid.clone(), conn.clone());
    }
    fn remove_session(&self, sid: &str) {
        let removed = self.sessions().remove(sid);
        if let Some(conn) = removed {
            conn.release_slot();
        }
        self.sessions_changed.notify_waiters();
    }
}

/// A running Socket.IO server. Cheap to clone (shared inside).
#[derive(Clone)]
pub struct SocketIo {
    pub(crate) inner: Arc<ServerInner>,
}

impl SocketIo {
    /// Start building a server with `config`.
    pub fn builder(config: EngineConfig) -> SocketIoBuilder {
        SocketIoBuilder {
            config,
            namespaces: HashMap::new(),
            adapter: Arc::new(LocalAdapter),
            limits: None,
        }
    }
    /// Broadcast from the server to a namespace (then narrow with `.to(room)`).
    pub fn of(&self, namespace: &str) -> Option<BroadcastOperator> {
        let ns = self.inner.namespaces.get(namespace)?;
        Some(BroadcastOperator::new(ns.core().clone()))
    }
    /// Deliver a broadcast published by another node's adapter to this node's sockets
    /// (it is not published again).
    pub fn deliver_remote(&self, packet: &BroadcastPacket) {
        let Some(ns) = self.inner.namespaces.get(packet.namespace.as_str()) else {
            return;
        };
        let Ok(text) = tokio_tungstenite::tungstenite::Utf8Bytes::try_from(packet.text.clone())
        else {
            return;
        };
        let mut frames = vec![Frame::Text(text)];
        frames.extend(packet.attachments.iter().cloned().map(Frame::Binary));
        let targets = Targets {
            rooms: &packet.rooms,
            except: &packet.except,
            except_socket: None,
            volatile: packet.volatile,
        };
        ns.core().deliver(&targets, &frames);
    }
    /// Number of open Engine.IO connections.
    pub fn connection_count(&self) -> usize {
        self.inner.sessions().len()
    }
    /// How many of the open Engine.IO connections have no namespace socket yet (they are
    /// closed unless they connect one within the connect timeouts).
    pub fn unconnected_count(&self) -> usize {
        let conns: Vec<Arc<Conn>> = self.inner.sessions().values().cloned().collect();
        conns.iter().filter(|conn| !conn.has_sockets()).count()
    }
    /// Close every connection (handlers see `ServerShuttingDown`) and wait until every
    /// `on_disconnect` has returned. New connections are refused from now on.
    pub async fn shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::SeqCst);
        let conns: Vec<Arc<Conn>> = self.inner.sessions().values().cloned().collect();
        for conn in conns {
            conn.close(DisconnectReason::ServerShuttingDown);
        }
        loop {
            let changed = self.inner.sessions_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.inner.sessions().is_empty() {
                return;
            }
            changed.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SocketIdKey;

    fn server(key: Option<[u8; 32]>) -> SocketIo {
        SocketIo::builder(EngineConfig {
            socket_id_key: key.map(SocketIdKey),
            ..EngineConfig::default()
        })
        .build()
    }

    #[test]
    fn servers_sharing_a_key_derive_the_same_socket_id_from_a_pid_and_others_do_not() {
        let pid = "AAAAAAAAAAAAAAAAAAAA";
        let one = server(Some([7; 32])).inner.socket_ids.derive(pid);
        let two = server(Some([7; 32])).inner.socket_ids.derive(pid);
        assert_eq!(one, two);
        assert_ne!(one, server(Some([8; 32])).inner.socket_ids.derive(pid));
        assert_ne!(
            one,
            server(Some([7; 32]))
                .inner
                .socket_ids
                .derive("BBBBBBBBBBBBBBBBBBBB")
        );
        // Without a key, a secret of each process's own.
        assert_ne!(
            server(None).inner.socket_ids.derive(pid),
            server(None).inner.socket_ids.derive(pid)
        );
        assert_eq!(one.as_str().len(), 22, "16 bytes, base64url");
    }
}
