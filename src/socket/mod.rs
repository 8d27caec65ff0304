//! The socket layer: chat event handlers over the engine.
//!
//! Handlers are thin: they pick the arguments out of an event, call the domain ([`Lobby`]),
//! and turn the notices it returns into emits. The rules live in [`crate::domain`].
//!
//! # Layout
//! - this file: [`ChatHandler`], the engine [`Handler`] of namespace `/`, with every event it
//!   understands registered in one `match`.
//! - [`tutorial`]: the classic tutorial's protocol (`addUser`/`sendChat` in, `updateChat`/
//!   `updateUsers` out, in camelCase or lowercase).

pub mod tutorial;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use engine::{ConnectError, DisconnectReason, Event, Handler, Socket, SocketId};
use serde_json::Value;
use tracing::debug;

use crate::domain::{Limits, Lobby};
use tutorial::Spelling;

/// State shared by every socket of the chat.
#[derive(Debug)]
pub struct Chat {
    /// The default room's members and rules. A std `Mutex`: every critical section is short
    /// and synchronous (domain call + non-blocking emits), never held across an `.await`.
    /// Emitting while holding it is deliberate: every member then sees roster changes and
    /// messages in one and the same order.
    lobby: Mutex<Lobby<SocketId>>,
}

impl Chat {
    pub fn new(limits: Limits) -> Self {
        Self {
            lobby: Mutex::new(Lobby::new(limits)),
        }
    }

    /// Lock the lobby. A panic while it was held cannot leave it half-updated (domain calls
    /// mutate only after validating), so a poisoned lock is still safe to use.
    fn lobby(&self) -> MutexGuard<'_, Lobby<SocketId>> {
        self.lobby.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Number of people who have chosen a name.
    pub fn member_count(&self) -> usize {
        self.lobby().member_count()
    }
}

/// Per-socket state, created empty when a socket connects.
#[derive(Debug, Default)]
pub struct Connection {
    /// The event spelling this socket used to add itself; `None` until it has a name.
    spelling: Mutex<Option<Spelling>>,
}

impl Connection {
    fn spelling(&self) -> Option<Spelling> {
        *self.spelling.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set_spelling(&self, spelling: Option<Spelling>) {
        *self.spelling.lock().unwrap_or_else(PoisonError::into_inner) = spelling;
    }
}

/// The engine handler of namespace `/`.
#[derive(Debug, Clone)]
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
        _socket: &Socket<Connection>,
        _auth: &Value,
    ) -> Result<(), ConnectError> {
        // Tutorial clients name themselves later with `addUser`.
        Ok(())
    }

    async fn on_event(&self, socket: &Socket<Connection>, event: Event) {
        let chat = &self.chat;
        match event.name.as_str() {
            "addUser" => tutorial::add_user(chat, socket, Spelling::CamelCase, &event.args),
            "adduser" => tutorial::add_user(chat, socket, Spelling::Lowercase, &event.args),
            "sendChat" => tutorial::send_chat(chat, socket, Spelling::CamelCase, &event.args),
            "sendchat" => tutorial::send_chat(chat, socket, Spelling::Lowercase, &event.args),
            other => debug!(socket = %socket.id(), event = other, "ignored unknown event"),
        }
    }

    async fn on_disconnect(&self, socket: &Socket<Connection>, reason: DisconnectReason) {
        debug!(socket = %socket.id(), reason = reason.as_str(), "socket left");
        tutorial::disconnect(&self.chat, socket);
    }
}
