//! Every request shape on the wire, in one place: what clients send (PROTOCOL.md). A leaf of
//! `socket/`: it knows the domain, the store's limits and [`crate::chat::outgoing`] (what
//! clients receive, re-exported here), never a handler.
//!
//! # Layout
//! - requests: [`decode`] turns an event's payload into one of the request structs; a bad
//!   shape is refused with the documented `invalid_argument` sentence (`` `room` must be
//!   text``, …). A required field that is absent is refused when it is read (its accessor),
//!   so each handler checks its fields in the order PROTOCOL.md lists them.
//! - [`ConnectAuth`]: the auth payload of a connect.
//! - re-exported from [`crate::chat::outgoing`]: [`WireMessage`] (a message as every client
//!   sees it) with its [`encoded_size`] and recovery [`offset`], and [`Spelling`].

use serde::Deserialize;
use serde::de::{DeserializeOwned, Deserializer, Error as _};
use serde_json::Value;

use crate::domain::{DomainError, ErrorCode, RoomName};
use crate::store::{MAX_CLIENT_ID_LEN, MAX_PAGE_LIMIT};

/// A refused shape: `invalid_argument` with `message`.
fn invalid(message: impl Into<String>) -> DomainError {
    DomainError::new(ErrorCode::InvalidArgument, message)
}

/// The payload of a request (its first argument) when it is an object.
pub fn object(args: &[Value]) -> Result<&Value, DomainError> {
    match args.first() {
        Some(value @ Value::Object(_)) => Ok(value),
        _ => Err(invalid("the payload must be an object")),
    }
}

/// Decode a request from an event's arguments: an object payload whose fields have the
/// documented shapes (unknown fields are ignored).
pub fn decode<T: DeserializeOwned>(args: &[Value]) -> Result<T, DomainError> {
    decode_value(object(args)?)
}

fn decode_value<T: DeserializeOwned>(payload: &Value) -> Result<T, DomainError> {
    // Every field decoder fails with its documented sentence, and a payload read from a
    // `Value` has no position to append: the error's text is that sentence.
    T::deserialize(payload).map_err(|error| invalid(error.to_string()))
}

/// A field that must be text, read when present (absent fields are `None`).
fn text<'de, D: Deserializer<'de>>(field: D, key: &str) -> Result<Option<String>, D::Error> {
    match Value::deserialize(field)? {
        Value::String(text) => Ok(Some(text)),
        _ => Err(D::Error::custom(must_be_text(key))),
    }
}

fn must_be_text(key: &str) -> String {
    format!("`{key}` must be text")
}

/// A required text field, or its sentence when it was not sent.
fn required<'a>(field: &'a Option<String>, key: &str) -> Result<&'a str, DomainError> {
    field.as_deref().ok_or_else(|| invalid(must_be_text(key)))
}

fn room_field<'de, D: Deserializer<'de>>(field: D) -> Result<Option<String>, D::Error> {
    text(field, "room")
}

fn text_field<'de, D: Deserializer<'de>>(field: D) -> Result<Option<String>, D::Error> {
    text(field, "text")
}

fn to_field<'de, D: Deserializer<'de>>(field: D) -> Result<Option<String>, D::Error> {
    text(field, "to")
}

fn with_field<'de, D: Deserializer<'de>>(field: D) -> Result<Option<String>, D::Error> {
    text(field, "with")
}

/// An optional sequence number (a non-negative integer); `null` is none.
fn seq<'de, D: Deserializer<'de>>(field: D, key: &str) -> Result<Option<i64>, D::Error> {
    match Value::deserialize(field)? {
        Value::Null => Ok(None),
        value => value
            .as_i64()
            .filter(|seq| *seq >= 0)
            .map(Some)
            .ok_or_else(|| D::Error::custom(format!("`{key}` must be a sequence number"))),
    }
}

fn since_field<'de, D: Deserializer<'de>>(field: D) -> Result<Option<i64>, D::Error> {
    seq(field, "since")
}

fn before_field<'de, D: Deserializer<'de>>(field: D) -> Result<Option<i64>, D::Error> {
    seq(field, "before")
}

/// `limit`: a non-negative integer, clamped to 1..=[`MAX_PAGE_LIMIT`]; `null` is none (the
/// request's default).
fn limit_field<'de, D: Deserializer<'de>>(field: D) -> Result<Option<u32>, D::Error> {
    match Value::deserialize(field)? {
        Value::Null => Ok(None),
        value => value
            .as_u64()
            .map(|limit| {
                Some(
                    u32::try_from(limit)
                        .unwrap_or(MAX_PAGE_LIMIT)
                        .clamp(1, MAX_PAGE_LIMIT),
                )
            })
            .ok_or_else(|| D::Error::custom("`limit` must be a positive number")),
    }
}

/// `clientId`: text of 1 to [`MAX_CLIENT_ID_LEN`] bytes without NUL; `null` is none.
fn client_id_field<'de, D: Deserializer<'de>>(field: D) -> Result<Option<String>, D::Error> {
    match Value::deserialize(field)? {
        Value::Null => Ok(None),
        Value::String(id)
            if !id.is_empty() && id.len() <= MAX_CLIENT_ID_LEN && !id.contains('\0') =>
        {
            Ok(Some(id))
        }
        _ => Err(D::Error::custom(format!(
            "`clientId` must be text of 1 to {MAX_CLIENT_ID_LEN} bytes, without NUL"
        ))),
    }
}

/// An object of name → last sequence seen; `null` is empty.
fn seq_map<'de, D: Deserializer<'de>>(field: D, key: &str) -> Result<Vec<(String, i64)>, D::Error> {
    let invalid = || D::Error::custom(format!("`{key}` must map names to sequence numbers"));
    match Value::deserialize(field)? {
        Value::Null => Ok(Vec::new()),
        Value::Object(entries) => entries
            .into_iter()
            .map(|(name, seq)| {
                let seq = seq.as_i64().filter(|seq| *seq >= 0).ok_or_else(invalid)?;
                Ok((name, seq))
            })
            .collect(),
        _ => Err(invalid()),
    }
}

fn rooms_field<'de, D: Deserializer<'de>>(field: D) -> Result<Vec<(String, i64)>, D::Error> {
    seq_map(field, "rooms")
}

fn direct_field<'de, D: Deserializer<'de>>(field: D) -> Result<Vec<(String, i64)>, D::Error> {
    seq_map(field, "direct")
}

/// `room:list`'s `cursor`: the previous page's last room; `null` is the first page.
fn cursor_field<'de, D: Deserializer<'de>>(field: D) -> Result<Option<RoomName>, D::Error> {
    match Value::deserialize(field)? {
        Value::Null => Ok(None),
        Value::String(cursor) => RoomName::parse(&cursor)
            .map(Some)
            .map_err(|_| D::Error::custom("`cursor` is not a room cursor")),
        _ => Err(D::Error::custom("`cursor` must be text")),
    }
}

/// `typing`'s flag: anything but `false` means typing (the client's default).
fn typing_field<'de, D: Deserializer<'de>>(field: D) -> Result<bool, D::Error> {
    Ok(Value::deserialize(field)?.as_bool().unwrap_or(true))
}

fn yes() -> bool {
    true
}

/// `room:create`, `room:leave`, `room:members`: `{room}`.
#[derive(Debug, Deserialize)]
pub struct RoomRequest {
    #[serde(default, deserialize_with = "room_field")]
    room: Option<String>,
}

impl RoomRequest {
    pub fn room(&self) -> Result<&str, DomainError> {
        required(&self.room, "room")
    }
}

/// `room:list {cursor?, limit?}`; no payload at all (or `null`) is the first page.
#[derive(Debug, Default, Deserialize)]
pub struct RoomList {
    #[serde(default, deserialize_with = "cursor_field")]
    pub cursor: Option<RoomName>,
    #[serde(default, deserialize_with = "limit_field")]
    pub limit: Option<u32>,
}

impl RoomList {
    pub fn decode(args: &[Value]) -> Result<Self, DomainError> {
        match args.first() {
            None | Some(Value::Null) => Ok(Self::default()),
            Some(_) => decode(args),
        }
    }
}

/// `room:join {room, since?, limit?}`.
#[derive(Debug, Deserialize)]
pub struct RoomJoin {
    #[serde(default, deserialize_with = "room_field")]
    room: Option<String>,
    #[serde(default, deserialize_with = "since_field")]
    pub since: Option<i64>,
    #[serde(default, deserialize_with = "limit_field")]
    pub limit: Option<u32>,
}

impl RoomJoin {
    pub fn room(&self) -> Result<&str, DomainError> {
        required(&self.room, "room")
    }
}

/// `message:send {room, text, clientId?}`.
#[derive(Debug, Deserialize)]
pub struct MessageSend {
    #[serde(default, deserialize_with = "room_field")]
    room: Option<String>,
    #[serde(default, deserialize_with = "text_field")]
    text: Option<String>,
    #[serde(default, rename = "clientId", deserialize_with = "client_id_field")]
    pub client_id: Option<String>,
}

impl MessageSend {
    pub fn room(&self) -> Result<&str, DomainError> {
        required(&self.room, "room")
    }

    pub fn text(&self) -> Result<&str, DomainError> {
        required(&self.text, "text")
    }
}

/// `message:history {room, before?, limit?}`.
#[derive(Debug, Deserialize)]
pub struct MessageHistory {
    #[serde(default, deserialize_with = "room_field")]
    room: Option<String>,
    #[serde(default, deserialize_with = "before_field")]
    pub before: Option<i64>,
    #[serde(default, deserialize_with = "limit_field")]
    pub limit: Option<u32>,
}

impl MessageHistory {
    pub fn room(&self) -> Result<&str, DomainError> {
        required(&self.room, "room")
    }
}

/// `dm:send {to, text, clientId?}`.
#[derive(Debug, Deserialize)]
pub struct DmSend {
    #[serde(default, deserialize_with = "to_field")]
    to: Option<String>,
    #[serde(default, deserialize_with = "text_field")]
    text: Option<String>,
    #[serde(default, rename = "clientId", deserialize_with = "client_id_field")]
    pub client_id: Option<String>,
}

impl DmSend {
    pub fn to(&self) -> Result<&str, DomainError> {
        required(&self.to, "to")
    }

    pub fn text(&self) -> Result<&str, DomainError> {
        required(&self.text, "text")
    }
}

/// `dm:history {with, before?, limit?}`.
#[derive(Debug, Deserialize)]
pub struct DmHistory {
    #[serde(default, deserialize_with = "with_field")]
    with: Option<String>,
    #[serde(default, deserialize_with = "before_field")]
    pub before: Option<i64>,
    #[serde(default, deserialize_with = "limit_field")]
    pub limit: Option<u32>,
}

impl DmHistory {
    pub fn with(&self) -> Result<&str, DomainError> {
        required(&self.with, "with")
    }
}

/// `sync {rooms: {room: lastSeq}, direct: {name: lastSeq}}`, both optional.
#[derive(Debug, Deserialize)]
pub struct Sync {
    #[serde(default, deserialize_with = "rooms_field")]
    pub rooms: Vec<(String, i64)>,
    #[serde(default, deserialize_with = "direct_field")]
    pub direct: Vec<(String, i64)>,
}

impl Sync {
    /// Decode an object payload (see [`object`]); `sync` checks the sender's name in between.
    pub fn decode(payload: &Value) -> Result<Self, DomainError> {
        decode_value(payload)
    }
}

/// `typing {room, typing?}`.
#[derive(Debug, Deserialize)]
pub struct Typing {
    #[serde(default, deserialize_with = "room_field")]
    room: Option<String>,
    #[serde(default = "yes", deserialize_with = "typing_field")]
    pub typing: bool,
}

impl Typing {
    pub fn room(&self) -> Result<&str, DomainError> {
        required(&self.room, "room")
    }
}

/// The auth payload of a connect: `{name}` or `{token}` for the full protocol, and
/// `{pid, offset}` from a client resuming (connection-state recovery). Anything but an
/// object is no auth at all; `pid` and `offset` that are not text are ignored.
#[derive(Debug, Default, Deserialize)]
pub struct ConnectAuth {
    #[serde(default, deserialize_with = "name_credential")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "token_credential")]
    pub token: Option<String>,
    #[serde(default, deserialize_with = "lenient_text")]
    pub pid: Option<String>,
    #[serde(default, deserialize_with = "lenient_text")]
    pub offset: Option<String>,
}

impl ConnectAuth {
    pub fn decode(auth: &Value) -> Result<Self, DomainError> {
        match auth {
            Value::Object(_) => decode_value(auth),
            _ => Ok(Self::default()),
        }
    }
}

/// A credential sent in the auth payload must be text (`null` included: it is not).
fn credential<'de, D: Deserializer<'de>>(field: D, key: &str) -> Result<Option<String>, D::Error> {
    match Value::deserialize(field)? {
        Value::String(text) => Ok(Some(text)),
        _ => Err(D::Error::custom(format!("a {key} must be text"))),
    }
}

fn name_credential<'de, D: Deserializer<'de>>(field: D) -> Result<Option<String>, D::Error> {
    credential(field, "name")
}

fn token_credential<'de, D: Deserializer<'de>>(field: D) -> Result<Option<String>, D::Error> {
    credential(field, "token")
}

fn lenient_text<'de, D: Deserializer<'de>>(field: D) -> Result<Option<String>, D::Error> {
    Ok(match Value::deserialize(field)? {
        Value::String(text) => Some(text),
        _ => None,
    })
}

pub use crate::chat::outgoing::{
    Spelling, WireMessage, encoded_size, message_size, offset, recovery_offset, with_peer,
};

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn refusal<T: std::fmt::Debug>(result: Result<T, DomainError>) -> (ErrorCode, String) {
        let error = result.expect_err("refused");
        (error.code(), error.message().to_owned())
    }

    fn invalid_argument(message: &str) -> (ErrorCode, String) {
        (ErrorCode::InvalidArgument, message.to_owned())
    }

    #[test]
    fn a_payload_that_is_no_object_is_refused() {
        assert_eq!(
            refusal(decode::<RoomRequest>(&[json!("roomone")])),
            invalid_argument("the payload must be an object")
        );
        assert_eq!(
            refusal(decode::<RoomRequest>(&[])),
            invalid_argument("the payload must be an object")
        );
    }

    #[test]
    fn fields_of_the_wrong_shape_are_refused_with_their_sentence() {
        let cases = [
            (json!({"room": 12}), "`room` must be text"),
            (json!({"room": "a", "text": 5}), "`text` must be text"),
            (
                json!({"room": "a", "text": "t", "clientId": ""}),
                "`clientId` must be text of 1 to 128 bytes, without NUL",
            ),
        ];
        for (payload, sentence) in cases {
            assert_eq!(
                refusal(decode::<MessageSend>(&[payload])),
                invalid_argument(sentence)
            );
        }
        assert_eq!(
            refusal(decode::<RoomJoin>(&[json!({"room": "a", "since": -1})])),
            invalid_argument("`since` must be a sequence number")
        );
        assert_eq!(
            refusal(decode::<MessageHistory>(&[
                json!({"room": "a", "limit": "9"})
            ])),
            invalid_argument("`limit` must be a positive number")
        );
        assert_eq!(
            refusal(Sync::decode(&json!({"rooms": {"a": "x"}}))),
            invalid_argument("`rooms` must map names to sequence numbers")
        );
        assert_eq!(
            refusal(RoomList::decode(&[json!({"cursor": 3})])),
            invalid_argument("`cursor` must be text")
        );
        assert_eq!(
            refusal(RoomList::decode(&[json!({"cursor": "no such!"})])),
            invalid_argument("`cursor` is not a room cursor")
        );
        assert_eq!(
            refusal(ConnectAuth::decode(&json!({"name": null}))),
            invalid_argument("a name must be text")
        );
    }

    #[test]
    fn a_missing_required_field_is_refused_when_read() {
        let request: DmSend = decode(&[json!({"text": "hi"})]).expect("decodes");
        assert_eq!(refusal(request.to()), invalid_argument("`to` must be text"));
        assert_eq!(
            refusal(decode::<MessageSend>(&[json!({"room": null})])),
            invalid_argument("`room` must be text"),
            "null is no text"
        );
    }

    #[test]
    fn optional_fields_take_their_defaults() {
        let join: RoomJoin =
            decode(&[json!({"room": "a", "limit": 0, "since": null})]).expect("decodes");
        assert_eq!((join.since, join.limit), (None, Some(1)));
        let join: RoomJoin =
            decode(&[json!({"room": "a", "limit": 5_000_000_000u64})]).expect("decodes");
        assert_eq!(join.limit, Some(MAX_PAGE_LIMIT));
        let typing: Typing = decode(&[json!({"room": "a", "typing": "yes"})]).expect("decodes");
        assert!(typing.typing);
        let typing: Typing = decode(&[json!({"room": "a", "typing": false})]).expect("decodes");
        assert!(!typing.typing);
        let list = RoomList::decode(&[]).expect("the first page");
        assert_eq!((list.cursor, list.limit), (None, None));
        let auth = ConnectAuth::decode(&json!({"pid": 4, "offset": "1:2:general"})).expect("ok");
        assert_eq!(
            (auth.pid, auth.offset.as_deref()),
            (None, Some("1:2:general"))
        );
        let auth = ConnectAuth::decode(&json!("not an object")).expect("no auth");
        assert_eq!(auth.name, None);
    }
}
