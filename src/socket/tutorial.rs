//! The classic Socket.IO tutorial's protocol, as an adapter over the [`Lobby`] rules.
//!
//! In: `addUser(name)` / `sendChat(text)`, or their lowercase spellings `adduser` /
//! `sendchat`. Out: `updateChat(speaker, text)` and `updateUsers({name: name, ...})`, spelled
//! the way the receiving socket spelled its `addUser` (so camelCase and lowercase clients chat
//! together). Either send spelling is accepted from anyone. Errors go to the offending socket
//! only, as `updateChat("Server", reason)`: the tutorial page shows nothing else.
//!
//! Named tutorial sockets sit in one engine room per spelling, so a notice for every member is
//! one encode-once broadcast per spelling.

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value;
use tracing::{debug, warn};

use super::{Chat, Connection};
use crate::domain::{Audience, DomainError, ErrorCode, Notice, Outgoing, SERVER_NAME, UserName};
use engine::{EmitError, Socket, SocketId};

/// How a tutorial client spells the events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spelling {
    /// `addUser`, `sendChat`, `updateChat`, `updateUsers` (the tutorial's server).
    CamelCase,
    /// `adduser`, `sendchat`, `updatechat`, `updateusers` (the tutorial's final page).
    Lowercase,
}

impl Spelling {
    const ALL: [Spelling; 2] = [Spelling::CamelCase, Spelling::Lowercase];

    /// The engine room holding the named sockets that use this spelling.
    fn room(self) -> &'static str {
        match self {
            Self::CamelCase => "tutorial:camelCase",
            Self::Lowercase => "tutorial:lowercase",
        }
    }

    fn update_chat(self) -> &'static str {
        match self {
            Self::CamelCase => "updateChat",
            Self::Lowercase => "updatechat",
        }
    }

    fn update_users(self) -> &'static str {
        match self {
            Self::CamelCase => "updateUsers",
            Self::Lowercase => "updateusers",
        }
    }
}

/// `addUser(name)`.
pub fn add_user(chat: &Chat, socket: &Socket<Connection>, used: Spelling, args: &[Value]) {
    let name = match text_argument(args, "a name must be text") {
        Ok(name) => name,
        Err(error) => return refuse(socket, used, &error),
    };
    let mut lobby = chat.lobby();
    match lobby.add_user(socket.id(), name) {
        Ok(notices) => {
            // Join before delivering, under the lock, so the newcomer is in its spelling's
            // room for every later broadcast and gets its own greeting in its spelling.
            if !notices.is_empty() {
                socket.data().set_spelling(Some(used));
                socket.join(used.room());
            }
            deliver(socket, &notices);
        }
        Err(error) => {
            drop(lobby);
            refuse(socket, used, &error);
        }
    }
}

/// `sendChat(text)`.
pub fn send_chat(chat: &Chat, socket: &Socket<Connection>, used: Spelling, args: &[Value]) {
    let text = match text_argument(args, "a message must be text") {
        Ok(text) => text,
        Err(error) => return refuse(socket, used, &error),
    };
    let lobby = chat.lobby();
    match lobby.send_chat(socket.id(), text) {
        Ok(notices) => deliver(socket, &notices),
        Err(error) => {
            drop(lobby);
            refuse(socket, used, &error);
        }
    }
}

/// The socket is gone, whether it said goodbye or its connection dropped.
pub fn disconnect(chat: &Chat, socket: &Socket<Connection>) {
    let mut lobby = chat.lobby();
    let notices = lobby.disconnect(socket.id());
    socket.data().set_spelling(None);
    for spelling in Spelling::ALL {
        socket.leave(spelling.room());
    }
    deliver(socket, &notices);
}

/// The first argument as text, or an `invalid_argument` error (objects, arrays, numbers and
/// a missing argument are refused rather than coerced, unlike the Node tutorial which dies on
/// `{"toString": ...}`).
fn text_argument<'a>(args: &'a [Value], complaint: &str) -> Result<&'a str, DomainError> {
    match args.first() {
        Some(Value::String(text)) => Ok(text),
        _ => Err(DomainError::new(ErrorCode::InvalidArgument, complaint)),
    }
}

/// Tell one socket why its request was refused, in the spelling it is answered in.
fn refuse(socket: &Socket<Connection>, used: Spelling, error: &DomainError) {
    debug!(socket = %socket.id(), code = error.code().as_str(), "refused");
    let spelling = socket.data().spelling().unwrap_or(used);
    emit_checked(
        socket.id(),
        socket.emit(spelling.update_chat(), &(SERVER_NAME, error.message())),
    );
}

/// Turn the domain's notices into emits. `socket` is the one whose action produced them;
/// every other member is reached through the per-spelling rooms (which exclude `socket`).
fn deliver(socket: &Socket<Connection>, notices: &[Outgoing<SocketId>]) {
    let own = socket.data().spelling();
    for Outgoing { to, notice } in notices {
        let to_others = match to {
            Audience::Only(_) => false,
            Audience::Members | Audience::MembersExcept(_) => true,
        };
        let to_self = match to {
            Audience::Only(id) => id == socket.id(),
            Audience::Members => true,
            Audience::MembersExcept(id) => id != socket.id(),
        };
        if to_others {
            for spelling in Spelling::ALL {
                let room = socket.to(spelling.room());
                let sent = match notice {
                    Notice::Chat { from, text } => {
                        room.emit(spelling.update_chat(), &(from.as_str(), text.as_str()))
                    }
                    Notice::Users(names) => room.emit(spelling.update_users(), &(UsersMap(names),)),
                };
                if let Err(error) = sent {
                    warn!(room = spelling.room(), ?error, "broadcast failed");
                }
            }
        }
        // Only a member (a socket with a spelling) is told anything here.
        if let (true, Some(spelling)) = (to_self, own) {
            let sent = match notice {
                Notice::Chat { from, text } => {
                    socket.emit(spelling.update_chat(), &(from.as_str(), text.as_str()))
                }
                Notice::Users(names) => socket.emit(spelling.update_users(), &(UsersMap(names),)),
            };
            emit_checked(socket.id(), sent);
        }
    }
}

fn emit_checked(id: &SocketId, sent: Result<(), EmitError>) {
    match sent {
        Ok(()) => {}
        // Gone already: its disconnect handler announces it.
        Err(EmitError::Closed) => debug!(socket = %id, "emit to a closed socket"),
        // The engine has disconnected it as a slow reader; same as above.
        Err(error) => warn!(socket = %id, ?error, "emit failed"),
    }
}

/// The tutorial's user list: an object whose keys and values are the names, in arrival order.
struct UsersMap<'a>(&'a [UserName]);

impl Serialize for UsersMap<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for name in self.0 {
            map.serialize_entry(name.as_str(), name.as_str())?;
        }
        map.end()
    }
}
