//! Turning the domain's [`Outgoing`] notices into engine emits, through the engine rooms of
//! [`super::rooms`].

use std::sync::{Mutex, PoisonError};

use engine::{BroadcastOperator, EmitError, Socket, SocketId};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::json;
use tracing::{debug, warn};

use super::connection::Connection;
use super::outgoing::{Spelling, WireMessage, offset, recovery_offset};
use super::presence::Presence;
use super::rooms::{FULL_ROOM, user_room};
use crate::domain::{Audience, Community, Notice, Outgoing, Place, RoomName, UserId, UserName};
use crate::store::StoredMessage;

/// The tutorial's latest user list, waiting to be encoded and sent outside the community
/// lock. Only the latest list matters, so a list not sent yet is replaced by a newer one:
/// a burst of arrivals or departures costs one encoding, not one per user.
#[derive(Default)]
pub struct UsersOutbox {
    latest: Mutex<Option<Vec<UserName>>>,
    ready: tokio::sync::Notify,
}

impl UsersOutbox {
    /// Queue `names` as the list to send (replacing any list not sent yet). Cheap: call it
    /// with the community locked, so lists are queued in the order of the changes.
    pub fn put(&self, names: Vec<UserName>) {
        *self.latest.lock().unwrap_or_else(PoisonError::into_inner) = Some(names);
        self.ready.notify_one();
    }

    /// Wait for a list to send, and take it.
    pub async fn next(&self) -> Vec<UserName> {
        loop {
            if let Some(names) = self.take() {
                return names;
            }
            self.ready.notified().await;
        }
    }

    fn take(&self) -> Option<Vec<UserName>> {
        self.latest
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

/// Send a user list to every named tutorial socket, in its spelling. Called by one task
/// only (see `Chat::start`), without the community lock: the lists go out in order.
pub fn send_users(io: &engine::SocketIo, names: &[UserName]) {
    for spelling in Spelling::ALL {
        let Some(op) = namespace(io) else { return };
        let op = op.to(spelling.room());
        if op.is_empty() {
            continue;
        }
        report(op.emit(spelling.update_users(), &(UsersMap(names),)));
    }
}

/// With connection-state recovery on, the position of `general`'s stream, `seq:ts:general`
/// (see `Chat::general_position`): the offset of a tutorial `updateChat` that is no
/// stored message (`Server` notices). The official client takes the last string argument of
/// every event as its offset, so with recovery on every `updateChat` must carry one.
pub type Position<'a> = Option<&'a dyn Fn() -> String>;

/// Deliver `notices`. `io` reaches every socket; `actor` is the socket whose action produced
/// them (the only one an `Audience::Socket` can name). Call with the community locked, so
/// every client sees notices in one order. The tutorial's user lists go to `users`, to be
/// encoded and sent after the lock is released (a list holds every name present). With
/// `position` (recovery on), events carry their offsets.
pub fn deliver(
    io: &engine::SocketIo,
    community: &Community<SocketId>,
    actor: Option<&Socket<Connection>>,
    notices: &[Outgoing<SocketId>],
    position: Position<'_>,
    users: &UsersOutbox,
    presence: &dyn Presence,
) {
    let offsets = position.is_some();
    for Outgoing { to, notice } in notices {
        match to {
            Audience::Tutorial { except: None } if matches!(notice, Notice::Users(_)) => {
                if let Notice::Users(names) = notice {
                    users.put(names.clone());
                }
            }
            Audience::Socket(id) => {
                if let Some(socket) = actor.filter(|socket| socket.id() == id) {
                    to_socket(socket, notice, position);
                }
            }
            Audience::Tutorial { except } => {
                let offset = tutorial_offset(notice, position);
                for spelling in Spelling::ALL {
                    let Some(mut op) = namespace(io) else { return };
                    op = op.to(spelling.room());
                    if let Some(id) = except {
                        op = op.except(id.as_str());
                    }
                    report(tutorial_emit(op, spelling, notice, offset.as_deref()));
                }
            }
            Audience::Room(room) => to_room(io, community, room, None, notice, offsets),
            Audience::RoomExcept(room, id) => {
                to_room(io, community, room, Some(id), notice, offsets);
            }
            Audience::User(user) => {
                let Some(op) = namespace(io) else { return };
                report(full_emit(
                    op.to(&user_room(user)),
                    notice,
                    Some(user),
                    offsets,
                ));
            }
            Audience::Everyone => {
                let Some(op) = namespace(io) else { return };
                report(full_emit(op.to(FULL_ROOM), notice, None, offsets));
            }
            Audience::Watchers(rooms) => {
                let Some(op) = namespace(io) else { return };
                let op = presence.watchers(op, community, rooms);
                report(full_emit(op, notice, None, offsets));
            }
        }
    }
}

fn namespace(io: &engine::SocketIo) -> Option<BroadcastOperator> {
    let op = io.of("/");
    if op.is_none() {
        warn!("namespace / is not registered");
    }
    op
}

fn to_room(
    io: &engine::SocketIo,
    community: &Community<SocketId>,
    room: &RoomName,
    except: Option<&SocketId>,
    notice: &Notice,
    offsets: bool,
) {
    let Some(mut op) = namespace(io) else { return };
    if *room == RoomName::general() {
        op = op.to(FULL_ROOM);
    } else {
        let members = community.member_ids(room);
        if members.is_empty() {
            return;
        }
        for user in members {
            op = op.to(&user_room(user));
        }
    }
    if let Some(id) = except {
        op = op.except(id.as_str());
    }
    report(full_emit(op, notice, None, offsets));
}

/// A notice for the acting socket itself, in its protocol.
fn to_socket(socket: &Socket<Connection>, notice: &Notice, position: Position<'_>) {
    let Some(spelling) = socket.data().spelling() else {
        return;
    };
    let offset = tutorial_offset(notice, position);
    let sent = match notice {
        Notice::Users(names) => socket.emit(spelling.update_users(), &(UsersMap(names),)),
        _ => match ChatLine::of(notice, offset.as_deref()) {
            Some(line) => socket.emit(spelling.update_chat(), &line),
            None => Ok(()),
        },
    };
    emit_checked(socket.id(), sent);
}

fn tutorial_emit(
    op: BroadcastOperator,
    spelling: Spelling,
    notice: &Notice,
    offset: Option<&str>,
) -> Result<(), EmitError> {
    match notice {
        Notice::Users(names) => op.emit(spelling.update_users(), &(UsersMap(names),)),
        _ => match ChatLine::of(notice, offset) {
            Some(line) => op.emit(spelling.update_chat(), &line),
            None => Ok(()),
        },
    }
}

/// The recovery offset a tutorial `updateChat` carries, when recovery is on: a room
/// message's own, or the stream's position for a notice.
fn tutorial_offset(notice: &Notice, position: Position<'_>) -> Option<String> {
    let position = position?;
    match notice {
        Notice::Message(message) => match &message.place {
            Place::Room(room) => Some(recovery_offset(room, message)),
            Place::Direct { .. } => None,
        },
        Notice::Chat { .. } => Some(position()),
        _ => None,
    }
}

/// The arguments of a tutorial `updateChat`: `speaker, text`, and the recovery offset last
/// when recovery is on.
pub struct ChatLine<'a> {
    from: &'a str,
    text: &'a str,
    offset: Option<&'a str>,
}

impl<'a> ChatLine<'a> {
    /// A message or a notice as the tutorial shows it; `None` for what it does not show.
    fn of(notice: &'a Notice, offset: Option<&'a str>) -> Option<Self> {
        let (from, text) = match notice {
            Notice::Chat { from, text } => (from.as_str(), text.as_str()),
            Notice::Message(message) => (message.from.as_str(), message.text.as_str()),
            _ => return None,
        };
        Some(Self { from, text, offset })
    }
}

impl Serialize for ChatLine<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = serializer.serialize_seq(Some(2 + usize::from(self.offset.is_some())))?;
        seq.serialize_element(self.from)?;
        seq.serialize_element(self.text)?;
        if let Some(offset) = self.offset {
            seq.serialize_element(offset)?;
        }
        seq.end()
    }
}

/// A stored message of `general` replayed to a resumed tutorial socket, with its offset.
pub fn replay_to_tutorial(
    socket: &Socket<Connection>,
    spelling: Spelling,
    message: &StoredMessage,
) {
    let Some(room) = message.conversation.as_room() else {
        return;
    };
    let offset = offset(message.seq, message.timestamp_ms, room);
    let line = ChatLine {
        from: &message.author.name,
        text: &message.body,
        offset: Some(&offset),
    };
    emit_checked(socket.id(), socket.emit(spelling.update_chat(), &line));
}

/// A full-protocol event. `recipient` is the user a direct message copy is for (its
/// `with` field names the other side).
fn full_emit(
    op: BroadcastOperator,
    notice: &Notice,
    recipient: Option<&UserId>,
    offsets: bool,
) -> Result<(), EmitError> {
    match notice {
        Notice::Message(message) => match &message.place {
            Place::Room(room) if offsets => op.emit(
                "message:new",
                &(
                    WireMessage::live(message, None),
                    recovery_offset(room, message),
                ),
            ),
            Place::Room(_) => op.emit("message:new", &(WireMessage::live(message, None),)),
            Place::Direct { .. } => op.emit("dm:new", &(WireMessage::live(message, recipient),)),
        },
        Notice::RoomMember { room, name, joined } => op.emit(
            "room:member",
            &(json!({"room": room.as_str(), "name": name.as_str(), "joined": joined}),),
        ),
        Notice::Presence { name, online } => op.emit(
            "presence",
            &(json!({"name": name.as_str(), "online": online}),),
        ),
        Notice::Typing { room, name, typing } => op.volatile().emit(
            "typing",
            &(json!({"room": room.as_str(), "name": name.as_str(), "typing": typing}),),
        ),
        Notice::Chat { .. } | Notice::Users(_) => Ok(()),
    }
}

fn report(sent: Result<(), EmitError>) {
    if let Err(error) = sent {
        warn!(?error, "broadcast failed");
    }
}

pub fn emit_checked(id: &SocketId, sent: Result<(), EmitError>) {
    match sent {
        Ok(()) => {}
        // Gone already, or disconnected as a slow reader: its disconnect handler cleans up.
        Err(EmitError::Closed) => debug!(socket = %id, "emit to a closed socket"),
        Err(error) => warn!(socket = %id, ?error, "emit failed"),
    }
}

/// The tutorial's user list: an object whose keys and values are the names.
pub struct UsersMap<'a>(pub &'a [UserName]);

impl Serialize for UsersMap<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for name in self.0 {
            map.serialize_entry(name.as_str(), name.as_str())?;
        }
        map.end()
    }
}
