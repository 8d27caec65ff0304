//! [`Socket`]: the application's handle on one client connected to one namespace, and
//! [`BroadcastOperator`] for emitting to rooms.
//!
//! Emits never block: they encode the packet and push it onto the connection's bounded outbox.
//! A volatile emit is dropped when the connection is not writable; any other emit that does not
//! fit disconnects that client (it is a slow reader) and is reported as [`EmitError::Overflow`].
//!
//! Connection-state recovery: with `EngineConfig::connection_state_recovery`, every CONNECT
//! reply carries a `pid`. A returning client sends `{pid, offset}` in its auth (visible in
//! [`Handshake::auth`]); its socket then gets the same id as before, and the application calls
//! [`Socket::restore_session`] in `on_connect` to answer with the same `pid` (the client then
//! reports `recovered`). Offsets are plain data: to make an event recoverable, emit it with its
//! offset (a JSON string) as the last argument, e.g. `socket.emit("chat", &(msg, "42"))`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::oneshot;

use crate::adapter::{BroadcastPacket, NsCore, Targets};
use crate::conn::{Conn, Inbound};
use crate::eio::Frame;
use crate::sio::{self, PacketKind};
pub use crate::types::{EmitError, Handshake, SocketId};

/// Bound on server-side acks awaiting an answer, per socket.
const MAX_PENDING_ACKS: usize = 1024;

/// Why a server-side `emit_with_ack` got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckError {
    /// No answer within the timeout.
    Timeout,
    /// The socket disconnected before answering.
    Closed,
    /// The emit itself failed.
    Emit(EmitError),
}

const CONNECTING: u8 = 0;
const CONNECTED: u8 = 1;
const DISCONNECTED: u8 = 2;

#[derive(Default)]
struct PendingAcks {
    next_id: u64,
    waiting: HashMap<u64, oneshot::Sender<Vec<Value>>>,
}

/// One client's socket in one namespace, with the application's data `D`.
pub struct Socket<D> {
    id: SocketId,
    ns: Arc<NsCore>,
    conn: Arc<Conn>,
    handshake: Arc<Handshake>,
    data: D,
    state: AtomicU8,
    /// Recovery private id, when `connection_state_recovery` is on.
    pid: Option<Arc<str>>,
    /// Set when `pid` is the one the client claimed in its CONNECT auth: the fresh pid the
    /// CONNECT reply carries instead if the session is not restored.
    unrestored_pid: Option<Arc<str>>,
    /// The client's pid was accepted by `restore_session`.
    restored: AtomicBool,
    /// Allocated on the first `emit_with_ack`.
    acks: Mutex<Option<Box<PendingAcks>>>,
}

impl<D: Default> Socket<D> {
    pub(crate) fn new(
        id: SocketId,
        ns: Arc<NsCore>,
        conn: Arc<Conn>,
        handshake: Arc<Handshake>,
        pid: Option<Arc<str>>,
        pid_claimed: bool,
    ) -> Self {
        Self {
            id,
            ns,
            conn,
            handshake,
            data: D::default(),
            state: AtomicU8::new(CONNECTING),
            pid,
            unrestored_pid: pid_claimed.then(|| crate::types::random_id().into()),
            restored: AtomicBool::new(false),
            acks: Mutex::new(None),
        }
    }
}

impl<D: Send + Sync + 'static> Socket<D> {
    /// The socket id.
    pub fn id(&self) -> &SocketId {
        &self.id
    }
    /// The namespace this socket belongs to, e.g. `/`.
    pub fn namespace(&self) -> &str {
        &self.ns.path
    }
    /// The handshake of the underlying connection.
    pub fn handshake(&self) -> &Handshake {
        &self.handshake
    }
    /// The application's per-socket data.
    pub fn data(&self) -> &D {
        &self.data
    }
    /// The Engine.IO session id of the underlying connection.
    pub fn engine_sid(&self) -> &str {
        &self.conn.sid
    }

    /// The connection this socket lives on (acks are answered through it).
    pub(crate) fn conn(&self) -> &Arc<Conn> {
        &self.conn
    }

    fn frame(&self, kind: PacketKind, attachments: usize, id: Option<u64>, json: &str) -> Frame {
        Frame::text(sio::encode(kind, &self.ns.prefix, attachments, id, json))
    }

    fn event_frames<A: Serialize + ?Sized>(
        &self,
        event: &str,
        args: &A,
        id: Option<u64>,
        attachments: Vec<Bytes>,
    ) -> Result<Vec<Frame>, EmitError> {
        let text = sio::encode_event(&self.ns.prefix, attachments.len(), id, event, args)
            .ok_or(EmitError::InvalidArgs)?;
        let mut frames = Vec::with_capacity(1 + attachments.len());
        frames.push(Frame::text(text));
        frames.extend(attachments.into_iter().map(Frame::Binary));
        Ok(frames)
    }

    fn push(&self, frames: &[Frame], volatile: bool) -> Result<(), EmitError> {
        if self.state.load(Ordering::Acquire) == DISCONNECTED {
            return Err(EmitError::Closed);
        }
        self.conn.push(frames, volatile)
    }

    /// Emit `event` to this client. `args` must serialize to a JSON array (a tuple, a slice or
    /// a `Vec`): its elements become the event's arguments.
    pub fn emit<A: Serialize + ?Sized>(&self, event: &str, args: &A) -> Result<(), EmitError> {
        let frames = self.event_frames(event, args, None, Vec::new())?;
        self.push(&frames, false)
    }
    /// Emit with binary attachments; `args` refer to them with socket.io placeholders
    /// `{"_placeholder":true,"num":N}`.
    pub fn emit_binary<A: Serialize + ?Sized>(
        &self,
        event: &str,
        args: &A,
        attachments: Vec<Bytes>,
    ) -> Result<(), EmitError> {
        let frames = self.event_frames(event, args, None, attachments)?;
        self.push(&frames, false)
    }
    /// Emit that may be dropped when the client is not ready to receive it (typing indicators).
    pub fn emit_volatile<A: Serialize + ?Sized>(&self, event: &str, args: &A) {
        if let Ok(frames) = self.event_frames(event, args, None, Vec::new()) {
            let _ = self.push(&frames, true);
        }
    }
    /// Emit and wait for the client's acknowledgement arguments.
    pub async fn emit_with_ack<A: Serialize + ?Sized>(
        &self,
        event: &str,
        args: &A,
        timeout: Duration,
    ) -> Result<Vec<Value>, AckError> {
        let (tx, rx) = oneshot::channel();
        let id = {
            let mut acks = self.acks.lock().unwrap_or_else(|e| e.into_inner());
            let acks = acks.get_or_insert_with(Default::default);
            if acks.waiting.len() >= MAX_PENDING_ACKS {
                return Err(AckError::Emit(EmitError::Overflow));
            }
            let id = acks.next_id;
            acks.next_id += 1;
            acks.waiting.insert(id, tx);
            id
        };
        let sent = self
            .event_frames(event, args, Some(id), Vec::new())
            .and_then(|f| self.push(&f, false));
        if let Err(e) = sent {
            self.forget_ack(id);
            return Err(AckError::Emit(e));
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(args)) => Ok(args),
            Ok(Err(_)) => Err(AckError::Closed),
            Err(_) => {
                self.forget_ack(id);
                Err(AckError::Timeout)
            }
        }
    }

    fn forget_ack(&self, id: u64) {
        if let Some(acks) = self.acks.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            acks.waiting.remove(&id);
        }
    }

    pub(crate) fn resolve_ack(&self, id: u64, args: Vec<Value>) {
        let waiter = self
            .acks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
            .and_then(|a| a.waiting.remove(&id));
        if let Some(waiter) = waiter {
            let _ = waiter.send(args);
        }
    }

    /// Join a room of this namespace (an index update, O(1)).
    pub fn join(&self, room: &str) {
        self.ns.join(&self.id, room);
    }
    /// Leave a room.
    pub fn leave(&self, room: &str) {
        self.ns.leave(&self.id, room);
    }
    /// The rooms this socket is in (its own id room excluded).
    pub fn rooms(&self) -> Vec<String> {
        self.ns.rooms_of(&self.id)
    }
    /// Broadcast to everyone in `room` except this socket.
    pub fn to(&self, room: &str) -> BroadcastOperator {
        self.broadcast().to(room)
    }
    /// An owned operator that emits to this socket only. It outlives the handler call, so work
    /// spawned off the handler (an event that opts out of ordering) can still answer; see
    /// [`crate::Handler`].
    pub fn emitter(&self) -> BroadcastOperator {
        BroadcastOperator::new(self.ns.clone()).to(&self.id.0)
    }
    /// Broadcast to every socket of the namespace except this one.
    pub fn broadcast(&self) -> BroadcastOperator {
        let mut op = BroadcastOperator::new(self.ns.clone());
        op.except_socket = Some(self.id.clone());
        op
    }
    /// Disconnect this socket from its namespace (the client sees "io server disconnect").
    /// Its `on_disconnect` runs after the event being handled, with
    /// [`crate::DisconnectReason::ServerNamespaceDisconnect`].
    pub fn disconnect(&self) {
        match self.state.swap(DISCONNECTED, Ordering::AcqRel) {
            DISCONNECTED => {}
            // During on_connect: the connect is simply not confirmed.
            CONNECTING => self.ns.remove_member(&self.id),
            _ => {
                let _ = self
                    .conn
                    .push(&[self.frame(PacketKind::Disconnect, 0, None, "")], false);
                self.ns.remove_member(&self.id);
                self.conn.enqueue(Inbound::ServerDisconnect {
                    nsp: self.ns.path.to_string(),
                });
            }
        }
    }
    /// Whether the socket is still connected.
    pub fn connected(&self) -> bool {
        self.state.load(Ordering::Acquire) != DISCONNECTED
    }

    /// Connection-state recovery: during `on_connect`, accept the client's `{pid}` so the
    /// CONNECT reply carries the same `pid` (the client then reports `recovered`; the socket
    /// id is already the one it had). Returns false when there is nothing to restore
    /// (recovery disabled, no valid pid in the auth, that socket id is still connected, or
    /// [`Handler::may_restore`](crate::Handler::may_restore) said no).
    pub fn restore_session(&self) -> bool {
        let ok = self.pid.is_some() && self.unrestored_pid.is_some();
        self.restored.store(ok, Ordering::Release);
        ok
    }

    /// The recovery private id this socket was made with (with `connection_state_recovery`):
    /// the one its client claimed, while `on_connect` may still restore it, or a fresh one.
    /// See [`Socket::client_pid`] for the one to record.
    pub fn pid(&self) -> Option<&str> {
        self.pid.as_deref()
    }

    /// The `pid` the client holds once connected (the CONNECT reply carries it): the one it
    /// claimed if restored, else a fresh one. Known once `on_connect` has decided whether
    /// to restore (before that, the fresh one for a claimed pid): record this one, not
    /// [`Socket::pid`], to recognise the client when it comes back.
    pub fn client_pid(&self) -> Option<&str> {
        match &self.unrestored_pid {
            // Not restored: the client must not believe it recovered.
            Some(fresh) if !self.restored.load(Ordering::Acquire) => Some(fresh),
            _ => self.pid.as_deref(),
        }
    }

    pub(crate) fn mark_connected(&self) {
        let _ =
            self.state
                .compare_exchange(CONNECTING, CONNECTED, Ordering::AcqRel, Ordering::Acquire);
    }

    pub(crate) fn mark_disconnected(&self) {
        self.state.store(DISCONNECTED, Ordering::Release);
        // Waiters of emit_with_ack see `Closed`.
        self.acks.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

/// A broadcast being built: target rooms, exceptions, volatility. The packet is encoded once
/// and the same bytes are queued to every recipient.
pub struct BroadcastOperator {
    /// The namespace, with its room index and the adapter that fans out beyond this process.
    ns: Arc<NsCore>,
    rooms: Vec<String>,
    except: Vec<String>,
    except_socket: Option<SocketId>,
    volatile: bool,
}

impl BroadcastOperator {
    pub(crate) fn new(ns: Arc<NsCore>) -> Self {
        Self {
            ns,
            rooms: Vec::new(),
            except: Vec::new(),
            except_socket: None,
            volatile: false,
        }
    }
    /// Add a target room (several rooms: the union, each socket once).
    pub fn to(mut self, room: &str) -> Self {
        self.rooms.push(room.to_owned());
        self
    }
    /// Exclude the sockets in `room` (a socket id is also a room).
    pub fn except(mut self, room: &str) -> Self {
        self.except.push(room.to_owned());
        self
    }
    /// Drop the packet for recipients that are not writable instead of disconnecting them.
    pub fn volatile(mut self) -> Self {
        self.volatile = true;
        self
    }
    /// Number of sockets the target rooms hold (all of the namespace when no room is set),
    /// exceptions not subtracted.
    pub fn len(&self) -> usize {
        if self.rooms.is_empty() {
            self.ns.len()
        } else {
            self.rooms.iter().map(|r| self.ns.room_size(r)).sum()
        }
    }
    /// Whether [`Self::len`] is zero.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Encode once and queue to every recipient. A recipient whose queue overflows is
    /// disconnected; that does not fail the broadcast.
    pub fn emit<A: Serialize + ?Sized>(self, event: &str, args: &A) -> Result<(), EmitError> {
        self.emit_binary(event, args, Vec::new())
    }
    /// Like [`Self::emit`], with binary attachments referenced by placeholders in `args`.
    pub fn emit_binary<A: Serialize + ?Sized>(
        self,
        event: &str,
        args: &A,
        attachments: Vec<Bytes>,
    ) -> Result<(), EmitError> {
        let text = sio::encode_event(&self.ns.prefix, attachments.len(), None, event, args)
            .ok_or(EmitError::InvalidArgs)?;
        let text_bytes = Bytes::from(text);
        let mut frames = Vec::with_capacity(1 + attachments.len());
        // `text_bytes` came from a String: the UTF-8 check cannot fail.
        frames.push(Frame::Text(
            tokio_tungstenite::tungstenite::Utf8Bytes::try_from(text_bytes.clone())
                .map_err(|_| EmitError::InvalidArgs)?,
        ));
        frames.extend(attachments.iter().cloned().map(Frame::Binary));
        self.ns.deliver(
            &Targets {
                rooms: &self.rooms,
                except: &self.except,
                except_socket: self.except_socket.as_ref(),
                volatile: self.volatile,
            },
            &frames,
        );
        let mut except = self.except;
        if let Some(id) = self.except_socket {
            except.push(id.to_string());
        }
        self.ns.adapter.publish(&BroadcastPacket {
            namespace: self.ns.path.to_string(),
            rooms: self.rooms,
            except,
            volatile: self.volatile,
            text: text_bytes,
            attachments,
        });
        Ok(())
    }
}
