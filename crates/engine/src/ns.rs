//! Namespaces: the type-erased bridge between the engine and each [`Handler`].
//!
//! The engine stores namespaces and sockets as trait objects ([`NsDyn`], and `conn`'s
//! `SockDyn` implemented here) so one connection can hold sockets of namespaces with different
//! handler types. Handler futures are boxed once per call and polled by the connection's
//! dispatcher, one at a time. This is where a decoded event becomes the handler's [`Event`].

use std::sync::Arc;

use serde_json::Value;

use crate::adapter::NsCore;
use crate::conn::{Conn, EventPacket, Job, SockDyn};
use crate::eio::Frame;
use crate::handler::{Ack, Event, Handler};
use crate::sio::{self, PacketKind};
use crate::socket::{Socket, SocketId};
use crate::types::{DisconnectReason, SocketIds};

/// A registered namespace, whatever its handler type.
pub(crate) trait NsDyn: Send + Sync {
    fn core(&self) -> &Arc<NsCore>;
    /// The job that runs the CONNECT of `conn` to this namespace: `on_connect`, then the
    /// reply. `ids` derives socket ids from recovery pids.
    fn connect(
        self: Arc<Self>,
        conn: Arc<Conn>,
        auth: Value,
        query: Vec<(String, String)>,
        ids: &SocketIds,
    ) -> Job;
}

pub(crate) struct Namespace<H: Handler> {
    pub(crate) core: Arc<NsCore>,
    pub(crate) handler: H,
}

struct NsSocket<H: Handler> {
    ns: Arc<Namespace<H>>,
    socket: Arc<Socket<H::Data>>,
}

/// CONNECT_ERROR for `nsp`: v5 sends `{"message":...}` (plus `data`), v4 a JSON string.
pub(crate) fn connect_error_frame(
    eio: u8,
    nsp: &str,
    message: &str,
    data: Option<&Value>,
) -> Frame {
    let json = if eio >= 4 {
        let mut body = serde_json::json!({ "message": message });
        if let Some(data) = data {
            body["data"] = data.clone();
        }
        body.to_string()
    } else {
        Value::String(message.to_owned()).to_string()
    };
    Frame::text(sio::encode(
        PacketKind::ConnectError,
        &sio::nsp_prefix(nsp),
        0,
        None,
        &json,
    ))
}

impl<H: Handler> NsDyn for Namespace<H> {
    fn core(&self) -> &Arc<NsCore> {
        &self.core
    }

    fn connect(
        self: Arc<Self>,
        conn: Arc<Conn>,
        auth: Value,
        query: Vec<(String, String)>,
        ids: &SocketIds,
    ) -> Job {
        // Decided as the job is made (the dispatcher awaits it at once), and a claimed id
        // checked again right before it becomes a member, after `may_restore`.
        let recovery = conn.host.config().connection_state_recovery;
        let identity = socket_identity(&conn, &self.core, &auth, recovery, ids);
        Box::pin(async move {
            let core = self.core.clone();
            let (id, pid, pid_claimed) = match identity {
                Identity::Fixed(id, pid) => (id, pid, false),
                Identity::Claimed { claimed, fresh } => {
                    // Asked before the socket is made: a socket that will not be restored
                    // gets an id and pid of its own (not those of the claimed session). The
                    // claimed id may have been taken by another connect meanwhile.
                    let (id, pid) = &claimed;
                    if self.handler.may_restore(pid, id).await && !core.has_member(id) {
                        (claimed.0, Some(claimed.1), true)
                    } else {
                        (fresh.0, Some(fresh.1), false)
                    }
                }
            };
            let handshake = conn.handshake_for(query);
            let socket = Arc::new(Socket::new(
                id,
                core.clone(),
                conn.clone(),
                handshake,
                pid,
                pid_claimed,
            ));
            core.add_member(socket.id(), conn.clone());
            conn.set_barrier();
            let result = self.handler.on_connect(&socket, &auth).await;
            match result {
                Ok(()) if socket.connected() => {
                    // Registered even if the connection closed meanwhile: the cleanup then
                    // runs this socket's on_disconnect, so every accepted connect gets one.
                    socket.mark_connected();
                    let reply = connect_reply(&conn, &core, &socket);
                    conn.add_socket(Arc::new(NsSocket {
                        ns: self.clone(),
                        socket,
                    }));
                    conn.release_barrier(reply);
                }
                Ok(()) => {
                    // `disconnect()` during on_connect: the client sees the connect, then the
                    // disconnect, as with socket.io; the handler sees its on_disconnect.
                    conn.release_barrier(connect_reply(&conn, &core, &socket));
                    let bye = sio::encode(PacketKind::Disconnect, &core.prefix, 0, None, "");
                    let _ = conn.push(&[Frame::text(bye)], false);
                    self.handler
                        .on_disconnect(&socket, DisconnectReason::ServerNamespaceDisconnect)
                        .await;
                }
                Err(refusal) => {
                    core.remove_member(socket.id());
                    socket.mark_disconnected();
                    let frame = connect_error_frame(
                        conn.eio,
                        &core.path,
                        &refusal.message,
                        refusal.data.as_ref(),
                    );
                    conn.release_barrier(frame);
                }
            }
        })
    }
}

/// The socket id and recovery pid of a new socket.
enum Identity {
    /// Without recovery (no pid), or with a fresh pid.
    Fixed(SocketId, Option<Arc<str>>),
    /// A returning client's claimed pid (and the id derived from it), and a fresh pid and id
    /// in case its session is not restored.
    Claimed {
        claimed: (SocketId, Arc<str>),
        fresh: (SocketId, Arc<str>),
    },
}

/// The socket id (and recovery pid) for a new socket.
fn socket_identity(
    conn: &Conn,
    core: &NsCore,
    auth: &Value,
    recovery: bool,
    ids: &SocketIds,
) -> Identity {
    if conn.eio < 4 {
        // socket.io 2.x clients compute their id as `nsp#engine-sid` (or the engine sid on `/`).
        let id = if &*core.path == "/" {
            conn.sid.to_string()
        } else {
            format!("{}#{}", core.path, conn.sid)
        };
        return Identity::Fixed(SocketId(id.into()), None);
    }
    if !recovery {
        return Identity::Fixed(SocketId(crate::types::random_id().into()), None);
    }
    // Recovery: a returning client presents its private id; its public id derives from it,
    // so the same pid yields the same socket id (unless that id is still connected).
    let fresh: Arc<str> = crate::types::random_id().into();
    let fresh = (ids.derive(&fresh), fresh);
    let claimed = auth
        .get("pid")
        .and_then(Value::as_str)
        .filter(|p| crate::types::looks_like_id(p));
    if let Some(pid) = claimed {
        let id = ids.derive(pid);
        if !core.has_member(&id) {
            return Identity::Claimed {
                claimed: (id, pid.into()),
                fresh,
            };
        }
    }
    Identity::Fixed(fresh.0, Some(fresh.1))
}

fn connect_reply<D: Send + Sync + 'static>(
    conn: &Conn,
    core: &NsCore,
    socket: &Socket<D>,
) -> Frame {
    if conn.eio < 4 {
        return Frame::text(sio::encode(PacketKind::Connect, &core.prefix, 0, None, ""));
    }
    let mut body = serde_json::json!({ "sid": socket.id().as_str() });
    if let Some(pid) = socket.client_pid() {
        body["pid"] = Value::String(pid.to_owned());
    }
    Frame::text(sio::encode(
        PacketKind::Connect,
        &core.prefix,
        0,
        None,
        &body.to_string(),
    ))
}

impl<H: Handler> SockDyn for NsSocket<H> {
    fn nsp(&self) -> &str {
        &self.ns.core.path
    }

    fn on_event(self: Arc<Self>, packet: EventPacket) -> Job {
        Box::pin(async move {
            if self.socket.connected() {
                let EventPacket {
                    name,
                    args,
                    attachments,
                    ack_id,
                } = packet;
                let ack = ack_id.map(|id| {
                    Ack::new(self.socket.conn().clone(), self.ns.core.prefix.clone(), id)
                });
                let event = Event {
                    name,
                    args,
                    attachments,
                    ack,
                };
                self.ns.handler.on_event(&self.socket, event).await;
            }
        })
    }

    fn on_disconnect(self: Arc<Self>, reason: DisconnectReason) -> Job {
        Box::pin(async move {
            self.ns.core.remove_member(self.socket.id());
            self.socket.mark_disconnected();
            self.ns.handler.on_disconnect(&self.socket, reason).await;
        })
    }

    fn on_ack(&self, id: u64, args: Vec<Value>) {
        self.socket.resolve_ack(id, args);
    }
}
