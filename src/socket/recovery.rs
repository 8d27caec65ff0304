//! Socket.IO connection-state recovery, backed by durable history (`--connection-state-recovery`).
//!
//! With recovery on, the engine gives each socket a private `pid`, and every room message
//! carries an offset `seq:timestamp:room` as its last argument (see
//! [`super::wire::offset`]). A client that reconnects sends `{pid, offset}`; if
//! the `pid` is known (saved when the socket connected and again when it left, in the
//! durable store, so also across restarts and on any node of a cluster), the socket resumes
//! as the same user in the same rooms (its stored memberships, also those joined after the
//! record was saved) and first receives, in order, the room messages it missed:
//! - in the offset's room, exactly those after the offset's sequence;
//! - in the user's other rooms, those from a few seconds before the offset's time on (rooms
//!   are delivered independently, so their messages interleave only approximately by time):
//!   nothing is lost, and a message may come twice — clients dedupe by `id`.
//!
//! Direct messages are not replayed; `sync` covers them.
//!
//! Tutorial clients resume too: their `updateChat` carries the offset (a message's own, or
//! the stream's position for `Server` notices), a dropped tutorial user is held for the
//! presence grace period (so a resume in time is never announced), and a resumed socket
//! gets the `updateChat` of the messages of `general` it missed, then the current user list.

use serde::{Deserialize, Serialize};
use tracing::debug;

use super::wire::{self, ConnectAuth, Spelling, WireMessage, encoded_size};
use crate::chat::deliver::{emit_checked, replay_to_tutorial};
use crate::chat::rooms::{FULL_ROOM, user_room};
use crate::chat::{Chat, Connection, now_ms};
use crate::domain::{Audience, DomainError, Outgoing, Protocol, RoomName, UserId, UserName};
use crate::store::history::general_conversation;
use crate::store::{Conversation, StoredMessage};
use engine::{DisconnectReason, Socket, SocketId};

/// How long after a disconnect a `pid` may resume (Node's default).
pub const RECOVERY_WINDOW_MS: i64 = 2 * 60 * 1000;

/// How long a record saved at connect lasts (it covers a server killed without a goodbye).
const CONNECTED_RECORD_MS: i64 = 24 * 60 * 60 * 1000;

/// Messages of other rooms from this long before the offset's time are replayed.
const CROSS_ROOM_SLACK_MS: i64 = 3_000;

/// Most bytes replayed in all (estimated as for history pages); beyond that recovery fails
/// and the client uses `sync`. Half the engine's default bound on queued output.
const REPLAY_BYTES: usize = 512 * 1024;

/// Most messages replayed per room; beyond that recovery fails and the client uses `sync`.
const MAX_REPLAY_PER_ROOM: u32 = 1_000;

/// What a `pid` resumes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecoveryState {
    pub name: String,
    /// Its rooms when saved. Not what it resumes in (see [`rooms_to_resume`]); still
    /// written, as records are read by every node of a cluster, older ones too.
    pub rooms: Vec<String>,
    /// A tutorial client: the spelling it used for `addUser`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tutorial: Option<Spelling>,
}

/// Whether a socket that left for `reason` may resume (as in Node: not after an explicit
/// disconnect by either side, nor after a protocol violation).
pub fn may_resume_after(reason: DisconnectReason) -> bool {
    !matches!(
        reason,
        DisconnectReason::ClientNamespaceDisconnect
            | DisconnectReason::ServerNamespaceDisconnect
            | DisconnectReason::ParseError
    )
}

/// A client's last offset, parsed.
struct Anchor {
    seq: i64,
    timestamp_ms: i64,
    room: String,
}

impl Anchor {
    fn parse(offset: &str) -> Option<Self> {
        let mut parts = offset.splitn(3, ':');
        let seq = parts.next()?.parse().ok()?;
        let timestamp_ms = parts.next()?.parse().ok()?;
        let room = parts.next()?.to_owned();
        Some(Self {
            seq,
            timestamp_ms,
            room,
        })
    }
}

/// What to save for `socket` so it can resume: its pid, user and rooms (and a tutorial
/// client's spelling); `None` for a socket without a name.
pub fn snapshot(
    chat: &Chat,
    socket: &Socket<Connection>,
) -> Option<(String, UserId, RecoveryState)> {
    if !chat.recovery {
        return None;
    }
    // The pid its client holds: a claimed one only if this socket resumed it.
    let pid = socket.client_pid()?.to_owned();
    let community = chat.community();
    let tutorial = match community.protocol_of(socket.id())? {
        Protocol::Full => None,
        Protocol::Tutorial => Some(socket.data().spelling()?),
    };
    let user = community.user_id_of(socket.id())?.clone();
    let name = community.name_of(socket.id())?.as_str().to_owned();
    let rooms = community
        .rooms_of(socket.id())
        .iter()
        .map(|room| room.as_str().to_owned())
        .collect();
    Some((
        pid,
        user,
        RecoveryState {
            name,
            rooms,
            tutorial,
        },
    ))
}

/// Save the snapshot of a socket that left, valid for [`RECOVERY_WINDOW_MS`] from now: unless
/// the socket was itself resumed less than that ago, when the record it resumed from keeps
/// its deadline (a client whose every resume fails at once must not resume forever).
pub async fn remember_left(
    chat: &Chat,
    socket: &Socket<Connection>,
    snapshot: (String, UserId, RecoveryState),
) {
    let now = now_ms();
    let mut expires = now.saturating_add(RECOVERY_WINDOW_MS);
    if let Some((resumed_at, deadline)) = socket.data().resumed()
        && now.saturating_sub(resumed_at) < RECOVERY_WINDOW_MS
    {
        expires = expires.min(deadline);
    }
    if expires > now {
        remember(chat, snapshot, expires - now).await;
    }
}

/// Save a snapshot, valid for `window_ms` from now.
pub async fn remember(chat: &Chat, snapshot: (String, UserId, RecoveryState), window_ms: i64) {
    let (pid, user, state) = snapshot;
    let Ok(state) = serde_json::to_string(&state) else {
        return;
    };
    let expires = now_ms().saturating_add(window_ms);
    if let Err(error) = chat
        .history
        .save_recovery(&pid, &user, state, expires)
        .await
    {
        debug!(%error, "recovery record not saved");
    }
}

/// Save the snapshot of a socket that just connected.
pub async fn remember_connected(chat: &Chat, socket: &Socket<Connection>) {
    if let Some(snapshot) = snapshot(chat, socket) {
        remember(chat, snapshot, CONNECTED_RECORD_MS).await;
    }
}

/// Asked by the engine before it makes the socket of a client claiming `pid` (its socket id
/// would be `id`, the one it had): whether there may be a session to resume. Not when
/// nothing is recorded under the pid (or the store cannot tell), nor while its socket is
/// still connected on another node of a cluster: that client's socket then gets an id and pid of its own, so it never
/// shares a live socket's id, and its record is saved under the pid it is given.
pub async fn may_restore(chat: &Chat, pid: &str, id: &SocketId) -> bool {
    if !chat.recovery || chat.presence().connected_elsewhere(id).await {
        return false;
    }
    matches!(chat.history.recovery(pid, now_ms()).await, Ok(Some(_)))
}

/// Try to resume a returning socket from `auth` `{pid, offset}`. `Ok(false)`: nothing to
/// resume (unknown pid, too much missed, …), connect it normally.
pub async fn recover(
    chat: &Chat,
    socket: &Socket<Connection>,
    auth: &ConnectAuth,
) -> Result<bool, DomainError> {
    let (Some(pid), Some(offset)) = (auth.pid.as_deref(), auth.offset.as_deref()) else {
        return Ok(false);
    };
    let Some(anchor) = Anchor::parse(offset) else {
        return Ok(false);
    };
    if socket.pid() != Some(pid) {
        // The engine did not accept this pid: its socket is still here, or `may_restore`
        // found nothing to resume.
        return Ok(false);
    }
    let Some((user, state, expires_at_ms)) = chat.history.recovery(pid, now_ms()).await? else {
        return Ok(false);
    };
    let Ok(state) = serde_json::from_str::<RecoveryState>(&state) else {
        return Ok(false);
    };
    if let Some(spelling) = state.tutorial {
        return recover_tutorial(chat, socket, user, &state.name, spelling, &anchor).await;
    }

    let rooms = rooms_to_resume(chat, &user, &state.name).await?;
    debug!(socket = %socket.id(), rooms = rooms.len(), "resuming");
    let mut replay = Vec::with_capacity(rooms.len());
    for room in rooms {
        match missed(chat, &room, &anchor).await? {
            Some(page) => replay.push(page),
            None => return Ok(false),
        }
    }

    // In a cluster: whether another node has the user already (its return is no news).
    let elsewhere = chat
        .presence()
        .held_elsewhere(std::slice::from_ref(&user))
        .await
        .contains(&true);

    // Under the lock (no broadcast can interleave): top up what this process broadcast since
    // the reads, then replay, then follow the live broadcasts. Bounded retries: a busy room
    // may keep moving; then the client falls back to `sync`.
    for _ in 0..3 {
        let mut top_ups = Vec::new();
        // Set when the socket resumed: whether its user arrived (was not present).
        let mut resumed = None;
        {
            let mut community = chat.community();
            for page in &replay {
                if chat
                    .released(&page.conversation)
                    .is_some_and(|released| released > page.read_up_to)
                {
                    top_ups.push((page.conversation.clone(), page.read_up_to));
                }
            }
            if top_ups.is_empty() {
                // Everything is replayed at once, queued behind the CONNECT: more than the
                // connection's output bound would cut it off on every attempt. Past the
                // budget the client connects normally and pages with `sync` instead.
                let replay_bytes: usize = replay
                    .iter()
                    .flat_map(|page| &page.messages)
                    .map(encoded_size)
                    .sum();
                if replay_bytes > REPLAY_BYTES {
                    debug!(replay_bytes, "too much to replay; not recovering");
                    return Ok(false);
                }
                let connected = community.connect(socket.id(), user.clone(), &state.name)?;
                let arrived = !connected.notices.is_empty();
                let mut notices = chat.presence().socket_arrived(
                    &community,
                    socket.id(),
                    elsewhere,
                    connected.notices,
                );
                for page in &replay {
                    if !community.is_in_room(socket.id(), &page.room) {
                        notices.extend(community.join_room(socket.id(), page.room.as_str())?.1);
                    }
                }
                if !socket.restore_session() {
                    let now = u64::try_from(now_ms()).unwrap_or(0);
                    chat.presence()
                        .socket_left(&mut community, socket.id(), false, now);
                    return Ok(false);
                }
                chat.registered_on_connect(socket.id(), None, false);
                socket.data().set_resumed(now_ms(), expires_at_ms);
                for page in &replay {
                    let released = chat.released(&page.conversation);
                    for message in &page.messages {
                        // Later ones are still on their way and will be broadcast.
                        if released.is_some_and(|released| message.seq > released) {
                            continue;
                        }
                        let offset =
                            wire::offset(message.seq, message.timestamp_ms, page.room.as_str());
                        let sent =
                            socket.emit("message:new", &(WireMessage::stored(message), offset));
                        emit_checked(socket.id(), sent);
                    }
                }
                socket.join(FULL_ROOM);
                socket.join(&user_room(&user));
                chat.deliver(&community, Some(socket), &notices);
                debug!(socket = %socket.id(), "recovered");
                resumed = Some(arrived);
            }
        }
        if let Some(arrived) = resumed {
            // Back after its grace period ended: recorded online again (a connect with a
            // token does it when it saves the session).
            if arrived {
                chat.history.mark_online(vec![user]).await;
            }
            return Ok(true);
        }
        for (conversation, after) in top_ups {
            let more = chat
                .history
                .after(&conversation, after, MAX_REPLAY_PER_ROOM)
                .await?;
            if let Some(page) = replay
                .iter_mut()
                .find(|page| page.conversation == conversation)
            {
                page.read_up_to = more
                    .last()
                    .map_or(page.read_up_to, |m| m.seq.max(page.read_up_to));
                page.messages.extend(more);
            }
        }
    }
    Ok(false)
}

/// The rooms a resuming full-protocol `user` (named `name`) is in. Present here (another
/// tab): the rooms this node has for it. Otherwise its stored memberships, the truth for
/// every node: not the record's rooms, saved at connect and again only when the socket
/// leaves, so missing the rooms joined since when its node died without a goodbye; nor
/// those of an away user here, mirrored from another node and possibly not yet up to date.
/// The user and its rooms are made known here, as a token's return does (`claim_identity`).
async fn rooms_to_resume(
    chat: &Chat,
    user: &UserId,
    name: &str,
) -> Result<Vec<RoomName>, DomainError> {
    if let Some(rooms) = chat.community().rooms_of_user(user) {
        return Ok(rooms);
    }
    let mut rooms = chat.history.user_rooms(user).await?;
    if !rooms.contains(&RoomName::general()) {
        rooms.push(RoomName::general());
    }
    let mut community = chat.community();
    // A stored membership means a stored room, even if this node has not heard of it yet.
    community.restore_rooms(rooms.iter().cloned());
    if let Ok(name) = UserName::parse(name) {
        community.restore_member(user.clone(), name, rooms.iter().cloned());
    }
    Ok(rooms)
}

/// Resume a tutorial client as `user` named `name`: back in `general` under its name, the
/// missed messages replayed as `updateChat`, then the current user list. Announced only if
/// it was no longer present (after its grace period, or a restart).
async fn recover_tutorial(
    chat: &Chat,
    socket: &Socket<Connection>,
    user: UserId,
    name: &str,
    spelling: Spelling,
    anchor: &Anchor,
) -> Result<bool, DomainError> {
    if anchor.room != RoomName::general().as_str() {
        return Ok(false);
    }
    let Ok(name) = UserName::parse(name) else {
        return Ok(false);
    };
    // Its name in the store too: after a crash here its claim lapsed, and another node may
    // have given the name away meanwhile.
    if chat.claim_tutorial_name(&user, &name).await.is_err() {
        return Ok(false);
    }
    let recovered =
        resume_in_general(chat, socket, user.clone(), name.clone(), spelling, anchor).await;
    // Still present here (held for its grace period) if it was: its claim stays too.
    let holds = matches!(recovered, Ok(true)) || chat.community().is_present(&user);
    chat.tutorial_claimed(user, name, holds).await;
    recovered
}

/// [`recover_tutorial`] once its name is claimed.
async fn resume_in_general(
    chat: &Chat,
    socket: &Socket<Connection>,
    user: UserId,
    name: UserName,
    spelling: Spelling,
    anchor: &Anchor,
) -> Result<bool, DomainError> {
    let general = RoomName::general();
    // Its notices will carry `general`'s position: learn it first (after a restart too).
    chat.prime(&general_conversation()).await?;
    let Some(mut page) = missed(chat, &general, anchor).await? else {
        return Ok(false);
    };
    // As for full clients: top up under the lock what was broadcast since the read.
    for _ in 0..3 {
        {
            let mut community = chat.community();
            let released = chat.released(&page.conversation);
            if released.is_none_or(|released| released <= page.read_up_to) {
                let replay_bytes: usize = page.messages.iter().map(encoded_size).sum();
                if replay_bytes > REPLAY_BYTES {
                    debug!(replay_bytes, "too much to replay; not recovering");
                    return Ok(false);
                }
                let Ok(notices) = community.resume_tutorial(socket.id(), user.clone(), &name)
                else {
                    return Ok(false); // its name was taken meanwhile
                };
                if !socket.restore_session() {
                    // Back to where it was: held for its grace period, or (if its arrival
                    // was never announced) gone without a word.
                    let now = u64::try_from(now_ms()).unwrap_or(0);
                    let resumable = notices.is_empty();
                    chat.presence()
                        .socket_left(&mut community, socket.id(), resumable, now);
                    return Ok(false);
                }
                chat.registered_on_connect(socket.id(), None, false);
                let mut notices =
                    chat.presence()
                        .socket_arrived(&community, socket.id(), false, notices);
                socket.data().set_spelling(Some(spelling));
                socket.join(spelling.room());
                for message in &page.messages {
                    replay_to_tutorial(socket, spelling, message);
                }
                if let Some(list) = community.users_notice() {
                    // Its list may be stale (others came and went): the current one, to it.
                    notices.push(Outgoing {
                        to: Audience::Socket(socket.id().clone()),
                        notice: list.notice,
                    });
                }
                chat.deliver(&community, Some(socket), &notices);
                debug!(socket = %socket.id(), "tutorial client recovered");
                return Ok(true);
            }
        }
        let more = chat
            .history
            .after(&page.conversation, page.read_up_to, MAX_REPLAY_PER_ROOM)
            .await?;
        page.read_up_to = more.last().map_or(page.read_up_to, |m| m.seq);
        page.messages.extend(more);
    }
    Ok(false)
}

/// The messages of one room a client may have missed, and how far the read reached.
struct Missed {
    room: RoomName,
    conversation: Conversation,
    messages: Vec<StoredMessage>,
    /// The room's messages up to this sequence were considered.
    read_up_to: i64,
}

async fn missed(
    chat: &Chat,
    room: &RoomName,
    anchor: &Anchor,
) -> Result<Option<Missed>, DomainError> {
    let conversation = Conversation::room(room.as_str());
    let limit = MAX_REPLAY_PER_ROOM + 1;
    let (messages, read_up_to) = if anchor.room == room.as_str() {
        let page = chat.history.after(&conversation, anchor.seq, limit).await?;
        let read = page.last().map_or(anchor.seq, |m| m.seq);
        (page, read)
    } else {
        let page = chat.history.before(&conversation, None, limit).await?;
        let read = page.last().map_or(0, |m| m.seq);
        let cutoff = anchor.timestamp_ms - CROSS_ROOM_SLACK_MS;
        let complete =
            page.len() < limit as usize || page.first().is_some_and(|m| m.timestamp_ms < cutoff);
        if !complete {
            return Ok(None);
        }
        (
            page.into_iter()
                .filter(|m| m.timestamp_ms >= cutoff)
                .collect(),
            read,
        )
    };
    if messages.len() > MAX_REPLAY_PER_ROOM as usize {
        return Ok(None);
    }
    Ok(Some(Missed {
        room: room.clone(),
        conversation,
        messages,
        read_up_to,
    }))
}
