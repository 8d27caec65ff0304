//! The full protocol (PROTOCOL.md section 2): identity at connect, and what its event groups
//! share (access checks, history pages). The events themselves are in `rooms.rs` (rooms and
//! typing), `messages.rs` (room and direct messages, history) and `sync.rs` (catch-up).
//!
//! Every request that can fail is answered through its ack with `{"ok": true, ...}` or
//! `{"error": {"code", "message"}}`; [`answer`] is the one place that shapes both.

use engine::{Ack, ConnectError, Socket, SocketId};
use serde_json::{Value, json};
use tracing::debug;

use super::identity::{Identity, claim_identity};
use super::wire::{ConnectAuth, WireMessage, encoded_size};
use crate::chat::deliver::emit_checked;
use crate::chat::rooms::{FULL_ROOM, user_room};
use crate::chat::{Chat, Connection, now_ms, now_ms_u64};
use crate::domain::session::{self, Claim, TOKEN_BYTES, USER_ID_BYTES};
use crate::domain::{
    Community, Connected, DomainError, ErrorCode, Place, Protocol, RoomName, UserId, UserName,
};
use crate::store::Conversation;
use crate::store::history::{Session, conversation_of, random_hex};

/// Messages returned by a history read when the client names no limit.
pub(super) const DEFAULT_PAGE: u32 = 50;

/// Most bytes of messages in one answer (history page, `sync`, join): far below the engine's
/// bound on a connection's queued output (1 MiB), so an answer is never what overflows it.
/// A longer page is cut short with `more: true`, and the client pages on.
pub(crate) const PAGE_BYTES: usize = 256 * 1024;

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
    // The store decides between nodes sharing it: only one new user gets a name, however
    // many ask for it at once (the checks above saw only this node and committed users).
    let claimed = if fresh {
        let name = UserName::parse(&wanted).map_err(refusal)?;
        chat.history
            .claim_name(&user, &name, session::expires_at(now), now)
            .await
            .map_err(refusal)?;
        Some(name)
    } else {
        None
    };
    if saved {
        let session = Session {
            user: user.clone(),
            name: wanted.trim().to_owned(),
        };
        if let Err(error) = chat.history.save_session(&token, &session, now).await {
            if let Some(name) = &claimed {
                chat.history.release_name(&user, name).await;
            }
            return Err(refusal(error));
        }
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

/// The client's address (for per-address quotas), if the engine knows it: behind a trusted
/// proxy, the one it forwards for (`--trusted-proxies`).
pub(super) fn client_address(socket: &Socket<Connection>) -> Option<std::net::IpAddr> {
    socket.handshake().client_addr
}

/// The socket's user if it speaks the full protocol (whose memberships are stored), `None`
/// for a tutorial user (who lives only as long as its socket); an error without a name.
pub(super) fn full_user(
    chat: &Chat,
    socket: &Socket<Connection>,
) -> Result<Option<UserId>, DomainError> {
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
pub(super) async fn learn_recipient(chat: &Chat, raw_name: &str) -> Result<(), DomainError> {
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

/// Make sure the community knows `room`: a room unknown here may have been created by another
/// node sharing the store, and is learnt from it; else `unknown_room`.
pub(super) async fn known_room(chat: &Chat, room: &RoomName) -> Result<(), DomainError> {
    if chat.community().room_exists(room) {
        return Ok(());
    }
    if !chat.history.room_exists(room).await? {
        return Err(DomainError::new(
            ErrorCode::UnknownRoom,
            format!("no room #{room}"),
        ));
    }
    chat.community().restore_rooms([room.clone()]);
    Ok(())
}

pub(super) fn member_check(chat: &Chat, socket: &Socket<Connection>) -> Result<(), DomainError> {
    match chat.community().name_of(socket.id()) {
        Some(_) => Ok(()),
        None => Err(DomainError::new(
            ErrorCode::NameRequired,
            "connect with a name or token first",
        )),
    }
}

/// The direct conversation between the socket's user and the user called `with`.
pub(super) fn direct_conversation(
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
pub(super) async fn page_after(
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
pub(super) async fn page_before(
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
pub(super) fn within_budget(sizes: impl Iterator<Item = usize>, budget: &mut usize) -> usize {
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
