//! The cluster bus: how a node tells the others what changed — a message stored, a room
//! created, a membership changed, a user forgotten — as domain events, not encoded packets,
//! so every node releases messages through its own ordering, tails and per-recipient
//! shaping.
//!
//! Delivery is at most once (Redis pub/sub): an event lost while Redis is away is made up
//! for by sequences (a gap is read from the store, see `chat::cluster`) and by the store
//! being read for what is not known in memory.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use fred::clients::SubscriberClient;
use fred::prelude::{ClientLike, EventInterface, PubsubInterface};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::{Cluster, ClusterError};
use crate::domain::{DomainError, Message, Place, RoomName, UserId, UserName};

/// Most events waiting to be published; beyond, new ones are dropped (Redis is slow or
/// away: the other nodes repair from the store).
const OUTBOX: usize = 10_000;

/// Most received events waiting to be applied; beyond, new ones are dropped.
const INBOX: usize = 10_000;

/// An event older than this when its turn to be published comes is dropped: after a Redis
/// outage the other nodes have long read it from the store.
const STALE: Duration = Duration::from_secs(3);

/// What the bus counted since the node started (for `/metrics`).
#[derive(Debug, Default)]
pub struct BusCounters {
    /// Events published to Redis.
    pub published: AtomicU64,
    /// Events Redis refused or did not answer for (lost: the other nodes repair).
    pub publish_failed: AtomicU64,
    /// Events dropped before publishing: the outbox was full, or they were stale.
    pub dropped_outbox: AtomicU64,
    /// Other nodes' events received.
    pub received: AtomicU64,
    /// Received events dropped: unreadable, or the inbox was full.
    pub dropped_inbox: AtomicU64,
    /// Events missed on a lagging subscription (counted by the Redis client).
    pub missed: AtomicU64,
}

impl BusCounters {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// A stored message as it travels between nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BusMessage {
    pub id: String,
    pub seq: i64,
    pub ts: i64,
    /// The author's name.
    pub from: String,
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// A room message's room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// A direct message's two sides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct: Option<BusDirect>,
}

/// The sides of a direct message: user ids, and the recipient's name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BusDirect {
    pub from: String,
    pub to: String,
    pub to_name: String,
}

impl BusMessage {
    pub fn of(message: &Message) -> Self {
        let (room, direct) = match &message.place {
            Place::Room(room) => (Some(room.as_str().to_owned()), None),
            Place::Direct { from, to, to_name } => (
                None,
                Some(BusDirect {
                    from: from.as_str().to_owned(),
                    to: to.as_str().to_owned(),
                    to_name: to_name.as_str().to_owned(),
                }),
            ),
        };
        Self {
            id: message.id.clone(),
            seq: message.seq,
            ts: message.timestamp_ms,
            from: message.from.as_str().to_owned(),
            text: message.text.clone(),
            client_id: message.client_id.clone(),
            room,
            direct,
        }
    }

    /// The domain's message, its names parsed (another node sent it, but it is input).
    pub fn into_message(self) -> Result<Message, DomainError> {
        let place = match (self.room, self.direct) {
            (Some(room), None) => Place::Room(RoomName::parse(&room)?),
            (None, Some(direct)) => Place::Direct {
                from: UserId::new(direct.from),
                to: UserId::new(direct.to),
                to_name: UserName::parse(&direct.to_name)?,
            },
            _ => {
                return Err(DomainError::new(
                    crate::domain::ErrorCode::InvalidArgument,
                    "a bus message needs a room or a direct conversation",
                ));
            }
        };
        Ok(Message {
            id: self.id,
            place,
            seq: self.seq,
            timestamp_ms: self.ts,
            from: UserName::parse(&self.from)?,
            text: self.text,
            client_id: self.client_id,
        })
    }
}

/// Who created a room: its first member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Creator {
    pub user: String,
    pub name: String,
}

/// What one node tells the others.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ClusterEvent {
    /// A message was stored (committed) by the sending node.
    Message { message: BusMessage },
    /// A room was created (stored) by a user (its first member) or by the server.
    RoomCreated {
        room: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        creator: Option<Creator>,
    },
    /// A user joined or left a room (stored).
    Membership {
        user: String,
        name: String,
        room: String,
        joined: bool,
    },
    /// A user that never really arrived was deleted: its name is free again.
    UserForgotten { user: String },
    /// A user arrived or left, cluster-wide (announced by the node that saw it arrive first
    /// or leave last, see `chat::redis_presence`): for the watchers on every node.
    Presence {
        name: String,
        online: bool,
        /// Its rooms but `general`, whose members watch its presence.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        rooms: Vec<String>,
    },
}

impl ClusterEvent {
    /// Messages travel on their own channel; everything else on the community channel.
    fn is_message(&self) -> bool {
        matches!(self, Self::Message { .. })
    }
}

/// What a node receives from the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// Another node's event.
    Event(Box<ClusterEvent>),
    /// The bus is subscribed again after losing its broker: what was published meanwhile
    /// is lost, read it from the store.
    Resubscribed,
}

/// An event on the wire: the sending node's uid, so a node drops its own echoes.
#[derive(Serialize, Deserialize)]
struct Envelope {
    node: String,
    #[serde(flatten)]
    event: ClusterEvent,
}

/// Tells the other nodes what changed here, and hands over what they tell.
pub trait Bus: Send + Sync + 'static {
    /// Queue `event` for the other nodes. Never waits: at most once.
    fn publish(&self, event: ClusterEvent);

    /// The other nodes' events (this node's own are dropped), in the order received. The
    /// first call takes the stream; later ones get `None`.
    fn subscribe(&self) -> Option<mpsc::Receiver<Received>>;

    /// Whether the bus reached its broker lately (readiness).
    fn is_connected(&self) -> bool;

    /// What it counted.
    fn counters(&self) -> &BusCounters;
}

/// [`Bus`] on Redis pub/sub: channels `{prefix}:conv` (messages) and `{prefix}:community`.
pub struct RedisBus {
    node: String,
    outbox: mpsc::Sender<(Instant, ClusterEvent)>,
    inbox: Mutex<Option<mpsc::Receiver<Received>>>,
    /// The last publish failed (Redis away); cleared by the next that succeeds or by
    /// subscribing again.
    down: Arc<AtomicBool>,
    counters: Arc<BusCounters>,
    subscriber: SubscriberClient,
}

impl RedisBus {
    /// Subscribe to the cluster's channels and start publishing.
    pub async fn start(cluster: &Arc<Cluster>) -> Result<Arc<Self>, ClusterError> {
        let conv = cluster.key(&["conv"]);
        let community = cluster.key(&["community"]);
        let subscriber = cluster.new_subscriber()?;
        subscriber.init().await?;
        let (inbox_tx, inbox_rx) = mpsc::channel(INBOX);
        let resubscribed = inbox_tx.clone();
        let mut received = subscriber.message_rx();
        subscriber
            .subscribe(vec![conv.clone(), community.clone()])
            .await?;
        let node = cluster.node().to_owned();
        let own = node.clone();
        let counters = Arc::new(BusCounters::default());
        let counted = Arc::clone(&counters);
        tokio::spawn(async move {
            loop {
                let message = match received.recv().await {
                    Ok(message) => message,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                        BusCounters::add(&counted.missed, missed);
                        warn!(
                            missed,
                            "cluster bus: events missed (gaps are read from the store)"
                        );
                        continue;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                };
                let Some(text) = message.value.as_str() else {
                    continue;
                };
                let envelope: Envelope = match serde_json::from_str(&text) {
                    Ok(envelope) => envelope,
                    Err(err) => {
                        BusCounters::add(&counted.dropped_inbox, 1);
                        warn!(%err, "cluster bus: unreadable event dropped");
                        continue;
                    }
                };
                if envelope.node == own {
                    continue;
                }
                BusCounters::add(&counted.received, 1);
                if inbox_tx
                    .try_send(Received::Event(Box::new(envelope.event)))
                    .is_err()
                {
                    if inbox_tx.is_closed() {
                        return;
                    }
                    BusCounters::add(&counted.dropped_inbox, 1);
                    warn!("cluster bus: inbox full, event dropped");
                }
            }
        });
        // After every reconnect: subscribe again, then have the chat read what it missed
        // (in this order, so nothing published in between is lost). Detached: the task
        // lives as long as the subscriber.
        let reconnected = subscriber.clone();
        let down = Arc::new(AtomicBool::new(false));
        let back = Arc::clone(&down);
        let _reconnects = subscriber.on_reconnect(move |server| {
            let subscriber = reconnected.clone();
            let resubscribed = resubscribed.clone();
            let back = Arc::clone(&back);
            async move {
                match subscriber.resubscribe_all().await {
                    Ok(()) => {
                        info!(%server, "cluster bus: Redis is back, subscribed again");
                        back.store(false, Ordering::Relaxed);
                        let _ = resubscribed.try_send(Received::Resubscribed);
                    }
                    Err(err) => warn!(%err, "cluster bus: subscribing again failed"),
                }
                Ok(())
            }
        });
        let lost = Arc::clone(&down);
        let _errors = subscriber.on_error(move |(err, _server)| {
            let lost = Arc::clone(&lost);
            async move {
                if !lost.swap(true, Ordering::Relaxed) {
                    warn!(
                        %err,
                        "cluster bus: Redis lost; messages are still stored and delivered on \
                         this node, other nodes' messages are read from the database"
                    );
                }
                Ok(())
            }
        });
        let (outbox, mut to_publish) = mpsc::channel::<(Instant, ClusterEvent)>(OUTBOX);
        let publisher = cluster.client().clone();
        let publisher_node = node.clone();
        let publisher_down = Arc::clone(&down);
        let counted = Arc::clone(&counters);
        tokio::spawn(async move {
            while let Some((queued, event)) = to_publish.recv().await {
                if queued.elapsed() > STALE {
                    BusCounters::add(&counted.dropped_outbox, 1);
                    debug!("cluster bus: stale event not published");
                    continue;
                }
                let channel = if event.is_message() {
                    &conv
                } else {
                    &community
                };
                let envelope = Envelope {
                    node: publisher_node.clone(),
                    event,
                };
                let Ok(payload) = serde_json::to_string(&envelope) else {
                    continue;
                };
                match publisher
                    .publish::<i64, _, _>(channel.as_str(), payload)
                    .await
                {
                    Ok(_) => {
                        BusCounters::add(&counted.published, 1);
                        if publisher_down.swap(false, Ordering::Relaxed) {
                            info!("cluster bus: Redis is back, publishing again");
                        }
                    }
                    Err(err) => {
                        BusCounters::add(&counted.publish_failed, 1);
                        if !publisher_down.swap(true, Ordering::Relaxed) {
                            warn!(
                                %err,
                                "cluster bus: Redis unreachable; messages are still stored and \
                                 delivered on this node, other nodes read them from the database"
                            );
                        }
                    }
                }
            }
        });
        Ok(Arc::new(Self {
            node,
            outbox,
            inbox: Mutex::new(Some(inbox_rx)),
            down,
            counters,
            subscriber,
        }))
    }

    /// This node's uid, as carried by what it publishes.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Unsubscribe and close (part of shutdown).
    pub async fn close(&self) {
        let _ = self.subscriber.quit().await;
    }
}

impl Bus for RedisBus {
    fn publish(&self, event: ClusterEvent) {
        if self.outbox.try_send((Instant::now(), event)).is_err()
            && self.counters.dropped_outbox.fetch_add(1, Ordering::Relaxed) == 0
        {
            warn!("cluster bus: outbox full, events dropped (other nodes repair from the store)");
        }
    }

    fn subscribe(&self) -> Option<mpsc::Receiver<Received>> {
        self.inbox
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    fn is_connected(&self) -> bool {
        !self.down.load(Ordering::Relaxed) && self.subscriber.is_connected()
    }

    fn counters(&self) -> &BusCounters {
        &self.counters
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(place: Place) -> Message {
        Message {
            id: "01J".to_owned(),
            place,
            seq: 7,
            timestamp_ms: 1_700,
            from: UserName::parse("ann").unwrap_or_else(|e| panic!("{e:?}")),
            text: "hi <b>".to_owned(),
            client_id: Some("c1".to_owned()),
        }
    }

    #[test]
    fn a_message_crosses_the_bus_unchanged() {
        let name = |raw: &str| UserName::parse(raw).unwrap_or_else(|e| panic!("{e:?}"));
        for place in [
            Place::Room(RoomName::general()),
            Place::Direct {
                from: UserId::new("u1"),
                to: UserId::new("u2"),
                to_name: name("bob"),
            },
        ] {
            let sent = message(place);
            let envelope = Envelope {
                node: "n1".to_owned(),
                event: ClusterEvent::Message {
                    message: BusMessage::of(&sent),
                },
            };
            let json = serde_json::to_string(&envelope).unwrap_or_default();
            assert!(json.contains(r#""node":"n1","kind":"message""#), "{json}");
            let back: Envelope = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}"));
            let ClusterEvent::Message { message } = back.event else {
                panic!("not a message: {json}");
            };
            assert_eq!(message.into_message(), Ok(sent));
        }
    }

    #[test]
    fn a_bus_message_with_a_bad_name_is_refused() {
        let mut wire = BusMessage::of(&message(Place::Room(RoomName::general())));
        wire.from = "Server".to_owned();
        assert!(wire.into_message().is_err());
        let mut wire = BusMessage::of(&message(Place::Room(RoomName::general())));
        wire.room = None;
        assert!(wire.into_message().is_err());
    }
}
