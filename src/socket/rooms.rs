//! Full protocol, rooms: `room:list`, `room:create`, `room:join`, `room:leave`,
//! `room:members`, and `typing` in a room.

use engine::{Ack, Socket};
use serde_json::{Value, json};
use tracing::debug;

use super::full::{
    DEFAULT_PAGE, PAGE_BYTES, answer, client_address, full_user, known_room, member_check,
    page_after, page_before,
};
use super::wire;
use crate::chat::{Chat, Connection, now_ms, now_ms_u64};
use crate::domain::{DomainError, ErrorCode, RoomName};
use crate::store::Conversation;

/// Rooms in a `room:list` page when the client names no limit (at most 1000 either way).
const DEFAULT_ROOMS_PAGE: u32 = 1000;

/// Most members listed in one answer (`room:members`, `room:join`); the answer's total says
/// how many there are. Online members come first.
const MAX_MEMBERS_LISTED: usize = 500;

/// `room:list {cursor?, limit?}`: a page of rooms by name, from after `cursor` (the previous
/// page's `cursor`); `cursor` is `null` on the last page.
pub fn room_list(chat: &Chat, socket: &Socket<Connection>, args: &[Value], ack: Option<Ack>) {
    let result = (|| {
        let request = wire::RoomList::decode(args)?;
        let (cursor, limit) = (request.cursor, request.limit.unwrap_or(DEFAULT_ROOMS_PAGE));
        member_check(chat, socket)?;
        let (page, more) = chat.community().rooms_page(cursor.as_ref(), limit as usize);
        let next = page
            .last()
            .filter(|_| more)
            .map(|room| room.name.as_str().to_owned());
        let rooms: Vec<Value> = page
            .into_iter()
            .map(|room| json!({"name": room.name.as_str(), "members": room.members, "online": room.online}))
            .collect();
        Ok(json!({"rooms": rooms, "more": more, "cursor": next}))
    })();
    answer(ack, result);
}

/// `room:create {room}`: refused before anything is stored when the room exists or a quota
/// is used up; else the room and its creator's membership are stored in one write, then the
/// creator joins it. A refusal changes nothing, in memory or in history.
pub async fn room_create(
    chat: &Chat,
    socket: &Socket<Connection>,
    args: &[Value],
    ack: Option<Ack>,
) {
    let result = async {
        let request: wire::RoomRequest = wire::decode(args)?;
        let room = RoomName::parse(request.room()?)?;
        member_check(chat, socket)?;
        let Some(user) = full_user(chat, socket)? else {
            return Err(DomainError::new(
                ErrorCode::NotSupported,
                "tutorial-protocol clients live in #general only",
            ));
        };
        chat.take_message_token(socket)?;
        // The reservation holds the name and counts it against the quotas while it is
        // stored, so a concurrent creation of it, or past a quota, is refused up front.
        let reservation = {
            let community = chat.community();
            if community.room_exists(&room) {
                return Err(room_exists(&room));
            }
            chat.quotas().reserve_room(
                &user,
                client_address(socket),
                &room,
                community.room_count(),
                now_ms_u64(),
            )?
        };
        let stored = chat.history.create_room(&room, &user, now_ms()).await;
        let mut community = chat.community();
        let created = match stored {
            Ok(true) => community
                .create_room(socket.id(), room.as_str())
                .or_else(|error| {
                    // Stored, so it exists whatever happened here meanwhile (the socket left).
                    community.restore_rooms([room.clone()]);
                    debug!(code = error.code().as_str(), "created room not joined");
                    Ok((room.clone(), Vec::new()))
                }),
            // Another node sharing the database stored it first: it exists here too now.
            Ok(false) => {
                community.restore_rooms([room.clone()]);
                Err(room_exists(&room))
            }
            Err(error) => Err(error),
        };
        match created {
            Ok((room, notices)) => {
                chat.quotas().room_created(reservation);
                chat.deliver(&community, Some(socket), &notices);
                Ok(json!({"room": room.as_str()}))
            }
            Err(error) => {
                chat.quotas().room_abandoned(reservation);
                Err(error)
            }
        }
    }
    .await;
    answer(ack, result);
}

fn room_exists(room: &RoomName) -> DomainError {
    DomainError::new(ErrorCode::RoomExists, format!("#{room} exists already"))
}

/// `room:join {room, since?, limit?}`: membership, then the members and recent messages.
pub async fn room_join(chat: &Chat, socket: &Socket<Connection>, args: &[Value], ack: Option<Ack>) {
    let result = async {
        let request: wire::RoomJoin = wire::decode(args)?;
        let since = request.since;
        let limit = request.limit.unwrap_or(DEFAULT_PAGE);
        let room = RoomName::parse(request.room()?)?;
        chat.take_message_token(socket)?;
        let user = full_user(chat, socket)?;
        known_room(chat, &room).await?;
        // Stored before it takes effect, so an acknowledged join survives a restart.
        if let Some(user) = &user
            && room != RoomName::general()
            && !chat.community().is_in_room(socket.id(), &room)
        {
            chat.history.add_membership(user, &room, now_ms()).await?;
        }
        let room = {
            let mut community = chat.community();
            let (room, notices) = community.join_room(socket.id(), room.as_str())?;
            chat.deliver(&community, Some(socket), &notices);
            room
        };
        let conversation = Conversation::room(room.as_str());
        let mut budget = PAGE_BYTES;
        let (messages, more) = match since {
            Some(since) => page_after(chat, &conversation, since, limit, &mut budget).await?,
            None => page_before(chat, &conversation, None, limit).await?,
        };
        let (members, total) = members_json(chat, room.as_str())?;
        Ok(json!({
            "room": room.as_str(),
            "members": members,
            "memberCount": total,
            "messages": messages,
            "more": more,
        }))
    }
    .await;
    answer(ack, result);
}

/// `room:leave {room}`: stored, then the remaining members hear of it.
pub async fn room_leave(
    chat: &Chat,
    socket: &Socket<Connection>,
    args: &[Value],
    ack: Option<Ack>,
) {
    let result = async {
        let request: wire::RoomRequest = wire::decode(args)?;
        let room = RoomName::parse(request.room()?)?;
        chat.take_message_token(socket)?;
        let user = full_user(chat, socket)?;
        if let Some(user) = &user
            && chat.community().is_in_room(socket.id(), &room)
            && room != RoomName::general()
        {
            chat.history.remove_membership(user, &room).await?;
        }
        let mut community = chat.community();
        let (room, notices) = community.leave_room(socket.id(), room.as_str())?;
        chat.deliver(&community, Some(socket), &notices);
        Ok(json!({"room": room.as_str()}))
    }
    .await;
    answer(ack, result);
}

/// `room:members {room}`.
pub fn room_members(chat: &Chat, socket: &Socket<Connection>, args: &[Value], ack: Option<Ack>) {
    let result = wire::decode(args).and_then(|request: wire::RoomRequest| {
        member_check(chat, socket)?;
        let (members, total) = members_json(chat, request.room()?)?;
        Ok(json!({"members": members, "total": total}))
    });
    answer(ack, result);
}

/// A room's members for an answer: online ones first (each group in arrival order), at most
/// [`MAX_MEMBERS_LISTED`], and how many there are in all.
fn members_json(chat: &Chat, room: &str) -> Result<(Vec<Value>, usize), DomainError> {
    let mut members = chat.community().members(room)?;
    let total = members.len();
    members.sort_by_key(|member| !member.online);
    members.truncate(MAX_MEMBERS_LISTED);
    let listed = members
        .into_iter()
        .map(|member| json!({"name": member.name.as_str(), "online": member.online}))
        .collect();
    Ok((listed, total))
}

/// `typing {room, typing}`: volatile, no ack.
pub fn typing(chat: &Chat, socket: &Socket<Connection>, args: &[Value]) {
    let result = wire::decode(args).and_then(|request: wire::Typing| {
        chat.take_message_token(socket)?;
        let community = chat.community();
        let notices = community.typing(socket.id(), request.room()?, request.typing)?;
        chat.deliver(&community, Some(socket), &notices);
        Ok(())
    });
    if let Err(error) = result {
        debug!(socket = %socket.id(), code = error.code().as_str(), "typing refused");
    }
}
