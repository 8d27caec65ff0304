//! The full protocol (PROTOCOL.md section 2): identity at connect, rooms, durable messages
//! with acknowledgements, history, catch-up, direct messages and typing.
//!
//! Every request that can fail is answered through its ack with `{"ok": true, ...}` or
//! `{"error": {"code", "message"}}`; [`answer`] is the one place that shapes both.

use std::sync::Arc;

use engine::{Ack, ConnectError, Socket, SocketId};
use serde_json::{Map, Value, json};
use tracing::debug;

use super::identity::{Identity, claim_identity};
use super::wire::{self, ConnectAuth, WireMessage, encoded_size};
use crate::chat::deliver::emit_checked;
use crate::chat::rooms::{FULL_ROOM, user_room};
use crate::chat::{Chat, Connection, now_ms, now_ms_u64};
use crate::domain::session::{self, Claim, TOKEN_BYTES, USER_ID_BYTES};
use crate::domain::{
    Community, Connected, DomainError, ErrorCode, Place, Protocol, RoomName, UserId, UserName,
};
use crate::store::history::{Session, conversation_of, random_hex};
use crate::store::{Conversation, MAX_PAGE_LIMIT};

/// Messages returned by a history read when the client names no limit.
const DEFAULT_PAGE: u32 = 50;

/// Rooms in a `room:list` page when the client names no limit (at most 1000 either way).
const DEFAULT_ROOMS_PAGE: u32 = 1000;

/// Most bytes of messages in one answer (history page, `sync`, join): far below the engine's
/// bound on a connection's queued output (1 MiB), so an answer is never what overflows it.
/// A longer page is cut short with `more: true`, and the client pages on.
pub(crate) const PAGE_BYTES: usize = 256 * 1024;

/// Most members listed in one answer (`room:members`, `room:join`); the answer's total says
/// how many there are. Online members come first.
const MAX_MEMBERS_LISTED: usize = 500;

/// Most conversations one `sync` may name.
const MAX_SYNC_CONVERSATIONS: usize = 100;

/// Answer an ack (if the client asked for one) with a result.
pub fn answer(ack: Option<Ack>, result: Result<Value, DomainError>) {
    let body = match result {
        Ok(Value::Object(mut fields)) => {
            fields.insert("ok".to_owned(), Value::Bool(true));
            Value::Object(fields)
        }
        Ok(_) => json!({"ok": true}),
        Err(error) => {
            debug!(code = error.code().as_str(), "request refused");
            json!({"error": {"code": error.code().as_str(), "message": error.message()}})
        }
    };
    match ack {
        Some(ack) => {
            if let Err(error) = ack.send(&(body,)) {
                debug!(?error, "ack not delivered");
            }
        }
        None => debug!("no ack requested; answer dropped"),
    }
}

pub fn unknown_event() -> DomainError {
    DomainError::new(ErrorCode::InvalidArgument, "unknown event")
}

/// A connecting socket: a full-protocol user when it brings a name or token (in the auth
/// payload, or the query string for socket.io 2.x clients), else a tutorial client.
pub async fn connect(
    chat: &Chat,
    socket: &Socket<Connection>,
    auth: &Value,
) -> Result<(), ConnectError> {
    let auth = ConnectAuth::decode(auth).map_err(refusal)?;
    // Sent in the auth payload, or in the query string by socket.io 2.x clients.
    let credential = |sent: &Option<String>, key: &str| -> Option<String> {
        sent.clone()
            .or_else(|| socket.handshake().query_param(key).map(str::to_owned))
    };
    let claim = Claim::of(
        credential(&auth.token, "token"),
        credential(&auth.name, "name"),
    );
    if chat.recovery
        && super::recovery::recover(chat, socket, &auth)
            .await
            .map_err(refusal)?
    {
        return Ok(());
    }
    let Some(claim) = claim else {
        return Ok(());
    };
    let now = now_ms();
    let identity = claim_identity(chat, claim, now).await.map_err(refusal)?;
    let (token, user, wanted, fresh, refresh_due) = match identity {
        Identity::Returning {
            token,
            session,
            refresh_due,
        } => (token, session.user, session.name, false, refresh_due),
        Identity::New(name) => {
            // Users are cheap to make and hold their names for a month: a bound per address.
            chat.quotas()
                .admit_new_user(client_address(socket), now_ms_u64())
                .map_err(refusal)?;
            (
                random_hex(TOKEN_BYTES),
                UserId::new(random_hex(USER_ID_BYTES)),
                name.as_str().to_owned(),
                true,
                true,
            )
        }
    };

    // Persist the session before announcing anything, so `session` is the first event the
    // client sees and its token works from then on.
    let (holder, present) = {
        let community = chat.community();
        let holder = community.user_named(&wanted).ok().map(|(id, _)| id);
        (holder, community.is_present(&user))
    };
    // Taken meanwhile (while the session was read or the quota checked)?
    if let Some(holder) = &holder {
        let name = UserName::parse(&wanted).map_err(refusal)?;
        session::claim_name(&name, Some(&user), [holder]).map_err(refusal)?;
    }
    // A present user (another tab, or back within a grace period) is stored as online
    // already; its session is saved again only when its expiry is due to be pushed back.
    let saved = refresh_due || !present;
    if saved {
        let session = Session {
            user: user.clone(),
            name: wanted.trim().to_owned(),
        };
        chat.history
            .save_session(&token, &session, now)
            .await
            .map_err(refusal)?;
    }

    let attempt = {
        let mut community = chat.community();
        community
            .connect(socket.id(), user.clone(), &wanted)
            .map(|connected| {
                announce(chat, socket, &community, &token, &user, fresh, &connected);
                !connected.notices.is_empty()
            })
    };
    let arrived = match attempt {
        Ok(arrived) => arrived,
        Err(error) => {
            // Saved, but never here (e.g. it lost a race for its name): it must not hold
            // the name, nor count as online after a restart.
            if saved && fresh {
                chat.history.forget_user(&token, &user).await;
            } else if saved && !present {
                chat.history.mark_offline(vec![user.clone()]).await;
            }
            return Err(refusal(error));
        }
    };
    if arrived && !saved {
        // Present when checked, but its grace period ended (and it was recorded offline)
        // before it connected: it is online again.
        chat.history.mark_online(vec![user.clone()]).await;
    }
    super::recovery::remember_connected(chat, socket).await;
    Ok(())
}

/// A connected full-protocol socket: follow its user's rooms, send it `session`, and tell
/// the others (with the community locked, so everyone sees arrivals in one order).
fn announce(
    chat: &Chat,
    socket: &Socket<Connection>,
    community: &Community<SocketId>,
    token: &str,
    user: &UserId,
    fresh: bool,
    connected: &Connected<SocketId>,
) {
    socket.join(FULL_ROOM);
    socket.join(&user_room(user));
    let rooms: Vec<&str> = connected.rooms.iter().map(RoomName::as_str).collect();
    // Limits a client can check before sending (the UI's message length counter).
    let limits = json!({"messageChars": community.limits().max_message_chars});
    let payload = json!({
        "token": token,
        "user": {"name": connected.name.as_str()},
        "rooms": rooms,
        "limits": limits,
    });
    let sent = socket.emit("session", &(payload,));
    // Closed while it was being connected: the client can never learn this token.
    let unsent = sent == Err(engine::EmitError::Closed);
    emit_checked(socket.id(), sent);
    chat.registered_on_connect(
        socket.id(),
        fresh.then(|| (token.to_owned(), user.clone())),
        unsent,
    );
    chat.deliver(community, None, &connected.notices);
}

fn refusal(error: DomainError) -> ConnectError {
    ConnectError {
        message: error.message().to_owned(),
        data: Some(json!({"code": error.code().as_str(), "message": error.message()})),
    }
}

/// The client's address (for per-address quotas), if the engine knows it.
fn client_address(socket: &Socket<Connection>) -> Option<std::net::IpAddr> {
    socket.handshake().remote_addr.map(|address| address.ip())
}

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
            // Another process sharing the database stored it first.
            Ok(false) => Err(room_exists(&room)),
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
        if !chat.community().room_exists(&room) {
            return Err(DomainError::new(ErrorCode::UnknownRoom, "no such room"));
        }
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

/// `message:send {room, text, clientId?}`: acknowledged once durable, then broadcast.
pub async fn message_send(
    chat: &Arc<Chat>,
    socket: &Socket<Connection>,
    args: &[Value],
    ack: Option<Ack>,
) {
    let request: wire::MessageSend = match wire::decode(args) {
        Ok(request) => request,
        Err(error) => return answer(ack, Err(error)),
    };
    let sending = async {
        let room = RoomName::parse(request.room()?)?;
        let text = request.text()?;
        let client_id = request.client_id.clone();
        if let Err(limited) = chat.take_message_token(socket) {
            let conversation = Conversation::room(room.as_str());
            let answer = over_rate(chat, socket, Some(conversation), client_id, limited).await;
            return Ok(Sending::Answer(answer));
        }
        let draft = chat.community().draft_for_room(socket.id(), &room, text)?;
        Ok(Sending::Queue(draft, client_id))
    }
    .await;
    send(chat, socket, sending, ack).await;
}

/// `dm:send {to, text, clientId?}`.
pub async fn dm_send(
    chat: &Arc<Chat>,
    socket: &Socket<Connection>,
    args: &[Value],
    ack: Option<Ack>,
) {
    let request: wire::DmSend = match wire::decode(args) {
        Ok(request) => request,
        Err(error) => return answer(ack, Err(error)),
    };
    let sending = async {
        let to = request.to()?;
        let text = request.text()?;
        let client_id = request.client_id.clone();
        if let Err(limited) = chat.take_message_token(socket) {
            let conversation = match &client_id {
                Some(_) => {
                    learn_recipient(chat, to).await?;
                    direct_conversation(chat, socket, to).ok().map(|(c, _)| c)
                }
                None => None,
            };
            let answer = over_rate(chat, socket, conversation, client_id, limited).await;
            return Ok(Sending::Answer(answer));
        }
        learn_recipient(chat, to).await?;
        let draft = chat.community().draft_direct(socket.id(), to, text)?;
        Ok(Sending::Queue(draft, client_id))
    }
    .await;
    send(chat, socket, sending, ack).await;
}

/// What becomes of a `message:send` / `dm:send`.
enum Sending {
    /// Store it (with its client id), then answer and deliver.
    Queue(crate::domain::Draft, Option<String>),
    /// Answer at once, in turn with the socket's messages in flight.
    Answer(Result<Value, DomainError>),
}

async fn send(
    chat: &Arc<Chat>,
    socket: &Socket<Connection>,
    sending: Result<Sending, DomainError>,
    ack: Option<Ack>,
) {
    match sending {
        Ok(Sending::Queue(draft, client_id)) => {
            chat.pipeline(socket, draft, client_id, move |chat, result| {
                acknowledge_and_post(chat, ack, result);
            })
            .await;
        }
        Ok(Sending::Answer(result)) => answer(ack, result),
        Err(error) => answer(ack, Err(error)),
    }
}

/// A message over the connection's rate: a resend of one already stored still gets its
/// original ack (its client would otherwise take it for lost and keep resending); anything
/// else is `limited`. The socket's messages in flight are finished first, so acks keep the
/// order of the requests and a resend of one of them finds it stored.
async fn over_rate(
    chat: &Chat,
    socket: &Socket<Connection>,
    conversation: Option<Conversation>,
    client_id: Option<String>,
    limited: DomainError,
) -> Result<Value, DomainError> {
    let (Some(conversation), Some(client_id)) = (conversation, client_id) else {
        return Err(limited);
    };
    let Some(user) = chat.community().user_id_of(socket.id()).cloned() else {
        return Err(limited);
    };
    socket.data().wait_for_pipeline().await;
    match chat
        .history
        .message_by_client_id(&conversation, &user, &client_id)
        .await
    {
        Ok(Some(message)) => {
            Ok(json!({"id": message.id, "seq": message.seq, "ts": message.timestamp_ms}))
        }
        Ok(None) | Err(_) => Err(limited),
    }
}

fn acknowledge_and_post(
    chat: &Chat,
    ack: Option<Ack>,
    result: Result<(crate::domain::Message, bool), DomainError>,
) {
    match result {
        Ok((message, duplicate)) => {
            let receipt = json!({"id": message.id, "seq": message.seq, "ts": message.timestamp_ms});
            answer(ack, Ok(receipt));
            // A resend after a lost ack was delivered the first time.
            if !duplicate {
                chat.post(message);
            }
        }
        Err(error) => answer(ack, Err(error)),
    }
}

/// `message:history {room, before?, limit?}`.
pub async fn message_history(
    chat: &Chat,
    socket: &Socket<Connection>,
    args: &[Value],
    ack: Option<Ack>,
) {
    let result = async {
        let request: wire::MessageHistory = wire::decode(args)?;
        let room = RoomName::parse(request.room()?)?;
        member_check(chat, socket)?;
        if !chat.community().room_exists(&room) {
            return Err(DomainError::new(ErrorCode::UnknownRoom, "no such room"));
        }
        let conversation = Conversation::room(room.as_str());
        let limit = request.limit.unwrap_or(DEFAULT_PAGE);
        let (messages, more) = page_before(chat, &conversation, request.before, limit).await?;
        Ok(json!({"messages": messages, "more": more}))
    }
    .await;
    answer(ack, result);
}

/// `dm:history {with, before?, limit?}`.
pub async fn dm_history(
    chat: &Chat,
    socket: &Socket<Connection>,
    args: &[Value],
    ack: Option<Ack>,
) {
    let result = async {
        let request: wire::DmHistory = wire::decode(args)?;
        let with = request.with()?;
        learn_recipient(chat, with).await?;
        let (conversation, _) = direct_conversation(chat, socket, with)?;
        let limit = request.limit.unwrap_or(DEFAULT_PAGE);
        let (messages, more) = page_before(chat, &conversation, request.before, limit).await?;
        Ok(json!({"messages": messages, "more": more}))
    }
    .await;
    answer(ack, result);
}

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
            if !chat.community().room_exists(&room) {
                return Err(DomainError::new(
                    ErrorCode::UnknownRoom,
                    format!("no room #{room}"),
                ));
            }
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

/// The socket's user if it speaks the full protocol (whose memberships are stored), `None`
/// for a tutorial user (who lives only as long as its socket); an error without a name.
fn full_user(chat: &Chat, socket: &Socket<Connection>) -> Result<Option<UserId>, DomainError> {
    let community = chat.community();
    let user = community.user_id_of(socket.id()).cloned().ok_or_else(|| {
        DomainError::new(
            ErrorCode::NameRequired,
            "connect with a name or token first",
        )
    })?;
    Ok((community.protocol_of(socket.id()) == Some(Protocol::Full)).then_some(user))
}

/// Make sure the community can resolve `raw_name` for a direct conversation: someone
/// present or remembered needs nothing; otherwise the user holding the name in history (a
/// valid session) is learnt. An invalid or unheld name is left for the caller to refuse.
async fn learn_recipient(chat: &Chat, raw_name: &str) -> Result<(), DomainError> {
    let Ok(name) = UserName::parse(raw_name) else {
        return Ok(());
    };
    if chat.community().recipient_named(raw_name).is_ok() {
        return Ok(());
    }
    if let Some((user, name)) = chat.history.user_named(&name, now_ms()).await? {
        chat.community().learn_user(&user, &name);
    }
    Ok(())
}

fn member_check(chat: &Chat, socket: &Socket<Connection>) -> Result<(), DomainError> {
    match chat.community().name_of(socket.id()) {
        Some(_) => Ok(()),
        None => Err(DomainError::new(
            ErrorCode::NameRequired,
            "connect with a name or token first",
        )),
    }
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

/// The direct conversation between the socket's user and the user called `with`.
fn direct_conversation(
    chat: &Chat,
    socket: &Socket<Connection>,
    with: &str,
) -> Result<(Conversation, UserName), DomainError> {
    let community = chat.community();
    let me = community.user_id_of(socket.id()).cloned().ok_or_else(|| {
        DomainError::new(
            ErrorCode::NameRequired,
            "connect with a name or token first",
        )
    })?;
    let (peer, peer_name) = community.recipient_named(with)?;
    let place = Place::Direct {
        from: me,
        to: peer,
        to_name: peer_name.clone(),
    };
    Ok((conversation_of(&place), peer_name))
}

/// Up to `limit` messages after `since`, at most `budget` bytes of them (see
/// [`PAGE_BYTES`]; at least one message), and whether more follow.
async fn page_after(
    chat: &Chat,
    conversation: &Conversation,
    since: i64,
    limit: u32,
    budget: &mut usize,
) -> Result<(Vec<Value>, bool), DomainError> {
    let wanted = limit.saturating_add(1);
    if conversation.as_room().is_some() {
        // Learn where the room stands once, so its tail answers from now on.
        chat.prime(conversation).await?;
    }
    let mut page = match chat.recent_after(conversation, since, wanted) {
        Some(recent) => recent,
        None => chat
            .history
            .after(conversation, since, wanted)
            .await?
            .iter()
            .map(|message| {
                (
                    WireMessage::stored(message).to_value(),
                    encoded_size(message),
                )
            })
            .collect(),
    };
    let mut more = page.len() > limit as usize;
    page.truncate(limit as usize);
    let fits = within_budget(page.iter().map(|(_, size)| *size), budget);
    more |= fits < page.len();
    page.truncate(fits);
    Ok((page.into_iter().map(|(json, _)| json).collect(), more))
}

/// Up to `limit` messages before `before` (or the latest), the newest ones that fit in
/// [`PAGE_BYTES`] (at least one), and whether older ones exist.
async fn page_before(
    chat: &Chat,
    conversation: &Conversation,
    before: Option<i64>,
    limit: u32,
) -> Result<(Vec<Value>, bool), DomainError> {
    let mut stored = chat.history.before(conversation, before, limit).await?;
    let mut budget = PAGE_BYTES;
    let fits = within_budget(stored.iter().rev().map(encoded_size), &mut budget);
    stored.drain(..stored.len() - fits);
    let more = stored.first().is_some_and(|first| first.seq > 1);
    let page = stored
        .iter()
        .map(|message| WireMessage::stored(message).to_value());
    Ok((page.collect(), more))
}

/// How many of `messages`, in order, fit in `budget` bytes (taken from it). The first always
/// fits when the budget is untouched, so a client paging on always makes progress.
fn within_budget(sizes: impl Iterator<Item = usize>, budget: &mut usize) -> usize {
    let mut count = 0;
    for size in sizes {
        if size > *budget && !(count == 0 && *budget == PAGE_BYTES) {
            *budget = 0;
            break;
        }
        *budget = budget.saturating_sub(size);
        count += 1;
    }
    count
}
