//! What clients receive, as the application layer builds it: a message as every client sees
//! it (live, in history pages, in `sync`, replayed by recovery), its estimated size and its
//! recovery offset, and the tutorial protocol's two spellings of its event names. A leaf of
//! `chat/`: delivery, the tails and the handlers all use one form.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::{Message, Place, RoomName, UserId};
use crate::store::StoredMessage;

/// A message as clients see it (PROTOCOL.md, "A message object"): `room` for a room's,
/// `with` (the other side) for a direct message's copy; `clientId` is always there, `null`
/// when the sender gave none. Fields in alphabetical order, as they have always been sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct WireMessage<'a> {
    #[serde(rename = "clientId")]
    client_id: Option<&'a str>,
    from: &'a str,
    id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    room: Option<&'a str>,
    seq: i64,
    text: &'a str,
    ts: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    with: Option<&'a str>,
}

impl<'a> WireMessage<'a> {
    /// A message being delivered. `recipient` is the user a direct message's copy is for:
    /// its `with` names the other side (the recipient of the sender's own copy, or none).
    pub fn live(message: &'a Message, recipient: Option<&UserId>) -> Self {
        let (room, with) = match &message.place {
            Place::Room(room) => (Some(room.as_str()), None),
            Place::Direct { from, to_name, .. } => {
                let with = if recipient == Some(from) || recipient.is_none() {
                    to_name.as_str()
                } else {
                    message.from.as_str()
                };
                (None, Some(with))
            }
        };
        Self {
            client_id: message.client_id.as_deref(),
            from: message.from.as_str(),
            id: &message.id,
            room,
            seq: message.seq,
            text: &message.text,
            ts: message.timestamp_ms,
            with,
        }
    }

    /// A message read from history: `room` for a room's, neither `room` nor `with` for a
    /// direct one (see [`with_peer`]).
    pub fn stored(message: &'a StoredMessage) -> Self {
        Self {
            client_id: message.client_id.as_deref(),
            from: &message.author.name,
            id: &message.id,
            room: message.conversation.as_room(),
            seq: message.seq,
            text: &message.body,
            ts: message.timestamp_ms,
            with: None,
        }
    }

    /// As a JSON value, for pages and the in-memory tails.
    pub fn to_value(&self) -> Value {
        // Cannot fail: text, numbers and nulls only.
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// Stored messages of a direct conversation with `peer`, as `sync` answers them: each one
/// names the other side in `with`.
pub fn with_peer(messages: Vec<Value>, peer: &str) -> Vec<Value> {
    messages
        .into_iter()
        .map(|mut message| {
            if let Value::Object(fields) = &mut message {
                fields.insert("with".to_owned(), Value::String(peer.to_owned()));
            }
            message
        })
        .collect()
}

/// A generous estimate of a message's size on the wire: JSON escapes at most double text
/// (`\uXXXX` for control characters is rarer still), plus the fixed fields.
pub fn encoded_size(message: &StoredMessage) -> usize {
    message_size(
        &message.body,
        &message.author.name,
        message.client_id.as_deref(),
    )
}

/// [`encoded_size`] of a message's parts.
pub fn message_size(text: &str, from: &str, client_id: Option<&str>) -> usize {
    2 * (text.len() + from.len() + client_id.map_or(0, str::len)) + 160
}

/// The connection-state-recovery offset of a room message: `seq:timestamp:room`. The client
/// returns the last one it received when it reconnects (see `recovery`).
pub fn offset(seq: i64, timestamp_ms: i64, room: &str) -> String {
    format!("{seq}:{timestamp_ms}:{room}")
}

/// [`offset`] of a live room message.
pub fn recovery_offset(room: &RoomName, message: &Message) -> String {
    offset(message.seq, message.timestamp_ms, room.as_str())
}

/// How a tutorial client spells the events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Spelling {
    /// `addUser`, `sendChat`, `updateChat`, `updateUsers` (the tutorial's server).
    CamelCase,
    /// `adduser`, `sendchat`, `updatechat`, `updateusers` (the tutorial's final page).
    Lowercase,
}

impl Spelling {
    pub const ALL: [Spelling; 2] = [Spelling::CamelCase, Spelling::Lowercase];

    /// The engine room holding the named tutorial sockets that use this spelling.
    pub fn room(self) -> &'static str {
        match self {
            Self::CamelCase => "tutorial:camelCase",
            Self::Lowercase => "tutorial:lowercase",
        }
    }

    pub fn update_chat(self) -> &'static str {
        match self {
            Self::CamelCase => "updateChat",
            Self::Lowercase => "updatechat",
        }
    }

    pub fn update_users(self) -> &'static str {
        match self {
            Self::CamelCase => "updateUsers",
            Self::Lowercase => "updateusers",
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::domain::UserName;
    use crate::store::{Author, Conversation};

    fn message(place: Place, client_id: Option<&str>) -> Message {
        Message {
            id: "01J0".to_owned(),
            place,
            seq: 7,
            timestamp_ms: 1_700,
            from: UserName::parse("ann").expect("a valid name"),
            text: "hi \"there\"".to_owned(),
            client_id: client_id.map(str::to_owned),
        }
    }

    fn room(name: &str) -> RoomName {
        RoomName::parse(name).expect("a valid room")
    }

    #[test]
    fn a_room_message_is_sent_with_its_fields_in_alphabetical_order_and_a_null_client_id() {
        let message = message(Place::Room(room("lobby")), None);
        let sent = serde_json::to_string(&WireMessage::live(&message, None)).expect("encodes");
        assert_eq!(
            sent,
            r#"{"clientId":null,"from":"ann","id":"01J0","room":"lobby","seq":7,"text":"hi \"there\"","ts":1700}"#
        );
    }

    #[test]
    fn a_direct_message_names_the_other_side_for_each_recipient() {
        let (ann, bob) = (UserId::new("a"), UserId::new("b"));
        let place = Place::Direct {
            from: ann.clone(),
            to: bob.clone(),
            to_name: UserName::parse("bob").expect("a valid name"),
        };
        let message = message(place, Some("c-1"));
        let with = |recipient: Option<&UserId>| {
            serde_json::to_value(WireMessage::live(&message, recipient)).expect("encodes")["with"]
                .clone()
        };
        assert_eq!(with(Some(&ann)), json!("bob"));
        assert_eq!(with(None), json!("bob"));
        assert_eq!(with(Some(&bob)), json!("ann"));
        let value = WireMessage::live(&message, Some(&bob)).to_value();
        assert_eq!(value["clientId"], json!("c-1"));
        assert!(value.get("room").is_none());
    }

    #[test]
    fn a_stored_message_reads_as_the_live_one_did() {
        let live = message(Place::Room(room("lobby")), Some("c-9"));
        let stored = StoredMessage {
            id: live.id.clone(),
            conversation: Conversation::room("lobby"),
            seq: live.seq,
            author: Author {
                user_id: "a".to_owned(),
                name: "ann".to_owned(),
            },
            body: live.text.clone(),
            client_id: live.client_id.clone(),
            timestamp_ms: live.timestamp_ms,
        };
        assert_eq!(WireMessage::stored(&stored), WireMessage::live(&live, None));
        let direct = StoredMessage {
            conversation: Conversation::direct("a", "b"),
            ..stored
        };
        let page = with_peer(vec![WireMessage::stored(&direct).to_value()], "bob");
        assert_eq!(page[0]["with"], json!("bob"));
        assert!(page[0].get("room").is_none());
    }
}
