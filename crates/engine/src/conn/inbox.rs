//! The inbox: what readers decoded (namespace packets waiting for their handler, a binary
//! packet waiting for its attachments), and the dispatcher that runs it one job at a time,
//! which keeps a socket's events in order. Its state is part of the connection's one
//! `State`, under the connection's one mutex.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;
use tokio::time::Instant;

use super::Conn;
use super::hooks::{EventPacket, Job};
use crate::eio::{Frame, Incoming, PacketType};
use crate::sio::{self, PacketKind};
use crate::types::{DisconnectReason, ProtocolError};

/// Inbox bound in packets; a reader stops reading (WebSocket) or waits (polling) beyond it.
const MAX_INBOX_PACKETS: usize = 128;
/// A polling POST may carry many packets at once; beyond this many waiting for their handler
/// the client is flooding and is disconnected.
const HARD_INBOX_PACKETS: usize = 1024;

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
        event: EventPacket,
    },
}

/// A BINARY_EVENT / BINARY_ACK waiting for its attachments.
pub(super) struct PartialPacket {
    packet: sio::Packet,
    attachments: Vec<Bytes>,
    bytes: usize,
}

/// The inbox part of the connection's state.
#[derive(Default)]
pub(super) struct Inbox {
    pub(super) queue: VecDeque<Inbound>,
    pub(super) busy: bool,
    pub(super) partial: Option<Box<PartialPacket>>,
}

impl Conn {
    // ----- reading -----

    /// Whether readers should wait before decoding more packets.
    pub(crate) fn inbox_full(&self) -> bool {
        self.lock().inbox.queue.len() >= MAX_INBOX_PACKETS
    }

    /// Handle one packet from the client. An error means the connection must close.
    pub(crate) fn receive(self: &Arc<Self>, packet: Incoming<'_>) -> Result<(), ProtocolError> {
        match packet {
            Incoming::Text(PacketType::Message, data) => self.receive_sio(data),
            Incoming::Binary(data) => self.receive_attachment(data),
            Incoming::Text(PacketType::Pong, _) => {
                self.lock().heartbeat.pong_deadline = None;
                Ok(())
            }
            Incoming::Text(PacketType::Ping, data) => {
                // v3 clients ping to keep the session; v4 clients should not, but answering
                // is harmless and kinder to lenient client implementations.
                self.lock().heartbeat.last_client_ping = Instant::now();
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
        if self.lock().inbox.partial.is_some() {
            return Err(ProtocolError(
                "text packet while binary attachments are expected",
            ));
        }
        if matches!(packet.kind, PacketKind::BinaryEvent | PacketKind::BinaryAck)
            && packet.attachments > 0
        {
            let capacity = packet.attachments.min(16);
            self.lock().inbox.partial = Some(Box::new(PartialPacket {
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
            let Some(partial) = st.inbox.partial.as_mut() else {
                return Err(ProtocolError("unexpected binary message"));
            };
            partial.bytes += data.len();
            if partial.bytes > self.host.config().max_payload {
                return Err(ProtocolError("attachments too large"));
            }
            partial.attachments.push(data);
            if partial.attachments.len() == partial.packet.attachments {
                st.inbox.partial.take()
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
                        query: crate::eio::parse_query(query),
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
                Inbound::Event {
                    nsp,
                    event: EventPacket {
                        name,
                        args,
                        attachments,
                        ack_id: id,
                    },
                }
            }
            PacketKind::ConnectError => return Err(ProtocolError("unexpected CONNECT_ERROR")),
        };
        if self.lock().inbox.queue.len() >= HARD_INBOX_PACKETS {
            return Err(ProtocolError("too many packets waiting for their handlers"));
        }
        self.enqueue(item);
        Ok(())
    }

    /// Queue a namespace packet for the dispatcher.
    pub(crate) fn enqueue(&self, item: Inbound) {
        if matches!(item, Inbound::Connect { .. }) {
            self.connect_received();
        }
        self.lock().inbox.queue.push_back(item);
        self.dispatch_wake.notify_one();
    }

    // ----- dispatching -----

    /// Take the next inbox item if no other job runs. After close only the cleanup task
    /// (`after_close`) dispatches.
    pub(crate) fn next_job(self: &Arc<Self>, after_close: bool) -> Option<Job> {
        let mut st = self.lock();
        if st.inbox.busy || (st.closed.is_some() && !after_close) {
            return None;
        }
        let item = st.inbox.queue.pop_front()?;
        st.inbox.busy = true;
        if st.inbox.queue.is_empty() {
            // Idle connections keep no inbox allocation.
            st.inbox.queue = VecDeque::new();
        }
        Some(Box::pin(dispatch(self.clone(), item)))
    }

    /// The current job finished: let the next one start.
    pub(crate) fn job_done(&self) {
        let more = {
            let mut st = self.lock();
            st.inbox.busy = false;
            !st.inbox.queue.is_empty()
        };
        if more {
            self.dispatch_wake.notify_one();
        }
        self.idle.notify_waiters();
    }

    fn is_busy(&self) -> bool {
        self.lock().inbox.busy
    }
}

async fn dispatch(conn: Arc<Conn>, item: Inbound) {
    match item {
        Inbound::Connect { nsp, auth, query } => {
            if conn.socket(&nsp).is_some() {
                return; // duplicate CONNECT: ignored, as socket.io does
            }
            conn.host.connect(conn.clone(), nsp, auth, query).await
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
pub(super) async fn cleanup(conn: Arc<Conn>) {
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
    let deadline = Instant::now() + conn.host.config().ping_timeout;
    while conn.farewell_pending() && !conn.host.shutting_down() {
        let idle = conn.idle.notified();
        tokio::pin!(idle);
        idle.as_mut().enable();
        if !conn.farewell_pending() || tokio::time::timeout_at(deadline, idle).await.is_err() {
            break;
        }
    }
    conn.host.remove_session(&conn.sid);
}
