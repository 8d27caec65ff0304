//! Full protocol, messages: `message:send` and `dm:send` (rate-limited, pipelined, acked
//! once stored), `message:history` and `dm:history`.

use std::sync::Arc;

use engine::{Ack, Socket};
use serde_json::{Value, json};

use super::full::{
    DEFAULT_PAGE, answer, direct_conversation, known_room, learn_recipient, member_check,
    page_before,
};
use super::wire;
use crate::chat::{Chat, Connection};
use crate::domain::{DomainError, RoomName};
use crate::store::Conversation;

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
        known_room(chat, &room).await?;
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

/// What becomes of a `message:send` / `dm:send`.
enum Sending {
    /// Store it (with its client id), then answer and deliver.
    Queue(crate::domain::Draft, Option<String>),
    /// Answer at once, in turn with the socket's messages in flight.
    Answer(Result<Value, DomainError>),
}
