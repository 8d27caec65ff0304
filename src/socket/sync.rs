//! Full protocol, catch-up: `sync` answers what a client missed in the rooms and direct
//! conversations it names.

use engine::{Ack, Socket};
use serde_json::{Map, Value, json};

use super::full::{
    PAGE_BYTES, answer, direct_conversation, known_room, learn_recipient, member_check, page_after,
};
use super::wire;
use crate::chat::{Chat, Connection};
use crate::domain::{DomainError, ErrorCode, RoomName, UserName};
use crate::store::{Conversation, MAX_PAGE_LIMIT};

/// Most conversations one `sync` may name.
const MAX_SYNC_CONVERSATIONS: usize = 100;

/// `sync {rooms: {room: lastSeq}, direct: {name: lastSeq}}`: exactly what was missed.
pub async fn sync(chat: &Chat, socket: &Socket<Connection>, args: &[Value], ack: Option<Ack>) {
    let result = async {
        let payload = wire::object(args)?;
        member_check(chat, socket)?;
        let wire::Sync { rooms, direct } = wire::Sync::decode(payload)?;
        if rooms.len() + direct.len() > MAX_SYNC_CONVERSATIONS {
            return Err(DomainError::new(
                ErrorCode::InvalidArgument,
                format!("sync at most {MAX_SYNC_CONVERSATIONS} conversations at once"),
            ));
        }
        let mut more = false;
        // One budget for the whole answer: conversations past it get empty pages and
        // `more`, and the client syncs again from where each one stopped.
        let mut budget = PAGE_BYTES;
        let mut room_pages = Map::new();
        for (name, since) in rooms {
            let room = RoomName::parse(&name)?;
            known_room(chat, &room).await?;
            let conversation = Conversation::room(room.as_str());
            let (messages, page_more) =
                page_after(chat, &conversation, since, MAX_PAGE_LIMIT, &mut budget).await?;
            more |= page_more;
            room_pages.insert(room.as_str().to_owned(), Value::Array(messages));
        }
        let mut direct_pages = Map::new();
        let mut unknown = Vec::new();
        for (name, since) in direct {
            // A name that belongs to nobody (never used, or its session expired) cannot be
            // resolved to a user; say so and go on with the rest rather than failing the
            // whole catch-up.
            if UserName::parse(&name).is_ok() {
                learn_recipient(chat, &name).await?;
            }
            let (conversation, peer) = match direct_conversation(chat, socket, &name) {
                Ok(found) => found,
                Err(error) if error.code() == ErrorCode::UnknownUser => {
                    unknown.push(name);
                    continue;
                }
                Err(error) => return Err(error),
            };
            let (messages, page_more) =
                page_after(chat, &conversation, since, MAX_PAGE_LIMIT, &mut budget).await?;
            more |= page_more;
            direct_pages.insert(
                peer.as_str().to_owned(),
                Value::Array(wire::with_peer(messages, peer.as_str())),
            );
        }
        Ok(json!({"rooms": room_pages, "direct": direct_pages, "unknown": unknown, "more": more}))
    }
    .await;
    answer(ack, result);
}
