//! The classic Socket.IO tutorial's protocol, as an adapter over the [`Community`] rules.
//!
//! In: `addUser(name)` / `sendChat(text)`, or their lowercase spellings `adduser` /
//! `sendchat`. Out: `updateChat(speaker, text)` and `updateUsers({name: name, ...})`, spelled
//! the way the receiving socket spelled its `addUser` (so camelCase and lowercase clients chat
//! together). Either send spelling is accepted from anyone. Errors go to the offending socket
//! only, as `updateChat("Server", reason)`: the tutorial page shows nothing else.
//!
//! Tutorial users live in `general`; their messages are stored and reach full-protocol
//! clients there as `message:new`.
//!
//! [`Community`]: crate::domain::Community

use std::sync::Arc;

use serde_json::Value;
use tracing::debug;

use super::identity::claim_identity;
use super::wire::Spelling;
use crate::chat::deliver::emit_checked;
use crate::chat::{Chat, Connection, now_ms};
use crate::domain::session::Claim;
use crate::domain::{DomainError, ErrorCode, RoomName, SERVER_NAME, UserName};
use crate::store::history::general_conversation;
use engine::Socket;

/// `addUser(name)`.
pub async fn add_user(chat: &Chat, socket: &Socket<Connection>, used: Spelling, args: &[Value]) {
    let name = match text_argument(args, "a name must be text") {
        Ok(name) => name,
        Err(error) => return refuse(chat, socket, used, &error),
    };
    if chat.is_full_protocol(socket) {
        let current = chat.community().name_of(socket.id()).cloned();
        let error = DomainError::new(
            ErrorCode::AlreadyNamed,
            match current {
                Some(current) => format!("you are already in the chat as {current}"),
                None => "you are already in the chat".to_owned(),
            },
        );
        return refuse(chat, socket, used, &error);
    }
    // A name is claimed as in the full protocol: one held by a full-protocol user who is
    // away (a valid session) is not free either. A named socket is answered by the community
    // (its own name again changes nothing; another is refused).
    let user = chat.history.tutorial_user(socket.id().as_str());
    // A new name is then claimed in the store too, which nodes may share (released again
    // below if the user does not arrive after all).
    let mut claimed = None;
    if chat.community().name_of(socket.id()).is_none() {
        let claim = async {
            claim_identity(chat, Claim::Name(name.to_owned()), now_ms()).await?;
            let name = UserName::parse(name)?;
            chat.claim_tutorial_name(&user, &name).await?;
            Ok::<_, DomainError>(name)
        };
        match claim.await {
            Ok(name) => claimed = Some(name),
            Err(error) => return refuse(chat, socket, used, &error),
        }
    }
    // With recovery on, notices carry `general`'s position: learn it before the first one.
    if chat.recovery
        && let Err(error) = chat.prime(&general_conversation()).await
    {
        if let Some(name) = claimed {
            chat.tutorial_claimed(user, name, false).await;
        }
        return refuse(chat, socket, used, &error);
    }
    let arrived = {
        let mut community = chat.community();
        community
            .add_tutorial(socket.id(), user.clone(), name)
            .map(|notices| {
                // Join before delivering, under the lock, so the newcomer is in its spelling's
                // room for every later broadcast and gets its own greeting in its spelling.
                let arrived = !notices.is_empty();
                if arrived {
                    socket.data().set_spelling(Some(used));
                    socket.join(used.room());
                    let notices =
                        chat.presence()
                            .socket_arrived(&community, socket.id(), false, notices);
                    chat.deliver(&community, Some(socket), &notices);
                }
                arrived
            })
    };
    if let Some(name) = claimed {
        chat.tutorial_claimed(user, name, matches!(arrived, Ok(true)))
            .await;
    }
    match arrived {
        // With recovery on, its pid can resume it from now on, also after a crash.
        Ok(true) => super::recovery::remember_connected(chat, socket).await,
        Ok(false) => {}
        Err(error) => refuse(chat, socket, used, &error),
    }
}

/// `sendChat(text)`: stored in `general`, then delivered to both protocols.
pub async fn send_chat(
    chat: &Arc<Chat>,
    socket: &Socket<Connection>,
    used: Spelling,
    args: &[Value],
) {
    let text = match text_argument(args, "a message must be text") {
        Ok(text) => text,
        Err(error) => return refuse(chat, socket, used, &error),
    };
    let draft = chat.take_message_token(socket).and_then(|()| {
        chat.community()
            .draft_for_room(socket.id(), &RoomName::general(), text)
    });
    let draft = match draft {
        Ok(draft) => draft,
        Err(error) => return refuse(chat, socket, used, &error),
    };
    // Stored in the socket's pipeline; a failure is told to it afterwards, in its spelling.
    let spelling = socket.data().spelling().unwrap_or(used);
    let emitter = socket.emitter();
    chat.pipeline(socket, draft, None, move |chat, result| match result {
        Ok((message, _)) => chat.post(message),
        Err(error) => {
            debug!(code = error.code().as_str(), "message not stored");
            let line = server_line(chat, &error);
            if let Err(error) = emitter.emit(spelling.update_chat(), &line) {
                debug!(?error, "refusal not delivered");
            }
        }
    })
    .await;
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
fn refuse(chat: &Chat, socket: &Socket<Connection>, used: Spelling, error: &DomainError) {
    debug!(socket = %socket.id(), code = error.code().as_str(), "refused");
    let spelling = socket.data().spelling().unwrap_or(used);
    emit_checked(
        socket.id(),
        socket.emit(spelling.update_chat(), &server_line(chat, error)),
    );
}

/// `updateChat("Server", reason)`, with the stream's position last when recovery is on.
fn server_line(chat: &Chat, error: &DomainError) -> Vec<String> {
    let mut line = vec![SERVER_NAME.to_owned(), error.message().to_owned()];
    if chat.recovery {
        line.push(chat.general_position());
    }
    line
}
