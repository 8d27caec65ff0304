//! The socket layer: chat event handlers over the engine.
//!
//! Handlers are thin: they decode an event's arguments ([`wire`]), call the application
//! layer ([`crate::chat`]) and the domain it guards, and answer. The rules live in
//! [`crate::domain`], the shared state and its ordering in [`crate::chat`].
//!
//! # Layout
//! - this file: [`ChatHandler`], the engine [`Handler`] of namespace `/`, with every event
//!   registered in one `match`.
//! - [`tutorial`]: the classic tutorial's protocol (`addUser`/`sendChat` in, `updateChat`/
//!   `updateUsers` out, camelCase or lowercase).
//! - [`full`]: the full protocol of PROTOCOL.md section 2: connect, and what its event
//!   groups share; the groups: [`rooms`] (and typing), [`messages`] (room and direct
//!   messages, history) and [`sync`].
//! - [`identity`]: who a connecting client is (a session token or a free name), one
//!   [`identity::claim_identity`] for both protocols.
//! - [`presence`]: the opt-in to every user's presence.
//! - [`recovery`]: Socket.IO connection-state recovery backed by the durable history.
//! - [`wire`]: every request shape on the wire; a leaf the others import.

pub mod full;
pub mod identity;
pub mod messages;
pub mod presence;
pub mod recovery;
pub mod rooms;
pub mod sync;
pub mod tutorial;
pub mod wire;

use std::sync::Arc;

use engine::{ConnectError, DisconnectReason, Event, Handler, Socket, SocketId};
use serde_json::Value;
use tracing::debug;

use crate::chat::{Chat, Connection};
use wire::Spelling;

/// The engine handler of namespace `/`.
#[derive(Clone)]
pub struct ChatHandler {
    chat: Arc<Chat>,
}

impl ChatHandler {
    pub fn new(chat: Arc<Chat>) -> Self {
        Self { chat }
    }
}

impl Handler for ChatHandler {
    type Data = Connection;

    async fn on_connect(
        &self,
        socket: &Socket<Connection>,
        auth: &Value,
    ) -> Result<(), ConnectError> {
        // With a name or token: a full-protocol user. Without: a tutorial client, which
        // names itself later with `addUser`.
        full::connect(&self.chat, socket, auth).await
    }

    async fn may_restore(&self, pid: &str, id: &SocketId) -> bool {
        recovery::may_restore(&self.chat, pid, id).await
    }

    async fn on_event(&self, socket: &Socket<Connection>, event: Event) {
        let chat = &self.chat;
        let Event {
            name, args, ack, ..
        } = event;
        match name.as_str() {
            "addUser" => tutorial::add_user(chat, socket, Spelling::CamelCase, &args).await,
            "adduser" => tutorial::add_user(chat, socket, Spelling::Lowercase, &args).await,
            "sendChat" => tutorial::send_chat(chat, socket, Spelling::CamelCase, &args).await,
            "sendchat" => tutorial::send_chat(chat, socket, Spelling::Lowercase, &args).await,
            "room:list" => rooms::room_list(chat, socket, &args, ack),
            "room:create" => rooms::room_create(chat, socket, &args, ack).await,
            "room:join" => rooms::room_join(chat, socket, &args, ack).await,
            "room:leave" => rooms::room_leave(chat, socket, &args, ack).await,
            "room:members" => rooms::room_members(chat, socket, &args, ack),
            "message:send" => messages::message_send(chat, socket, &args, ack).await,
            "message:history" => messages::message_history(chat, socket, &args, ack).await,
            "sync" => sync::sync(chat, socket, &args, ack).await,
            "dm:send" => messages::dm_send(chat, socket, &args, ack).await,
            "dm:history" => messages::dm_history(chat, socket, &args, ack).await,
            "typing" => rooms::typing(chat, socket, &args),
            "presence:subscribe" => presence::subscribe(chat, socket, ack),
            "presence:unsubscribe" => presence::unsubscribe(chat, socket, ack),
            other => {
                debug!(socket = %socket.id(), event = other, "unknown event");
                full::answer(ack, Err(full::unknown_event()));
            }
        }
    }

    async fn on_disconnect(&self, socket: &Socket<Connection>, reason: DisconnectReason) {
        debug!(socket = %socket.id(), reason = reason.as_str(), "socket left");
        // The user's last messages are answered and delivered before it is announced gone.
        socket.data().wait_for_pipeline().await;
        let resumable = recovery::may_resume_after(reason)
            .then(|| recovery::snapshot(&self.chat, socket))
            .flatten();
        self.chat.disconnect(socket, resumable.is_some());
        // A tutorial user gone for good frees its name in the store at once.
        self.chat.release_departed_tutorial_names().await;
        if self.chat.forget_if_unconfirmed(socket.id()).await {
            return;
        }
        if let Some(snapshot) = resumable {
            recovery::remember_left(&self.chat, socket, snapshot).await;
        }
    }
}
