//! One Engine.IO connection: its outbox, its inbox of Socket.IO packets waiting for their
//! handler, its heartbeat state and its namespace sockets.
//!
//! Who does what:
//! - a *reader* (the WebSocket task, or a polling POST) decodes packets and calls
//!   [`Conn::receive`]; acks and heartbeats are handled there, namespace packets go to the inbox;
//! - a *dispatcher* (the WebSocket task, or the polling session's driver task; after close, the
//!   cleanup task) runs inbox items one at a time: that is what keeps a socket's events in order;
//! - a *writer* (the WebSocket task, or the pending polling GET) drains the outbox in batches.
//!
//! All mutable state sits behind one `std::sync::Mutex`: every critical section is a few
//! pointer moves with no `.await` inside, so an async mutex would only add cost.
//!
//! # Layout
//! - `mod.rs`: [`Conn`], its one `State` and the lifecycle (the opening request, transport,
//!   close, cleanup hand-off, polling flags, the admission slot, the namespace sockets).
//! - `outbox.rs`: frames waiting for the writer, the CONNECT barrier and reply boundary, the
//!   slow-reader cut-off.
//! - `inbox.rs`: decoding what readers hand in, the inbox, the dispatcher and the cleanup after close.
//! - `heartbeat.rs`: pings, ping timeouts and the connect deadline.
//! - `hooks.rs`: the traits through which a connection calls up — [`Host`] (the server that
//!   owns it) and [`SockDyn`] (its namespace sockets) — and the decoded [`EventPacket`] it
//!   hands them; the layers above implement them, so `conn` imports nothing above it.
//!
//! The split is of code only: the three parts are fields of one `State` behind one mutex,
//! so a step that touches two of them (a CONNECT arriving, a slow reader cut off) stays one
//! critical section as before.

mod heartbeat;
mod hooks;
mod inbox;
mod outbox;

use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::eio::Frame;
use crate::serve::ConnGuard;
use crate::types::{DisconnectReason, Farewell, Handshake, Transport};
use heartbeat::Heartbeat;
pub(crate) use hooks::{EventPacket, Host, Job, SockDyn};
pub(crate) use inbox::Inbound;
use inbox::Inbox;
use outbox::Outbox;

enum HandshakeSlot {
    /// Boxed so the connection carries a pointer, not the struct, once it is shared.
    Owned(Box<Handshake>),
    Shared(Arc<Handshake>),
}

struct State {
    /// The opening request: owned until the first namespace socket takes it, then shared
    /// with that socket (one copy of the headers per connection in the common case).
    handshake: HandshakeSlot,
    outbox: Outbox,
    // --- lifecycle ---
    closed: Option<DisconnectReason>,
    /// The client sent the close packet (a pending poll then gets noop, not close).
    closed_by_client: bool,
    /// Why the server closed, to tell the client; `farewell_sent` once a poll carried it.
    farewell: Option<Farewell>,
    farewell_sent: bool,
    transport: Transport,
    poll_pending: bool,
    post_pending: bool,
    /// A WebSocket for this polling session was accepted and its upgrade is not over.
    upgrade_pending: bool,
    heartbeat: Heartbeat,
    // --- admission ---
    /// This polling session's slot under the connection caps, released when it is upgraded
    /// to a WebSocket (which is counted as a connection) or removed. Boxed, like
    /// `client_slot`: most connections hold neither, and `Conn` stays in its 448-byte class.
    slot: Option<Box<ConnGuard>>,
    /// Behind a trusted proxy: the client address's slot under the per-address cap, for the
    /// session's whole life (the proxy's connections are not counted per address).
    client_slot: Option<Box<ConnGuard>>,
    inbox: Inbox,
}

/// One Engine.IO connection, shared by its transport task(s), its sockets and the session map.
pub(crate) struct Conn {
    /// Engine.IO session id.
    pub(crate) sid: Arc<str>,
    /// 3 or 4.
    pub(crate) eio: u8,
    /// v3 polling only: the client accepts the binary payload format (no `b64=1`).
    pub(crate) v3_binary_polling: bool,
    /// The server that owns the connection, seen through what the connection needs of it.
    pub(crate) host: Arc<dyn Host>,
    state: Mutex<State>,
    /// Namespace sockets of this connection (usually one): looked up for acks and dispatch.
    pub(crate) sockets: Mutex<Vec<Arc<dyn SockDyn>>>,
    /// Wakes the writer: frames queued, transport changed, closed.
    pub(crate) writer_wake: Notify,
    /// Wakes the dispatcher: inbox item ready or the previous job finished.
    pub(crate) dispatch_wake: Notify,
    /// `notify_waiters` when a job finishes or the connection closes.
    pub(crate) idle: Notify,
}

impl Conn {
    pub(crate) fn new(
        host: Arc<dyn Host>,
        eio: u8,
        transport: Transport,
        handshake: Handshake,
        v3_binary_polling: bool,
    ) -> Arc<Self> {
        let now = Instant::now();
        let state = State {
            handshake: HandshakeSlot::Owned(Box::new(handshake)),
            outbox: Outbox::default(),
            closed: None,
            closed_by_client: false,
            farewell: None,
            farewell_sent: false,
            transport,
            poll_pending: false,
            upgrade_pending: false,
            post_pending: false,
            heartbeat: Heartbeat::new(now, host.config()),
            slot: None,
            client_slot: None,
            inbox: Inbox::default(),
        };
        Arc::new(Self {
            sid: crate::types::random_id().into(),
            eio,
            v3_binary_polling,
            host,
            state: Mutex::new(state),
            sockets: Mutex::new(Vec::new()),
            writer_wake: Notify::new(),
            dispatch_wake: Notify::new(),
            idle: Notify::new(),
        })
    }

    /// The handshake a new namespace socket sees: the opening request with the namespace
    /// CONNECT's extra query pairs (socket.io 2.x). The first socket takes the request
    /// without copying it.
    pub(crate) fn handshake_for(&self, query: Vec<(String, String)>) -> Arc<Handshake> {
        let mut st = self.lock();
        let mut handshake = match &mut st.handshake {
            HandshakeSlot::Owned(h) => std::mem::replace(
                &mut **h,
                Handshake {
                    query: Vec::new(),
                    headers: Default::default(),
                    remote_addr: None,
                    client_addr: None,
                    eio: self.eio,
                },
            ),
            HandshakeSlot::Shared(shared) => {
                let shared = shared.clone();
                drop(st);
                if query.is_empty() {
                    return shared;
                }
                // Another namespace with query pairs of its own: a copy, made outside the lock.
                let mut handshake = Handshake::clone(&shared);
                handshake.query.extend(query);
                return Arc::new(handshake);
            }
        };
        handshake.query.extend(query);
        let shared = Arc::new(handshake);
        let owned = std::mem::replace(&mut st.handshake, HandshakeSlot::Shared(shared.clone()));
        drop(st);
        drop(owned);
        shared
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the state half-updated in a way that
        // matters more than losing the connection, so recover the guard.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The Engine.IO open packet for this connection.
    pub(crate) fn open_packet(&self, upgrades: bool) -> String {
        let config = self.host.config();
        let mut open = serde_json::json!({
            "sid": &*self.sid,
            "upgrades": if upgrades { vec!["websocket"] } else { vec![] },
            "pingInterval": config.ping_interval.as_millis() as u64,
            "pingTimeout": config.ping_timeout.as_millis() as u64,
        });
        if self.eio >= 4 {
            open["maxPayload"] = config.max_payload.into();
        }
        format!("0{open}")
    }

    // ----- lifecycle -----

    pub(crate) fn closed(&self) -> Option<DisconnectReason> {
        self.lock().closed
    }

    pub(crate) fn closed_by_client(&self) -> bool {
        self.lock().closed_by_client
    }

    /// Why the server cut the connection off, if it says.
    pub(crate) fn farewell(&self) -> Option<Farewell> {
        self.lock().farewell
    }

    /// A closed polling session whose client has not yet polled for the farewell: its next
    /// poll is answered with it.
    pub(crate) fn farewell_pending(&self) -> bool {
        let st = self.lock();
        st.farewell.is_some() && !st.farewell_sent && st.transport == Transport::Polling
    }

    /// The final close packet of a polling session: `1`, followed by the farewell if any
    /// (clients ignore the data of a close packet, but it shows in their transport logs).
    pub(crate) fn final_close_packet(&self) -> Frame {
        let farewell = {
            let mut st = self.lock();
            st.farewell_sent = true;
            st.farewell
        };
        self.idle.notify_waiters();
        match farewell {
            Some(farewell) => Frame::text(format!("1{}", farewell.reason(self.host.config()))),
            None => Frame::text("1"),
        }
    }

    pub(crate) fn transport(&self) -> Transport {
        self.lock().transport
    }

    pub(crate) fn set_transport(&self, transport: Transport) {
        let released = {
            let mut st = self.lock();
            st.transport = transport;
            // Now carried by a WebSocket connection, which the accept loop counts.
            if transport == Transport::WebSocket {
                st.slot.take()
            } else {
                None
            }
        };
        drop(released);
        self.wake_all();
    }

    /// Hold `slot` (a polling session's place under the connection caps) while polling.
    pub(crate) fn hold_slot(&self, slot: ConnGuard) {
        self.lock().slot = Some(Box::new(slot));
    }

    /// Hold `slot` (a proxied client's place under the per-address cap) for the session's life.
    pub(crate) fn hold_client_slot(&self, slot: ConnGuard) {
        self.lock().client_slot = Some(Box::new(slot));
    }

    /// Give the session's places under the connection caps back (it is gone).
    pub(crate) fn release_slot(&self) {
        let released = {
            let mut st = self.lock();
            (st.slot.take(), st.client_slot.take())
        };
        drop(released);
    }

    /// Whether a namespace socket is connected.
    pub(crate) fn has_sockets(&self) -> bool {
        !self
            .sockets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    fn wake_all(&self) {
        self.writer_wake.notify_waiters();
        self.writer_wake.notify_one();
        self.dispatch_wake.notify_one();
        self.idle.notify_waiters();
    }

    /// Close the connection (idempotent). Handlers see `reason` after every earlier event.
    pub(crate) fn close(self: &Arc<Self>, reason: DisconnectReason) {
        self.close_inner(reason, false);
    }

    /// The client sent the Engine.IO close packet.
    pub(crate) fn close_by_client(self: &Arc<Self>) {
        self.close_inner(DisconnectReason::TransportClose, true);
    }

    fn close_inner(self: &Arc<Self>, reason: DisconnectReason, by_client: bool) {
        {
            let mut st = self.lock();
            if st.closed.is_some() {
                return;
            }
            st.closed = Some(reason);
            st.closed_by_client = by_client;
            st.outbox.barrier = None;
        }
        tracing::debug!(sid = %self.sid, reason = reason.as_str(), "connection closing");
        self.wake_all();
        // Outside a runtime (only while it is being torn down) there is nobody left to notify.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(inbox::cleanup(self.clone()));
        }
    }

    /// A WebSocket upgrade of this session begins (`true`) or is over, either way (`false`).
    pub(crate) fn set_upgrade_pending(&self, pending: bool) {
        self.lock().upgrade_pending = pending;
        self.wake_all();
    }

    pub(crate) fn upgrade_pending(&self) -> bool {
        self.lock().upgrade_pending
    }

    /// Register a polling GET; false when one is already pending (a protocol violation).
    pub(crate) fn begin_poll(&self) -> bool {
        let mut st = self.lock();
        !std::mem::replace(&mut st.poll_pending, true)
    }
    pub(crate) fn end_poll(&self) {
        self.lock().poll_pending = false;
    }
    pub(crate) fn begin_post(&self) -> bool {
        let mut st = self.lock();
        !std::mem::replace(&mut st.post_pending, true)
    }
    pub(crate) fn end_post(&self) {
        self.lock().post_pending = false;
    }

    pub(crate) fn socket(&self, nsp: &str) -> Option<Arc<dyn SockDyn>> {
        let sockets = self.sockets.lock().unwrap_or_else(|e| e.into_inner());
        sockets.iter().find(|s| s.nsp() == nsp).cloned()
    }

    pub(super) fn remove_socket(&self, nsp: &str) -> Option<Arc<dyn SockDyn>> {
        let mut sockets = self.sockets.lock().unwrap_or_else(|e| e.into_inner());
        let index = sockets.iter().position(|s| s.nsp() == nsp)?;
        Some(sockets.swap_remove(index))
    }

    pub(crate) fn add_socket(&self, socket: Arc<dyn SockDyn>) {
        self.lock().heartbeat.connect_deadline = None;
        let mut sockets = self.sockets.lock().unwrap_or_else(|e| e.into_inner());
        // Most connections join one namespace: no spare capacity.
        sockets.reserve_exact(1);
        sockets.push(socket);
    }
}

#[cfg(all(test, target_pointer_width = "64"))]
mod tests {
    /// Idle memory per connection is a benchmark target: an `Arc<Conn>` (the struct and two
    /// counters) stays within jemalloc's 448-byte size class; one byte more costs 64 (the
    /// next class is 512), for every connection.
    #[test]
    fn a_connection_fits_the_448_byte_allocation_class() {
        let allocated = std::mem::size_of::<super::Conn>() + 2 * std::mem::size_of::<usize>();
        assert!(allocated <= 448, "Arc<Conn> takes {allocated} bytes");
    }
}
