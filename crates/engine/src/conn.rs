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

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::eio::{Frame, Incoming, PacketType};
use crate::handler::{DisconnectReason, Event};
use crate::ns::SockDyn;
use crate::serve::ConnGuard;
use crate::server::ServerInner;
use crate::sio::{self, PacketKind};
use crate::socket::{EmitError, Handshake};

/// Inbox bound in packets; a reader stops reading (WebSocket) or waits (polling) beyond it.
const MAX_INBOX_PACKETS: usize = 128;
/// A polling POST may carry many packets at once; beyond this many waiting for their handler
/// the client is flooding and is disconnected.
const HARD_INBOX_PACKETS: usize = 1024;

/// Which transport currently carries the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    Polling,
    /// A WebSocket answered the probe; polling GETs are answered with noop.
    Upgrading,
    WebSocket,
}

/// A namespace-level packet waiting for the dispatcher.
#[derive(Debug)]
pub(crate) enum Inbound {
    Connect {
        nsp: String,
        auth: Value,
        /// v4 (socket.io 2.x) clients append `?query` to a namespace CONNECT.
        query: Vec<(String, String)>,
    },
    Disconnect {
        nsp: String,
    },
    /// The application called `Socket::disconnect`: run its `on_disconnect` in order.
    ServerDisconnect {
        nsp: String,
    },
    Event {
        nsp: String,
        event: Event,
    },
}

/// A BINARY_EVENT / BINARY_ACK waiting for its attachments.
struct PartialPacket {
    packet: sio::Packet,
    attachments: Vec<Bytes>,
    bytes: usize,
}

enum HandshakeSlot {
    /// Boxed so the connection carries a pointer, not the struct, once it is shared.
    Owned(Box<Handshake>),
    Shared(Arc<Handshake>),
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
    pub(crate) fn reason(self, config: &crate::EngineConfig) -> String {
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

struct State {
    // --- outbox ---
    /// Frames not yet handed to the transport; empty (unallocated) while idle.
    out: VecDeque<Frame>,
    out_bytes: usize,
    /// While a namespace CONNECT is being decided, frames queued after this index wait so the
    /// CONNECT reply can be inserted before them.
    barrier: Option<usize>,
    /// Over WebSocket, a CONNECT reply ends its batch: it is written alone, and what the
    /// handler emitted during `on_connect` follows in the next write, as the reference
    /// server does (clients that read one message per event rely on it).
    boundary: Option<usize>,
    /// The last batch taken ended at a CONNECT reply with more frames behind it.
    paused_after_reply: bool,
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
    // --- heartbeat ---
    next_ping_at: Instant,
    pong_deadline: Option<Instant>,
    /// Engine.IO v3: the client pings; we close if none arrives in time.
    last_client_ping: Instant,
    /// Until a namespace socket connects: when the session is closed for not connecting one
    /// (sooner while it has not even sent a CONNECT).
    connect_deadline: Option<Instant>,
    connect_sent: bool,
    // --- admission ---
    /// This polling session's slot under the connection caps, released when it is upgraded
    /// to a WebSocket (which is counted as a connection) or removed.
    slot: Option<ConnGuard>,
    // --- inbox ---
    inbox: VecDeque<Inbound>,
    busy: bool,
    partial: Option<Box<PartialPacket>>,
}

/// One Engine.IO connection, shared by its transport task(s), its sockets and the session map.
pub(crate) struct Conn {
    /// Engine.IO session id.
    pub(crate) sid: Arc<str>,
    /// 3 or 4.
    pub(crate) eio: u8,
    /// v3 polling only: the client accepts the binary payload format (no `b64=1`).
    pub(crate) v3_binary_polling: bool,
    pub(crate) server: Arc<ServerInner>,
    /// The opening request: owned until the first namespace socket takes it, then shared
    /// with that socket (one copy of the headers per connection in the common case).
    handshake: Mutex<HandshakeSlot>,
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
        server: Arc<ServerInner>,
        eio: u8,
        transport: Transport,
        handshake: Handshake,
        v3_binary_polling: bool,
    ) -> Arc<Self> {
        let now = Instant::now();
        let config = &server.config;
        let state = State {
            out: VecDeque::new(),
            out_bytes: 0,
            barrier: None,
            boundary: None,
            paused_after_reply: false,
            closed: None,
            closed_by_client: false,
            farewell: None,
            farewell_sent: false,
            transport,
            poll_pending: false,
            post_pending: false,
            next_ping_at: now + config.ping_interval,
            pong_deadline: None,
            last_client_ping: now,
            connect_deadline: Some(now + config.first_connect_timeout.min(config.connect_timeout)),
            connect_sent: false,
            slot: None,
            inbox: VecDeque::new(),
            busy: false,
            partial: None,
        };
        Arc::new(Self {
            sid: crate::server::random_id().into(),
            eio,
            v3_binary_polling,
            server,
            handshake: Mutex::new(HandshakeSlot::Owned(Box::new(handshake))),
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
        let mut slot = self.handshake.lock().unwrap_or_else(|e| e.into_inner());
        let mut handshake = match &mut *slot {
            HandshakeSlot::Owned(h) => std::mem::replace(
                &mut **h,
                Handshake {
                    query: Vec::new(),
                    headers: Default::default(),
                    remote_addr: None,
                    eio: self.eio,
                },
            ),
            HandshakeSlot::Shared(shared) => {
                if query.is_empty() {
                    return shared.clone();
                }
                Handshake::clone(shared)
            }
        };
        handshake.query.extend(query);
        let shared = Arc::new(handshake);
        if matches!(*slot, HandshakeSlot::Owned(_)) {
            *slot = HandshakeSlot::Shared(shared.clone());
        }
        shared
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the state half-updated in a way that
        // matters more than losing the connection, so recover the guard.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The Engine.IO open packet for this connection.
    pub(crate) fn open_packet(&self, upgrades: bool) -> String {
        let config = &self.server.config;
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

    // ----- outbox -----

    /// Queue frames (all or none). A volatile push is dropped when the outbox is not empty;
    /// a push that does not fit behind queued frames closes the connection as a slow reader.
    pub(crate) fn push(
        self: &Arc<Self>,
        frames: &[Frame],
        volatile: bool,
    ) -> Result<(), EmitError> {
        let size: usize = frames.iter().map(Frame::len).sum();
        let was_empty;
        {
            let mut st = self.lock();
            if st.closed.is_some() {
                return Err(EmitError::Closed);
            }
            if volatile && (!st.out.is_empty() || st.transport == Transport::Upgrading) {
                return Ok(());
            }
            // The bound is for a reader that falls behind: one large frame (a big ack or a
            // history page) into an empty outbox is accepted, whatever its size.
            if !st.out.is_empty() && st.out_bytes + size > self.server.config.max_outbound_bytes {
                drop(st);
                self.cut_off_slow_reader(Farewell::SlowReader);
                return Err(EmitError::Overflow);
            }
            was_empty = st.out.is_empty();
            st.out.extend(frames.iter().cloned());
            st.out_bytes += size;
        }
        // The writer takes the whole outbox each time it wakes, so only the push that makes
        // it non-empty needs to wake it: a broadcast burst costs one wake-up per connection,
        // not one per frame. (Frames held behind a CONNECT barrier are woken for by
        // `release_barrier`.)
        if was_empty {
            self.writer_wake.notify_one();
        }
        Ok(())
    }

    /// Disconnect a client that does not read what it is sent. What is queued could not be
    /// read in time anyway: it is dropped, and the client gets the frame it is in the middle
    /// of, then why it is cut off (and syncs later).
    pub(crate) fn cut_off_slow_reader(self: &Arc<Self>, farewell: Farewell) {
        {
            let mut st = self.lock();
            if st.closed.is_some() {
                return;
            }
            st.farewell = Some(farewell);
            st.out = VecDeque::new();
            st.out_bytes = 0;
            st.barrier = None;
        }
        tracing::debug!(sid = %self.sid, ?farewell, "disconnecting a slow reader");
        self.close(DisconnectReason::TransportError);
    }

    /// Queue an Engine.IO heartbeat packet. It goes ahead of a CONNECT barrier: a slow
    /// `on_connect` must not make the client miss its pings.
    fn push_control(self: &Arc<Self>, frame: Frame) {
        {
            let mut st = self.lock();
            if st.closed.is_some() {
                return;
            }
            st.out_bytes += frame.len();
            match st.barrier {
                Some(at) => {
                    st.out.insert(at, frame);
                    st.barrier = Some(at + 1);
                }
                None => st.out.push_back(frame),
            }
        }
        self.writer_wake.notify_one();
    }

    /// Take every frame that may be written now (those before a CONNECT barrier).
    pub(crate) fn take_batch(&self) -> VecDeque<Frame> {
        self.take_batch_reusing(VecDeque::new())
    }

    /// [`Self::take_batch`], leaving `spare` (an empty buffer, maybe with capacity) as the
    /// outbox: a busy writer alternates two buffers instead of allocating one per batch.
    pub(crate) fn take_batch_reusing(&self, spare: VecDeque<Frame>) -> VecDeque<Frame> {
        let mut st = self.lock();
        let batch = match (st.barrier, st.boundary.take()) {
            (None, Some(n)) if n < st.out.len() => {
                st.paused_after_reply = true;
                st.out.drain(..n).collect()
            }
            (None, _) => std::mem::replace(&mut st.out, spare),
            (Some(n), _) => {
                st.barrier = Some(0);
                st.out.drain(..n).collect()
            }
        };
        st.out_bytes -= batch.iter().map(Frame::len).sum::<usize>();
        batch
    }

    /// Whether the batch just taken was a CONNECT reply cut from the frames behind it (then
    /// the writer lets the reply reach the client before writing them).
    pub(crate) fn take_reply_pause(&self) -> bool {
        std::mem::take(&mut self.lock().paused_after_reply)
    }

    /// An idle connection gives back the outbox capacity a busy period left.
    pub(crate) fn release_idle_outbox(&self) {
        let mut st = self.lock();
        if st.out.is_empty() {
            st.out = VecDeque::new();
        }
    }

    pub(crate) fn has_writable_frames(&self) -> bool {
        let st = self.lock();
        match st.barrier {
            None => !st.out.is_empty(),
            Some(n) => n > 0,
        }
    }

    /// Start holding back frames queued from now on (a namespace CONNECT is being decided).
    pub(crate) fn set_barrier(&self) {
        let mut st = self.lock();
        st.barrier = Some(st.out.len());
    }

    /// Insert `reply` where the barrier stands and release the frames behind it.
    pub(crate) fn release_barrier(&self, reply: Frame) {
        {
            let mut st = self.lock();
            let at = st.barrier.take().unwrap_or(st.out.len()).min(st.out.len());
            if st.closed.is_none() {
                st.out_bytes += reply.len();
                st.out.insert(at, reply);
                if st.transport == Transport::WebSocket {
                    st.boundary = Some(at + 1);
                }
            }
        }
        self.writer_wake.notify_one();
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
            Some(farewell) => Frame::text(format!("1{}", farewell.reason(&self.server.config))),
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
        self.lock().slot = Some(slot);
    }

    /// Give the session's place under the connection caps back (it is gone).
    pub(crate) fn release_slot(&self) {
        let released = self.lock().slot.take();
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
            st.barrier = None;
        }
        tracing::debug!(sid = %self.sid, reason = reason.as_str(), "connection closing");
        self.wake_all();
        // Outside a runtime (only while it is being torn down) there is nobody left to notify.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(cleanup(self.clone()));
        }
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

    // ----- heartbeat -----

    /// Run due heartbeat and connect-timeout duties; returns when to call again, or `None`
    /// once the connection is closed.
    pub(crate) fn heartbeat_tick(self: &Arc<Self>) -> Option<Instant> {
        let now = Instant::now();
        let config = &self.server.config;
        let mut send_ping = false;
        let mut timeout = None;
        let next = {
            let mut st = self.lock();
            if st.closed.is_some() {
                return None;
            }
            if st.connect_deadline.is_some_and(|deadline| now >= deadline) {
                timeout = Some(DisconnectReason::TransportClose);
            }
            if self.eio >= 4 {
                match st.pong_deadline {
                    Some(deadline) if now >= deadline => {
                        timeout = Some(DisconnectReason::PingTimeout)
                    }
                    Some(_) => {}
                    None if now >= st.next_ping_at => {
                        send_ping = true;
                        // Counted from when the ping was due, not from when this timer ran
                        // (a little later): a client that stays silent for pingInterval +
                        // pingTimeout finds the session closed, as the protocol says. At least
                        // half the timeout remains, should this tick come very late.
                        let due = st.next_ping_at + config.ping_timeout;
                        st.pong_deadline = Some(due.max(now + config.ping_timeout / 2));
                        st.next_ping_at = now + config.ping_interval;
                    }
                    None => {}
                }
            } else if now >= st.last_client_ping + config.ping_interval + config.ping_timeout {
                timeout = Some(DisconnectReason::PingTimeout);
            }
            let beat = if self.eio >= 4 {
                st.pong_deadline.unwrap_or(st.next_ping_at)
            } else {
                st.last_client_ping + config.ping_interval + config.ping_timeout
            };
            st.connect_deadline.map_or(beat, |c| c.min(beat))
        };
        if let Some(reason) = timeout {
            self.close(reason);
            return None;
        }
        if send_ping {
            self.push_control(Frame::text("2"));
        }
        Some(next)
    }

    /// Restart the ping schedule (a transport takes over the heartbeat).
    pub(crate) fn reset_heartbeat(&self) {
        let mut st = self.lock();
        let now = Instant::now();
        if st.pong_deadline.is_none() {
            st.next_ping_at = st.next_ping_at.max(now);
        }
        st.last_client_ping = now;
    }

    // ----- reading -----

    /// Whether readers should wait before decoding more packets.
    pub(crate) fn inbox_full(&self) -> bool {
        self.lock().inbox.len() >= MAX_INBOX_PACKETS
    }

    /// Handle one packet from the client. An error means the connection must close.
    pub(crate) fn receive(self: &Arc<Self>, packet: Incoming<'_>) -> Result<(), ProtocolError> {
        match packet {
            Incoming::Text(PacketType::Message, data) => self.receive_sio(data),
            Incoming::Binary(data) => self.receive_attachment(data),
            Incoming::Text(PacketType::Pong, _) => {
                self.lock().pong_deadline = None;
                Ok(())
            }
            Incoming::Text(PacketType::Ping, data) => {
                // v3 clients ping to keep the session; v4 clients should not, but answering
                // is harmless and kinder to lenient client implementations.
                self.lock().last_client_ping = Instant::now();
                self.push_control(Frame::text(format!("3{data}")));
                Ok(())
            }
            Incoming::Text(PacketType::Close, _) => {
                self.close_by_client();
                Ok(())
            }
            Incoming::Text(PacketType::Noop, _) => Ok(()),
            Incoming::Text(PacketType::Open | PacketType::Upgrade, _) => {
                Err(ProtocolError("unexpected packet type"))
            }
        }
    }

    fn receive_sio(self: &Arc<Self>, data: &str) -> Result<(), ProtocolError> {
        let packet = sio::decode(data).map_err(|_| ProtocolError("invalid socket.io packet"))?;
        if self.lock().partial.is_some() {
            return Err(ProtocolError(
                "text packet while binary attachments are expected",
            ));
        }
        if matches!(packet.kind, PacketKind::BinaryEvent | PacketKind::BinaryAck)
            && packet.attachments > 0
        {
            let capacity = packet.attachments.min(16);
            self.lock().partial = Some(Box::new(PartialPacket {
                packet,
                attachments: Vec::with_capacity(capacity),
                bytes: 0,
            }));
            return Ok(());
        }
        self.complete_packet(packet, Vec::new())
    }

    fn receive_attachment(self: &Arc<Self>, data: Bytes) -> Result<(), ProtocolError> {
        let done = {
            let mut st = self.lock();
            let Some(partial) = st.partial.as_mut() else {
                return Err(ProtocolError("unexpected binary message"));
            };
            partial.bytes += data.len();
            if partial.bytes > self.server.config.max_payload {
                return Err(ProtocolError("attachments too large"));
            }
            partial.attachments.push(data);
            if partial.attachments.len() == partial.packet.attachments {
                st.partial.take()
            } else {
                None
            }
        };
        match done {
            Some(partial) => {
                let PartialPacket {
                    packet,
                    attachments,
                    ..
                } = *partial;
                self.complete_packet(packet, attachments)
            }
            None => Ok(()),
        }
    }

    fn complete_packet(
        self: &Arc<Self>,
        packet: sio::Packet,
        attachments: Vec<Bytes>,
    ) -> Result<(), ProtocolError> {
        let sio::Packet {
            kind,
            nsp,
            id,
            data,
            ..
        } = packet;
        let item = match kind {
            PacketKind::Ack | PacketKind::BinaryAck => {
                let args = match data {
                    Value::Array(args) => args,
                    _ => Vec::new(),
                };
                if let (Some(socket), Some(id)) = (self.socket(&nsp), id) {
                    socket.on_ack(id, args);
                }
                return Ok(());
            }
            PacketKind::Connect => {
                let auth = if self.eio >= 4 { data } else { Value::Null };
                let auth = if auth.is_null() {
                    Value::Object(Default::default())
                } else {
                    auth
                };
                match nsp.split_once('?') {
                    Some((path, query)) if self.eio < 4 => Inbound::Connect {
                        nsp: path.to_owned(),
                        auth,
                        query: crate::transport::parse_query(query),
                    },
                    _ => Inbound::Connect {
                        nsp,
                        auth,
                        query: Vec::new(),
                    },
                }
            }
            PacketKind::Disconnect => Inbound::Disconnect { nsp },
            PacketKind::Event | PacketKind::BinaryEvent => {
                let Value::Array(mut args) = data else {
                    return Err(ProtocolError("event payload is not an array"));
                };
                let Value::String(name) = args.remove(0) else {
                    return Err(ProtocolError("event name is not a string"));
                };
                let ack = id.map(|id| crate::handler::Ack::new(self.clone(), &nsp, id));
                Inbound::Event {
                    nsp,
                    event: Event {
                        name,
                        args,
                        attachments,
                        ack,
                    },
                }
            }
            PacketKind::ConnectError => return Err(ProtocolError("unexpected CONNECT_ERROR")),
        };
        if self.lock().inbox.len() >= HARD_INBOX_PACKETS {
            return Err(ProtocolError("too many packets waiting for their handlers"));
        }
        self.enqueue(item);
        Ok(())
    }

    /// A CONNECT arrived: the session now has until the full connect timeout (counted from
    /// its open) to get a socket connected.
    fn connect_received(&self) {
        let config = &self.server.config;
        let mut st = self.lock();
        if std::mem::replace(&mut st.connect_sent, true) {
            return;
        }
        let extra = config
            .connect_timeout
            .saturating_sub(config.first_connect_timeout);
        if let Some(deadline) = st.connect_deadline.as_mut() {
            *deadline += extra;
        }
    }

    /// Queue a namespace packet for the dispatcher.
    pub(crate) fn enqueue(&self, item: Inbound) {
        if matches!(item, Inbound::Connect { .. }) {
            self.connect_received();
        }
        self.lock().inbox.push_back(item);
        self.dispatch_wake.notify_one();
    }

    pub(crate) fn socket(&self, nsp: &str) -> Option<Arc<dyn SockDyn>> {
        let sockets = self.sockets.lock().unwrap_or_else(|e| e.into_inner());
        sockets.iter().find(|s| s.nsp() == nsp).cloned()
    }

    fn remove_socket(&self, nsp: &str) -> Option<Arc<dyn SockDyn>> {
        let mut sockets = self.sockets.lock().unwrap_or_else(|e| e.into_inner());
        let index = sockets.iter().position(|s| s.nsp() == nsp)?;
        Some(sockets.swap_remove(index))
    }

    pub(crate) fn add_socket(&self, socket: Arc<dyn SockDyn>) {
        self.lock().connect_deadline = None;
        let mut sockets = self.sockets.lock().unwrap_or_else(|e| e.into_inner());
        // Most connections join one namespace: no spare capacity.
        sockets.reserve_exact(1);
        sockets.push(socket);
    }

    // ----- dispatching -----

    /// Take the next inbox item if no other job runs. After close only the cleanup task
    /// (`after_close`) dispatches.
    pub(crate) fn next_job(self: &Arc<Self>, after_close: bool) -> Option<Job> {
        let mut st = self.lock();
        if st.busy || (st.closed.is_some() && !after_close) {
            return None;
        }
        let item = st.inbox.pop_front()?;
        st.busy = true;
        if st.inbox.is_empty() {
            // Idle connections keep no inbox allocation.
            st.inbox = VecDeque::new();
        }
        Some(Box::pin(dispatch(self.clone(), item)))
    }

    /// The current job finished: let the next one start.
    pub(crate) fn job_done(&self) {
        let more = {
            let mut st = self.lock();
            st.busy = false;
            !st.inbox.is_empty()
        };
        if more {
            self.dispatch_wake.notify_one();
        }
        self.idle.notify_waiters();
    }

    fn is_busy(&self) -> bool {
        self.lock().busy
    }
}

/// One dispatcher job: a handler call and its bookkeeping.
pub(crate) type Job = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

async fn dispatch(conn: Arc<Conn>, item: Inbound) {
    match item {
        Inbound::Connect { nsp, auth, query } => {
            if conn.socket(&nsp).is_some() {
                return; // duplicate CONNECT: ignored, as socket.io does
            }
            match conn.server.namespaces.get(nsp.as_str()) {
                Some(ns) => ns.clone().connect(conn.clone(), auth, query).await,
                None => {
                    let reply =
                        crate::ns::connect_error_frame(conn.eio, &nsp, "Invalid namespace", None);
                    let _ = conn.push(&[reply], false);
                }
            }
        }
        Inbound::Disconnect { nsp } => {
            if let Some(socket) = conn.remove_socket(&nsp) {
                socket
                    .on_disconnect(DisconnectReason::ClientNamespaceDisconnect)
                    .await;
            }
        }
        Inbound::ServerDisconnect { nsp } => {
            if let Some(socket) = conn.remove_socket(&nsp) {
                socket
                    .on_disconnect(DisconnectReason::ServerNamespaceDisconnect)
                    .await;
            }
        }
        Inbound::Event { nsp, event } => match conn.socket(&nsp) {
            Some(socket) => socket.on_event(event).await,
            None => {
                tracing::debug!(sid = %conn.sid, %nsp, "event for a namespace not joined: ignored")
            }
        },
    }
}

/// After close: run every queued packet, then `on_disconnect` of every socket, then forget
/// the session.
async fn cleanup(conn: Arc<Conn>) {
    loop {
        let idle = conn.idle.notified();
        tokio::pin!(idle);
        idle.as_mut().enable();
        if let Some(job) = conn.next_job(true) {
            job.await;
            conn.job_done();
        } else if conn.is_busy() {
            idle.await;
        } else {
            break;
        }
    }
    let reason = conn.closed().unwrap_or(DisconnectReason::TransportClose);
    let sockets = std::mem::take(&mut *conn.sockets.lock().unwrap_or_else(|e| e.into_inner()));
    for socket in sockets {
        socket.on_disconnect(reason).await;
    }
    // A polling client cut off with a farewell learns it from its next poll: keep the session
    // (its outbox empty) until then, for at most a heartbeat's timeout.
    let deadline = Instant::now() + conn.server.config.ping_timeout;
    while conn.farewell_pending() && !conn.server.shutting_down.load(Ordering::SeqCst) {
        let idle = conn.idle.notified();
        tokio::pin!(idle);
        idle.as_mut().enable();
        if !conn.farewell_pending() || tokio::time::timeout_at(deadline, idle).await.is_err() {
            break;
        }
    }
    conn.server.remove_session(&conn.sid);
}

/// How long a dispatcher may sleep when nothing is scheduled.
pub(crate) const FAR_FUTURE: Duration = Duration::from_secs(3600);
