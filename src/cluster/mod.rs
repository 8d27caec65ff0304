//! Cluster mode: several chinwag nodes on one PostgreSQL (the truth: history, sequences,
//! sessions, rooms) and one Redis (what is live: fan-out between nodes, presence).
//!
//! Without `--redis-url` there is no [`Cluster`] and chinwag is one node, as before.
//!
//! # Layout
//! - this file: [`Cluster`], the node's handle on the cluster: its random node uid (a new
//!   one every process start, so a restarted node is a new node), the Redis client and the
//!   key prefix every key and channel of this cluster carries ([`Cluster::key`]).
//! - [`bus`]: the [`Bus`] trait (publish a [`ClusterEvent`], receive the other nodes'),
//!   [`RedisBus`] on Redis pub/sub, and the events' JSON form. The chat applies what it
//!   receives (see `chat::cluster`).
//!
//! The chat's presence seam kept in Redis (`chat::redis_presence`) lives in the chat, which
//! imports this module and never the reverse.
//!
//! Redis is reached through `fred`: it reconnects on its own and re-subscribes a
//! subscriber client's channels after a reconnect. Commands fail after
//! [`COMMAND_TIMEOUT`] while Redis is away instead of queueing without bound, so a lost
//! Redis slows nothing that PostgreSQL can do alone.

pub mod bus;

pub use bus::{Bus, BusCounters, BusMessage, ClusterEvent, Creator, Received, RedisBus};

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use fred::clients::SubscriberClient;
use fred::prelude::{Builder, Client, ClientLike, Config as RedisConfig, ReconnectPolicy};
use tracing::info;

use crate::store::history::random_hex;

/// Longest wait for a Redis command (including a reconnect under way) before it fails.
pub const COMMAND_TIMEOUT: Duration = Duration::from_millis(1_000);

/// Longest wait for a connection to Redis to open.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(3_000);

/// Received pub/sub messages the Redis client holds for the bus task (see
/// [`Cluster::new_subscriber`]).
const SUBSCRIBER_BUFFER: usize = 10_000;

/// Reconnect delays: from 100 ms doubling up to 2 s, forever (Redis may come back any time).
const RECONNECT_MIN_MS: u32 = 100;
const RECONNECT_MAX_MS: u32 = 2_000;

/// Redis could not be reached or configured.
#[derive(Debug)]
pub struct ClusterError(String);

impl fmt::Display for ClusterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ClusterError {}

impl From<fred::error::Error> for ClusterError {
    fn from(err: fred::error::Error) -> Self {
        Self(format!("redis: {err}"))
    }
}

/// One node's handle on the cluster. Cheap to share (`Arc<Cluster>`).
pub struct Cluster {
    node: String,
    prefix: String,
    config: RedisConfig,
    /// Commands (publish, keys). A subscriber needs its own connection: see
    /// [`Cluster::new_client`].
    client: Client,
}

impl Cluster {
    /// Connect to the Redis at `url`; fails if it cannot be reached now (a configuration
    /// mistake should stop the start, not show up later). Later losses are reconnected.
    pub async fn connect(url: &str, prefix: &str) -> Result<Arc<Self>, ClusterError> {
        let config = RedisConfig::from_url(url)?;
        let node = random_hex(8);
        let cluster = Self {
            client: builder(&config).build()?,
            node,
            prefix: prefix.to_owned(),
            config,
        };
        cluster.client.init().await?;
        info!(node = %cluster.node, prefix = %cluster.prefix, "cluster mode: connected to Redis");
        Ok(Arc::new(cluster))
    }

    /// This node's uid: random per process, carried by everything it publishes.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The prefix of every key and channel of this cluster.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The shared Redis client, for commands.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// A new, not yet connected client on the same Redis with the same settings (a pub/sub
    /// subscriber needs a connection of its own). The caller calls `init`.
    pub fn new_client(&self) -> Result<Client, ClusterError> {
        Ok(builder(&self.config).build()?)
    }

    /// A new, not yet connected pub/sub client on the same Redis: it subscribes its channels
    /// again after a reconnect once `manage_subscriptions` runs. The caller calls `init`.
    pub fn new_subscriber(&self) -> Result<SubscriberClient, ClusterError> {
        let mut builder = builder(&self.config);
        builder.with_performance_config(|performance| {
            // The client hands received messages to the bus task through a broadcast channel
            // that drops what a slow reader has not taken (fred's default holds 32): a loaded
            // node lost thousands of events a run to it, each a 200 ms gap repair. As deep as
            // the bus's own inbox.
            performance.broadcast_channel_capacity = SUBSCRIBER_BUFFER;
        });
        Ok(builder.build_subscriber_client()?)
    }

    /// `prefix:part:part…`, the name of a key or channel of this cluster.
    pub fn key(&self, parts: &[&str]) -> String {
        prefixed(&self.prefix, parts)
    }

    /// Whether Redis answers a `PING` now (readiness).
    pub async fn ping(&self) -> bool {
        self.client.ping::<String>(None).await.is_ok()
    }

    /// Close the connection (part of shutdown).
    pub async fn close(&self) {
        let _ = self.client.quit().await;
    }
}

fn prefixed(prefix: &str, parts: &[&str]) -> String {
    let mut key = prefix.to_owned();
    for part in parts {
        key.push(':');
        key.push_str(part);
    }
    key
}

fn builder(config: &RedisConfig) -> Builder {
    let mut builder = Builder::from_config(config.clone());
    builder
        .with_connection_config(|connection| {
            connection.connection_timeout = CONNECT_TIMEOUT;
            connection.internal_command_timeout = COMMAND_TIMEOUT;
        })
        .with_performance_config(|performance| {
            performance.default_command_timeout = COMMAND_TIMEOUT;
        })
        .set_policy(ReconnectPolicy::new_exponential(
            0,
            RECONNECT_MIN_MS,
            RECONNECT_MAX_MS,
            2,
        ));
    builder
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("node", &self.node)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::prefixed;

    #[test]
    fn keys_carry_the_prefix_and_their_parts() {
        assert_eq!(prefixed("chinwag", &["conv"]), "chinwag:conv");
        assert_eq!(prefixed("a", &["node", "x1"]), "a:node:x1");
    }
}
