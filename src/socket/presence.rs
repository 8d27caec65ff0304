//! `presence:subscribe` / `presence:unsubscribe`: a socket asks for (or stops) every user's
//! `presence`. Without it a socket hears the presence of the users it shares a room with
//! other than `general` (see [`crate::domain::Audience::Watchers`]): everyone is in
//! `general`, and announcing every arrival to everyone costs O(users²) frames.

use engine::{Ack, Socket};
use serde_json::Value;

use super::full::answer;
use crate::chat::{Chat, Connection};
use crate::domain::{DomainError, ErrorCode, Protocol};

/// `presence:subscribe {}`: from now on this socket receives every user's `presence`.
pub fn subscribe(chat: &Chat, socket: &Socket<Connection>, ack: Option<Ack>) {
    let result = full_user(chat, socket).map(|()| {
        chat.presence().subscribe(socket);
        Value::Null
    });
    answer(ack, result);
}

/// `presence:unsubscribe {}`: back to the presence of the users it shares a room with.
pub fn unsubscribe(chat: &Chat, socket: &Socket<Connection>, ack: Option<Ack>) {
    let result = full_user(chat, socket).map(|()| {
        chat.presence().unsubscribe(socket);
        Value::Null
    });
    answer(ack, result);
}

fn full_user(chat: &Chat, socket: &Socket<Connection>) -> Result<(), DomainError> {
    match chat.community().protocol_of(socket.id()) {
        Some(Protocol::Full) => Ok(()),
        Some(Protocol::Tutorial) => Err(DomainError::new(
            ErrorCode::NotSupported,
            "tutorial clients receive no presence events",
        )),
        None => Err(DomainError::new(
            ErrorCode::NameRequired,
            "connect with a name or token first",
        )),
    }
}
