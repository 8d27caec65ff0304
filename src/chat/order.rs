//! Delivery in order: notices go out under the community lock (see [`super::deliver`]); a
//! socket's messages are stored in a group commit and still
//! answered and delivered in the order it sent them; stored messages are released to
//! everyone in sequence order ([`InOrder`]); the latest messages of busy rooms stay in
//! memory ([`Tail`]) for catch-up without reading the history.

use std::collections::HashMap;
use std::sync::{Arc, MutexGuard, PoisonError};

use engine::{Socket, SocketId};
use serde_json::Value;

use super::outgoing::{self, WireMessage};
use super::{Chat, Connection, deliver, now_ms, now_ms_u64};
use crate::cluster::ClusterEvent;
use crate::domain::{
    Audience, Community, DomainError, Draft, InOrder, Message, Notice, Outgoing, RoomName, Tail,
};
use crate::store::Conversation;
use crate::store::history;

/// Longest a stored message waits for a predecessor before it is delivered anyway.
pub(super) const MAX_ORDER_WAIT_MS: u64 = 2_000;

/// Most rooms whose latest messages are kept in memory (see [`Tail`]). A tail's messages are
/// JSON values, a few times their estimated size: at most about
/// `MAX_TAILS` × 4 × [`crate::domain::tail::TAIL_BYTES`] = 32 MiB.
pub(super) const MAX_TAILS: usize = 256;

impl Chat {
    /// Deliver notices (see [`deliver::deliver`]); call with the community locked. In a
    /// cluster, presence changes go to the other nodes too: presence decides which are news
    /// for the whole cluster (an arrival another node announced never gets here).
    pub(crate) fn deliver(
        &self,
        community: &Community<SocketId>,
        actor: Option<&Socket<Connection>>,
        notices: &[Outgoing<SocketId>],
    ) {
        self.deliver_to(community, actor, notices);
        self.publish_presence(notices);
    }

    /// In a cluster, tell the other nodes of the presence changes among `notices`.
    pub(crate) fn publish_presence(&self, notices: &[Outgoing<SocketId>]) {
        if !self.clustered() {
            return;
        }
        for outgoing in notices {
            if let (Notice::Presence { name, online }, Audience::Watchers(rooms)) =
                (&outgoing.notice, &outgoing.to)
            {
                self.publish(ClusterEvent::Presence {
                    name: name.as_str().to_owned(),
                    online: *online,
                    rooms: rooms.iter().map(|room| room.as_str().to_owned()).collect(),
                });
            }
        }
    }

    /// Deliver what another node told about (it told every node itself).
    pub(crate) fn deliver_here(
        &self,
        community: &Community<SocketId>,
        notices: &[Outgoing<SocketId>],
    ) {
        self.deliver_to(community, None, notices);
    }

    fn deliver_to(
        &self,
        community: &Community<SocketId>,
        actor: Option<&Socket<Connection>>,
        notices: &[Outgoing<SocketId>],
    ) {
        if let Some(io) = self.io() {
            let position = || self.general_position();
            deliver::deliver(
                io,
                community,
                actor,
                notices,
                self.recovery.then_some(&position as &dyn Fn() -> String),
                &self.users_out,
                &*self.presence,
            );
        }
    }

    /// Before storing the first message of a conversation in this process (or reading a
    /// room's latest messages): learn what was delivered before, so its messages can be
    /// released in sequence order, and start the room's tail there.
    pub(crate) async fn prime(&self, conversation: &Conversation) -> Result<(), DomainError> {
        {
            let order = self.order_lock();
            if let Some(state) = order.get(conversation) {
                self.start_tail(conversation, state.released());
                return Ok(());
            }
        }
        let last = self.history.last_seq(conversation).await?;
        let order = &mut *self.order_lock();
        let released = order
            .entry(conversation.clone())
            .or_insert_with(|| InOrder::after(last))
            .released();
        self.start_tail(conversation, released);
        Ok(())
    }

    /// Give a room a tail, if it has none, starting after `released`. Called with the
    /// `order` lock held, so no message of the room is released in between: a tail never
    /// claims a message it was not given. A full set of tails loses an arbitrary one (that
    /// room reads the history until it is primed again).
    pub(super) fn start_tail(&self, conversation: &Conversation, released: i64) {
        if conversation.as_room().is_none() {
            return;
        }
        let mut tails = self.tails_lock();
        if tails.contains_key(conversation) {
            return;
        }
        if tails.len() >= MAX_TAILS
            && let Some(evicted) = tails.keys().next().cloned()
        {
            tails.remove(&evicted);
        }
        tails.insert(conversation.clone(), Tail::after(released));
    }

    /// Up to `limit` messages of `conversation` after `since` (wire form and estimated
    /// size), from memory, and the sequence up to which that answer is complete; `None` if
    /// memory does not reach back that far, or cannot tell what is newest: a message waits
    /// for a predecessor or one is being read from the store (another node stored it).
    pub(crate) fn recent_after(
        &self,
        conversation: &Conversation,
        since: i64,
        limit: u32,
    ) -> Option<(Vec<(Value, usize)>, i64)> {
        let order = self.order_lock();
        if !order.get(conversation).is_some_and(InOrder::is_complete) {
            return None;
        }
        let tails = self.tails_lock();
        let tail = tails.get(conversation)?;
        let recent = tail.after_seq(since, limit as usize)?;
        Some((
            recent
                .into_iter()
                .map(|(json, size)| (json.clone(), size))
                .collect(),
            tail.last(),
        ))
    }

    pub(super) fn tails_lock(&self) -> MutexGuard<'_, HashMap<Conversation, Tail<Value>>> {
        self.tails.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queue a validated message for storing (see [`History::append_queued`]).
    pub(crate) async fn enqueue(
        &self,
        draft: Draft,
        client_id: Option<String>,
    ) -> Result<history::PendingMessage, DomainError> {
        self.prime(&history::conversation_of(&draft.place)).await?;
        self.history.append_queued(draft, client_id, now_ms()).await
    }

    /// Pipeline a message of `socket`: wait for room among its messages in flight, queue it
    /// for storing, and return; a task then waits for the commit and for the socket's
    /// previous message to be finished, and calls `finish` (ack, deliver). So one socket
    /// may have many messages in one group commit, and its acks and deliveries still come
    /// in the order it sent them. `on_disconnect` waits for the last one (see
    /// [`Connection::wait_for_pipeline`]).
    pub(crate) async fn pipeline<F>(
        self: &Arc<Self>,
        socket: &Socket<Connection>,
        draft: Draft,
        client_id: Option<String>,
        finish: F,
    ) where
        F: FnOnce(&Chat, Result<(Message, bool), DomainError>) + Send + 'static,
    {
        let in_flight = Arc::clone(&socket.data().in_flight);
        // The semaphore is never closed, so this only fails if it were: then go unbounded.
        let permit = in_flight.acquire_owned().await.ok();
        let pending = self.enqueue(draft, client_id).await;
        let (done, finished) = tokio::sync::oneshot::channel::<()>();
        let previous = socket.data().chain(finished);
        let chat = Arc::clone(self);
        tokio::spawn(async move {
            let result = match pending {
                Ok(pending) => pending.await,
                Err(error) => Err(error),
            };
            if let Some(previous) = previous {
                let _ = previous.await;
            }
            finish(&chat, result);
            drop(permit);
            let _ = done.send(());
        });
    }

    /// Deliver a message this node stored to everyone who should see it, after its
    /// predecessors; in a cluster, the other nodes too.
    pub(crate) fn post(&self, message: Message) {
        self.publish_message(&message);
        self.release(message);
    }

    /// Deliver a stored message (this node's or another's) to this node's clients, after
    /// its predecessors.
    pub(super) fn release(&self, message: Message) {
        let community = self.community();
        let conversation = history::conversation_of(&message.place);
        let seq = message.seq;
        let ready = self
            .order_lock()
            .entry(conversation)
            .or_insert_with(|| InOrder::after(seq - 1))
            .accept(seq, message, now_ms_u64());
        self.deliver_messages(&community, ready);
    }

    pub(super) fn deliver_messages(&self, community: &Community<SocketId>, messages: Vec<Message>) {
        if messages.is_empty() {
            return;
        }
        {
            let mut tails = self.tails_lock();
            for message in &messages {
                if let Some(tail) = tails.get_mut(&history::conversation_of(&message.place)) {
                    let size = outgoing::message_size(
                        &message.text,
                        message.from.as_str(),
                        message.client_id.as_deref(),
                    );
                    tail.push(
                        message.seq,
                        WireMessage::live(message, None).to_value(),
                        size,
                    );
                }
            }
        }
        for message in messages {
            let notices = community.posted(message);
            self.deliver(community, None, &notices);
        }
    }

    /// Where `general`'s stream stands, as a recovery offset (`seq:ts:general`): carried
    /// by tutorial notices that are no stored message, so a client resuming from one gets
    /// every message after what it had seen. Lock order: community, then order.
    pub(crate) fn general_position(&self) -> String {
        let released = self.released(&history::general_conversation()).unwrap_or(0);
        format!("{released}:{}:{}", now_ms(), RoomName::general().as_str())
    }

    /// The highest sequence of `conversation` broadcast by this process, if any.
    pub(crate) fn released(&self, conversation: &Conversation) -> Option<i64> {
        self.order_lock().get(conversation).map(InOrder::released)
    }

    pub(super) fn order_lock(&self) -> MutexGuard<'_, HashMap<Conversation, InOrder<Message>>> {
        self.order.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
