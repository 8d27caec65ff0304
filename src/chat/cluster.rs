//! The chat in a cluster: what this node publishes on the [`Bus`] after storing, what it
//! does with the other nodes' events, and the gap repair that makes a lost or late event
//! harmless: a conversation whose next message has waited [`REPAIR_AFTER_MS`] reads the
//! missing ones from the store (single node too: a message whose sender's task is slow).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tracing::{debug, warn};

use engine::SocketId;

use super::{Chat, now_ms, now_ms_u64};
use crate::cluster::{Bus, BusCounters, BusMessage, ClusterEvent, Creator, Received};
use crate::domain::{Community, Message, Place, RoomName, UserId, UserName};
use crate::store::{Conversation, MAX_PAGE_LIMIT, StoredMessage};

/// How long a message waits for a missing predecessor before the store is read for it.
pub const REPAIR_AFTER_MS: u64 = 200;

/// How often conversations are checked for overdue gaps.
const REPAIR_EVERY: Duration = Duration::from_millis(50);

/// After a failed read (the store is away), wait this long before trying again; the
/// sweeper gives the gap up after `MAX_ORDER_WAIT_MS` meanwhile.
const REPAIR_BACKOFF: Duration = Duration::from_millis(500);

/// While the bus is lost, conversations are read from the store every this many checks
/// (a second).
const POLL_WITHOUT_BUS_TICKS: u64 = 20;

/// Most conversations one catch-up reads.
const MAX_CATCH_UP: usize = 1_000;

/// How often who is present on the other nodes is read again from the shared presence
/// (also at startup and after the bus lost events).
const REFRESH_ELSEWHERE_EVERY: Duration = Duration::from_secs(30);

/// Most pages one repair reads (the most messages that can wait is bounded too).
const MAX_REPAIR_PAGES: usize = 10;

impl Chat {
    /// Join the cluster: publish on `bus` from now on and apply what it brings.
    pub fn follow(self: &Arc<Self>, bus: Arc<dyn Bus>) {
        let Some(mut events) = bus.subscribe() else {
            warn!("cluster bus already followed");
            return;
        };
        if self.bus.set(bus).is_err() {
            return;
        }
        let chat = Arc::downgrade(self);
        tokio::spawn(async move {
            while let Some(received) = events.recv().await {
                let Some(chat) = chat.upgrade() else { return };
                match received {
                    Received::Event(event) => chat.apply(*event),
                    Received::Resubscribed => {
                        chat.catch_up_all().await;
                        chat.reload_rooms().await;
                        chat.refresh_elsewhere().await;
                    }
                }
            }
        });
        let chat = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(REFRESH_ELSEWHERE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(chat) = chat.upgrade() else { return };
                chat.refresh_elsewhere().await;
            }
        });
    }

    /// Whether this node is part of a cluster.
    pub(crate) fn clustered(&self) -> bool {
        self.bus.get().is_some()
    }

    /// In a cluster, whether the bus is connected and subscribed.
    pub fn bus_connected(&self) -> Option<bool> {
        self.bus.get().map(|bus| bus.is_connected())
    }

    /// In a cluster, what the bus counted.
    pub fn bus_counters(&self) -> Option<&BusCounters> {
        self.bus.get().map(|bus| bus.counters())
    }

    /// Tell the other nodes (nothing on a single node).
    pub(crate) fn publish(&self, event: ClusterEvent) {
        if let Some(bus) = self.bus.get() {
            bus.publish(event);
        }
    }

    /// A room was stored by this node, with its creator as its first member.
    pub(crate) fn publish_room_created(&self, room: &RoomName, creator: &UserId, name: &UserName) {
        self.publish(ClusterEvent::RoomCreated {
            room: room.as_str().to_owned(),
            creator: Some(Creator {
                user: creator.as_str().to_owned(),
                name: name.as_str().to_owned(),
            }),
        });
    }

    /// A membership was stored by this node.
    pub(crate) fn publish_membership(
        &self,
        user: &UserId,
        name: &UserName,
        room: &RoomName,
        joined: bool,
    ) {
        self.publish(ClusterEvent::Membership {
            user: user.as_str().to_owned(),
            name: name.as_str().to_owned(),
            room: room.as_str().to_owned(),
            joined,
        });
    }

    /// A user was deleted by this node.
    pub(crate) fn publish_forgotten(&self, user: &UserId) {
        self.publish(ClusterEvent::UserForgotten {
            user: user.as_str().to_owned(),
        });
    }

    /// A message stored by this node: the others release it too.
    pub(super) fn publish_message(&self, message: &Message) {
        if self.clustered() {
            self.publish(ClusterEvent::Message {
                message: BusMessage::of(message),
            });
        }
    }

    /// Another node's event.
    fn apply(&self, event: ClusterEvent) {
        match event {
            ClusterEvent::Message { message } => match message.into_message() {
                Ok(message) if self.concerns_this_node(&message) => self.release(message),
                Ok(_) => {}
                Err(error) => warn!(%error, "cluster bus: invalid message dropped"),
            },
            ClusterEvent::RoomCreated { room, creator } => {
                let Ok(room) = RoomName::parse(&room) else {
                    warn!("cluster bus: invalid room dropped");
                    return;
                };
                let mut community = self.community();
                community.restore_rooms([room.clone()]);
                if let Some(Creator { user, name }) = creator
                    && let Ok(name) = UserName::parse(&name)
                {
                    let notices =
                        community.membership_elsewhere(&UserId::new(user), &name, &room, true);
                    self.deliver_here(&community, &notices);
                }
            }
            ClusterEvent::Membership {
                user,
                name,
                room,
                joined,
            } => {
                let (Ok(name), Ok(room)) = (UserName::parse(&name), RoomName::parse(&room)) else {
                    warn!("cluster bus: invalid membership dropped");
                    return;
                };
                let mut community = self.community();
                let notices =
                    community.membership_elsewhere(&UserId::new(user), &name, &room, joined);
                self.deliver_here(&community, &notices);
            }
            ClusterEvent::UserForgotten { user } => {
                let mut community = self.community();
                if let Some(mut notices) = community.forget_user(&UserId::new(user)) {
                    notices.extend(community.users_notice());
                    self.deliver_here(&community, &notices);
                }
            }
            ClusterEvent::Presence {
                name,
                online,
                rooms,
            } => {
                let Ok(name) = UserName::parse(&name) else {
                    warn!("cluster bus: invalid presence dropped");
                    return;
                };
                let rooms: Vec<RoomName> = rooms
                    .iter()
                    .filter_map(|room| RoomName::parse(room).ok())
                    .collect();
                let mut community = self.community();
                let notices = if online {
                    community.arrived_elsewhere(name, rooms)
                } else {
                    community.departed_elsewhere(name, rooms)
                };
                self.deliver_here(&community, &notices);
            }
        }
    }

    /// After the bus lost events: the rooms and memberships other nodes stored meanwhile
    /// (created, joined, left), read from the store and applied as if they had been
    /// announced. Memberships of users present here are left as they are (a join of theirs
    /// may be newer than the read).
    async fn reload_rooms(&self) {
        let (Ok(rooms), Ok(members)) = (
            self.history.rooms().await,
            self.history.live_members(now_ms()).await,
        ) else {
            return;
        };
        let mut stored: HashMap<RoomName, HashSet<UserId>> = HashMap::new();
        for member in &members {
            for room in &member.rooms {
                stored
                    .entry(room.clone())
                    .or_default()
                    .insert(member.user.clone());
            }
        }
        let mut community = self.community();
        community.restore_rooms(
            rooms
                .iter()
                .filter_map(|(name, _)| RoomName::parse(name).ok()),
        );
        let mut notices = Vec::new();
        for member in &members {
            for room in &member.rooms {
                notices.extend(community.membership_elsewhere(
                    &member.user,
                    &member.name,
                    room,
                    true,
                ));
            }
        }
        let general = RoomName::general();
        let left: Vec<(UserId, UserName, RoomName)> = community
            .rooms()
            .into_iter()
            .filter(|summary| summary.name != general)
            .flat_map(|summary| {
                let room = summary.name;
                let kept = stored.get(&room);
                community
                    .member_ids(&room)
                    .into_iter()
                    .filter(|user| {
                        !community.is_present(user)
                            && !kept.is_some_and(|kept| kept.contains(*user))
                    })
                    .filter_map(|user| {
                        let name = community.name_of_user(user)?.clone();
                        Some((user.clone(), name, room.clone()))
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        for (user, name, room) in left {
            notices.extend(community.membership_elsewhere(&user, &name, &room, false));
        }
        if !notices.is_empty() {
            debug!(
                notices = notices.len(),
                "memberships read again from the store"
            );
            self.deliver_here(&community, &notices);
        }
    }

    /// Read who is present on the other nodes from the shared presence, and list them
    /// (silently): at startup, after the bus lost events, and now and then, so a lost
    /// announcement is not listed wrong for long.
    pub(super) async fn refresh_elsewhere(&self) {
        let mark = self.community().elsewhere_mark();
        let Some(names) = self.presence().online_elsewhere().await else {
            return;
        };
        let mut community = self.community();
        if let Some(users) = community.set_elsewhere(names, mark) {
            self.deliver_here(&community, &[users]);
        }
    }

    /// Whether another node's message has anyone to reach here: a room's members may be
    /// (and its tail), a direct message only when one side is present here or its
    /// conversation is followed already. So the order states of the whole cluster's direct
    /// conversations do not pile up on every node.
    fn concerns_this_node(&self, message: &Message) -> bool {
        let Place::Direct { from, to, .. } = &message.place else {
            return true;
        };
        let community = self.community();
        community.is_present(from)
            || community.is_present(to)
            || self
                .order_lock()
                .contains_key(&crate::store::history::conversation_of(&message.place))
    }

    /// Check for overdue gaps every [`REPAIR_EVERY`], for as long as the chat lives.
    pub(super) fn start_repairs(self: &Arc<Self>) {
        let chat = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(REPAIR_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut ticks: u64 = 0;
            loop {
                tick.tick().await;
                ticks += 1;
                let Some(chat) = chat.upgrade() else { return };
                if !chat.repair_overdue().await {
                    tokio::time::sleep(REPAIR_BACKOFF).await;
                }
                // Without the bus, the other nodes' messages come from the store.
                let bus_lost = chat.bus.get().is_some_and(|bus| !bus.is_connected());
                if bus_lost && ticks.is_multiple_of(POLL_WITHOUT_BUS_TICKS) {
                    chat.catch_up_all().await;
                }
            }
        });
    }

    /// Read what overdue gaps miss from the store and release it; `false` if the store
    /// failed.
    async fn repair_overdue(&self) -> bool {
        let now = now_ms_u64();
        let due: Vec<(Conversation, i64, i64, Message)> = self
            .order_lock()
            .iter_mut()
            .filter_map(|(conversation, order)| {
                let waiting = (order.first_waiting_seq()?, order.first_waiting()?.clone());
                let released = order.start_repair(now, REPAIR_AFTER_MS)?;
                Some((conversation.clone(), released, waiting.0, waiting.1))
            })
            .collect();
        let mut healthy = true;
        for (conversation, released, until, sample) in due {
            debug!(
                ?conversation,
                released, until, "repairing a gap from the store"
            );
            let found = self.read_missing(&conversation, released, until).await;
            healthy &= found.is_some();
            if let Some(found) = &found {
                self.repairs.gaps.fetch_add(1, Ordering::Relaxed);
                self.repairs
                    .messages
                    .fetch_add(found.len() as u64, Ordering::Relaxed);
            }
            let community = self.community();
            let ready = {
                let mut order = self.order_lock();
                let Some(state) = order.get_mut(&conversation) else {
                    continue;
                };
                let mut ready = Vec::new();
                for stored in found.unwrap_or_default() {
                    if let Some(message) = message_like(stored, &sample) {
                        let seq = message.seq;
                        ready.extend(state.accept(seq, message, now));
                    }
                }
                state.repair_done();
                ready
            };
            self.deliver_messages(&community, ready);
        }
        healthy
    }

    /// Read what is stored after what was released, in every conversation this node
    /// follows (at most [`MAX_CATCH_UP`]), and release it: after the bus lost events.
    async fn catch_up_all(&self) {
        let followed: Vec<(Conversation, i64)> = self
            .order_lock()
            .iter()
            .take(MAX_CATCH_UP)
            .map(|(conversation, order)| (conversation.clone(), order.released()))
            .collect();
        debug!(conversations = followed.len(), "catching up from the store");
        for (conversation, released) in followed {
            let Some(found) = self.read_missing(&conversation, released, i64::MAX).await else {
                return;
            };
            if found.is_empty() {
                continue;
            }
            let community = self.community();
            let ready = {
                let mut order = self.order_lock();
                let Some(state) = order.get_mut(&conversation) else {
                    continue;
                };
                let mut ready = Vec::new();
                for stored in found {
                    if let Some(message) = stored_message(stored, &community) {
                        let seq = message.seq;
                        ready.extend(state.accept(seq, message, now_ms_u64()));
                    }
                }
                ready
            };
            self.deliver_messages(&community, ready);
        }
    }

    /// The stored messages after `released` up to the one before `until`; `None` if the
    /// store failed.
    async fn read_missing(
        &self,
        conversation: &Conversation,
        released: i64,
        until: i64,
    ) -> Option<Vec<StoredMessage>> {
        let mut found: Vec<StoredMessage> = Vec::new();
        let mut after = released;
        for _ in 0..MAX_REPAIR_PAGES {
            let page = self
                .history
                .after(conversation, after, MAX_PAGE_LIMIT)
                .await
                .ok()?;
            let short = page.len() < MAX_PAGE_LIMIT as usize;
            after = page.last().map_or(after, |message| message.seq);
            found.extend(page.into_iter().filter(|message| message.seq < until));
            if short || after >= until - 1 {
                break;
            }
        }
        Some(found)
    }
}

/// A stored message in the domain's form, its place taken from `sample`, a message of the
/// same conversation (a direct message's two sides and their names).
fn message_like(stored: StoredMessage, sample: &Message) -> Option<Message> {
    let place = match &sample.place {
        Place::Room(room) => Place::Room(room.clone()),
        Place::Direct { from, to, .. } => {
            if stored.author.user_id == from.as_str() {
                sample.place.clone()
            } else if stored.author.user_id == to.as_str() {
                Place::Direct {
                    from: to.clone(),
                    to: from.clone(),
                    to_name: sample.from.clone(),
                }
            } else {
                return None;
            }
        }
    };
    Some(Message {
        id: stored.id,
        place,
        seq: stored.seq,
        timestamp_ms: stored.timestamp_ms,
        from: UserName::parse(&stored.author.name).ok()?,
        text: stored.body,
        client_id: stored.client_id,
    })
}

/// A stored message in the domain's form, a direct message's recipient named from the
/// community (`None` if it knows neither side by that id).
fn stored_message(stored: StoredMessage, community: &Community<SocketId>) -> Option<Message> {
    let place = match (
        stored.conversation.as_room(),
        stored.conversation.as_direct(),
    ) {
        (Some(room), _) => Place::Room(RoomName::parse(room).ok()?),
        (None, Some((a, b))) => {
            let author = stored.author.user_id.as_str();
            let to = UserId::new(if author == a { b } else { a });
            let to_name = community.name_of_user(&to)?.clone();
            Place::Direct {
                from: UserId::new(author),
                to,
                to_name,
            }
        }
        (None, None) => return None,
    };
    Some(Message {
        id: stored.id,
        place,
        seq: stored.seq,
        timestamp_ms: stored.timestamp_ms,
        from: UserName::parse(&stored.author.name).ok()?,
        text: stored.body,
        client_id: stored.client_id,
    })
}
