//! Presence across the nodes of a cluster, in Redis ([`RedisPresence`], the cluster side of
//! the [`Presence`] seam): a user is online while any live node holds it (a socket of it,
//! or its grace period running there), and its arrival and departure are announced once
//! for the whole cluster, by the node that sees it arrive first or leave last.
//!
//! # Keys (under the cluster's prefix)
//! - `node:<uid>`: a node's heartbeat, set with `PX` ([`PresenceTiming::node_ttl`]) and
//!   refreshed every [`PresenceTiming::heartbeat`]; `nodes`: the set of node uids that may
//!   hold users.
//! - `user:<id>`: per user a hash, field `n:<uid>` → how many sockets of the user that node
//!   has (0: its grace period is running there). The user is online while the hash has a
//!   field of a node in `nodes`.
//! - `node-users:<uid>`: per node the users it holds (id → name), for sweeping a dead node.
//! - `presence-sweeper`: the lock (`SET NX PX`) of the one node that sweeps dead nodes.
//! - channel `alive:<uid>`: each node stays subscribed to its own; a node with no
//!   subscriber there (`PUBSUB NUMSUB`) is dead even before its heartbeat expires (a killed
//!   process loses its connections at once).
//! - `socket:<id>` (with connection-state recovery): the node a socket is connected to,
//!   so a recovering client is not resumed while its socket lives on another node; and
//!   `socket-id-key`: the secret from which every node derives socket ids from recovery
//!   pids ([`shared_socket_id_key`]), so a socket resumed elsewhere keeps its id.
//!
//! # How it stays off the community lock
//! The seam is called under the community lock, which is never held across an `.await`.
//! So this node's own part is kept in memory (`held`: its users and their socket counts)
//! and written to Redis by one task, in order; the two questions that need Redis are asked
//! outside the lock: whether another node holds an arriving user
//! ([`Presence::held_elsewhere`], asked before the arrival), and whether another node
//! still holds a user whose grace period ended here (asked by the task, the answer applied
//! by the next sweep, so a departure comes at most one sweep later than alone).
//!
//! A dead node (heartbeat expired) is swept by the lock holder once the presence grace has
//! passed after it was first seen dead: its users no other node holds are announced gone
//! (once: a Lua script removes the node's field and tells whether it was the last one).
//! Users reconnecting elsewhere within that time are never announced gone.
//!
//! Losing Redis: writes and questions fail after the client's command timeout; a user is
//! then taken as held nowhere else (presence per node), and this node's part is written
//! again in full once Redis answers.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use engine::SocketIdKey;
use engine::{BroadcastOperator, Socket, SocketId};
use fred::interfaces::ClientLike;
use fred::prelude::{
    Client, Expiration, HashesInterface, KeysInterface, LuaInterface, PubsubInterface, SetOptions,
    SetsInterface,
};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::presence::{BoxFuture, LocalPresence};
use super::{Connection, Presence};
use crate::cluster::{Cluster, ClusterError};
use crate::domain::{
    Community, Notice, Outgoing, Protocol, RoomName, Speaker, Swept, UserId, UserName,
};
use crate::store::history::random_hex;

/// Most users written or asked about in one round of the writer, so a long backlog does
/// not starve the heartbeat.
const BATCH: usize = 512;

/// How often the sweeper-lock holder looks for dead nodes (at most; or every heartbeat if
/// that is shorter): a few commands, so a dead node's users go soon after its grace.
const DEAD_CHECK: Duration = Duration::from_millis(500);

/// Timing of cluster presence.
#[derive(Debug, Clone, Copy)]
pub struct PresenceTiming {
    /// How often a node refreshes its heartbeat (and the sweeper looks for dead nodes).
    pub heartbeat: Duration,
    /// How long a heartbeat lives: a node silent for this long is dead.
    pub node_ttl: Duration,
    /// The presence grace period (also how long a dead node's users may reconnect
    /// elsewhere before they are announced gone).
    pub grace: Duration,
}

/// Remove node ARGV[1]'s field from a user's hash (and the user from that node's list) and
/// say what follows: 1 announce the departure (no live node holds the user any more), 0 keep
/// quiet (another node still does), 2 nothing (a sweep found the field gone: someone else
/// announced it). Fields of nodes no longer in `nodes` are leftovers, dropped here.
const DEPART: &str = r"
local removed = redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[2])
if removed == 0 and ARGV[4] == 'sweep' then return 2 end
local held = 0
for _, field in ipairs(redis.call('HKEYS', KEYS[1])) do
  if redis.call('SISMEMBER', KEYS[3], string.sub(field, 3)) == 1 then
    held = 1
  else
    redis.call('HDEL', KEYS[1], field)
  end
end
if held == 1 then return 0 end
return 1
";

/// For each user hash in KEYS (the last key is `nodes`): 1 if a node other than ARGV[1]
/// (a field name) that is in `nodes` holds it, else 0.
const ELSEWHERE: &str = r"
local nodes = KEYS[#KEYS]
local answer = {}
for i = 1, #KEYS - 1 do
  local held = 0
  for _, field in ipairs(redis.call('HKEYS', KEYS[i])) do
    if field ~= ARGV[1] and redis.call('SISMEMBER', nodes, string.sub(field, 3)) == 1 then
      held = 1
      break
    end
  end
  answer[i] = held
end
return answer
";

/// Forget socket KEYS[1] if it is this node's (ARGV[1]): a socket resumed on another node
/// meanwhile is that node's.
const FORGET_SOCKET: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
";

/// How long a socket's node is remembered (a node killed without a goodbye leaves its
/// sockets; asked about, they are answered by whether that node lives).
const SOCKET_TTL_MS: i64 = 24 * 60 * 60 * 1000;

/// The cluster's secret for deriving socket ids from recovery pids: the first node to start
/// makes it, every node reads it (and [`RedisPresence::keep_socket_id_key`] writes it back
/// should Redis lose it).
pub async fn shared_socket_id_key(
    cluster: &Cluster,
) -> Result<(SocketIdKey, String), fred::error::Error> {
    let key = cluster.key(&["socket-id-key"]);
    let mine = random_hex(32);
    let client = cluster.client();
    let _: Option<String> = client
        .set(&key, mine.as_str(), None, Some(SetOptions::NX), false)
        .await?;
    let shared: String = client.get(&key).await?;
    let mut bytes = [0u8; 32];
    let valid = shared.len() == 64
        && bytes.iter_mut().enumerate().all(|(i, byte)| {
            shared
                .get(2 * i..2 * i + 2)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                .map(|value| *byte = value)
                .is_some()
        });
    if !valid {
        return Err(fred::error::Error::new(
            fred::error::ErrorKind::Parse,
            "the cluster's socket-id-key is not 64 hex digits",
        ));
    }
    Ok((SocketIdKey(bytes), shared))
}

/// Write this node's part of one user: its socket count and name (ARGV[3], ARGV[4]), or,
/// with an empty count, remove it.
const WRITE: &str = r"
if ARGV[3] == '' then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[2])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
  redis.call('HSET', KEYS[2], ARGV[2], ARGV[4])
end
return 0
";

/// Presence in Redis, shared by the nodes of a cluster.
pub struct RedisPresence {
    shared: Arc<Shared>,
    task: Mutex<Option<JoinHandle<()>>>,
}

struct Shared {
    client: Client,
    /// Subscribed to this node's `alive:` channel, and nothing else.
    liveness: Client,
    /// Record which node each socket is on (connection-state recovery is on).
    track_sockets: bool,
    /// The cluster's socket-id key (hex) this node derives with, written back at every
    /// heartbeat if Redis lost it (a flushed or restarted Redis): nodes started later must
    /// derive the same ids.
    socket_id_key: std::sync::OnceLock<String>,
    node: String,
    keys: Keys,
    timing: PresenceTiming,
    state: Mutex<State>,
    /// Something to write or ask.
    wake: Notify,
}

/// Key names (prefixed).
struct Keys {
    prefix: String,
    /// This node's heartbeat.
    heartbeat: String,
    nodes: String,
    /// This node's users.
    mine: String,
    sweeper: String,
}

impl Keys {
    fn user(&self, user: &str) -> String {
        format!("{}:user:{user}", self.prefix)
    }
    fn node_users(&self, node: &str) -> String {
        format!("{}:node-users:{node}", self.prefix)
    }
    fn heartbeat_of(&self, node: &str) -> String {
        format!("{}:node:{node}", self.prefix)
    }
    fn alive(&self, node: &str) -> String {
        format!("{}:alive:{node}", self.prefix)
    }
    fn socket(&self, socket: &SocketId) -> String {
        format!("{}:socket:{socket}", self.prefix)
    }
}

/// This node's field in a user's hash.
fn field(node: &str) -> String {
    format!("n:{node}")
}

#[derive(Default)]
struct State {
    /// The users present on this node: name and socket count (0: in grace).
    held: HashMap<UserId, (UserName, usize)>,
    /// Users whose entry in `held` changed since written.
    dirty: HashSet<UserId>,
    /// Users whose grace period ended here: to ask whether another node holds them.
    to_check: HashSet<UserId>,
    /// Being asked.
    checking: HashSet<UserId>,
    /// The answers: announce the departure (true) or leave quietly.
    decided: HashMap<UserId, bool>,
    /// Users of dead nodes to announce gone from here.
    gone: Vec<(UserId, UserName)>,
    /// Sockets connected (true) or gone (false) since written.
    sockets: HashMap<SocketId, bool>,
    /// A write failed: write everything again at the next heartbeat.
    resync: bool,
    /// This node registered in `nodes` once already.
    registered: bool,
    /// It was found missing from `nodes` since: another node took it for dead and
    /// announced its users gone. They are announced back (see [`Presence::returned`]).
    swept_away: bool,
}

impl RedisPresence {
    /// Presence for this node of `cluster`; its task (heartbeat, writes, dead-node sweeps)
    /// runs until [`Presence::stop`].
    pub fn start(
        cluster: &Cluster,
        timing: PresenceTiming,
        track_sockets: bool,
    ) -> Result<Self, ClusterError> {
        let prefix = cluster.prefix().to_owned();
        let node = cluster.node().to_owned();
        let keys = Keys {
            heartbeat: format!("{prefix}:node:{node}"),
            nodes: format!("{prefix}:nodes"),
            mine: format!("{prefix}:node-users:{node}"),
            sweeper: format!("{prefix}:presence-sweeper"),
            prefix,
        };
        let shared = Arc::new(Shared {
            client: cluster.client().clone(),
            liveness: cluster.new_client()?,
            track_sockets,
            socket_id_key: std::sync::OnceLock::new(),
            node,
            keys,
            timing,
            state: Mutex::new(State::default()),
            wake: Notify::new(),
        });
        let task = tokio::spawn(Arc::clone(&shared).run());
        Ok(Self {
            shared,
            task: Mutex::new(Some(task)),
        })
    }

    /// Connect the liveness subscription and write the heartbeat once now, so the node
    /// counts as live before it takes sockets.
    pub async fn announce_node(&self) -> Result<(), ClusterError> {
        self.shared.liveness.init().await?;
        self.shared.beat().await;
        Ok(())
    }

    /// Keep the cluster's socket-id key (hex, see [`shared_socket_id_key`]) in Redis.
    pub fn keep_socket_id_key(&self, hex: String) {
        let _ = self.shared.socket_id_key.set(hex);
    }

    /// Record a socket connected here or gone.
    fn record_socket(&self, socket: &SocketId, connected: bool) {
        if self.shared.track_sockets {
            self.shared
                .state()
                .sockets
                .insert(socket.clone(), connected);
        }
    }

    /// Record that a full-protocol user is present here with `sockets` sockets, or gone.
    fn record(&self, community: &Community<SocketId>, user: &UserId) {
        let mut state = self.shared.state();
        match (community.socket_count(user), community.name_of_user(user)) {
            (Some(sockets), Some(name)) => {
                state.held.insert(user.clone(), (name.clone(), sockets));
            }
            _ => {
                state.held.remove(user);
            }
        }
        state.dirty.insert(user.clone());
        drop(state);
        self.shared.wake.notify_one();
    }
}

impl Drop for RedisPresence {
    fn drop(&mut self) {
        if let Some(task) = lock(&self.task).take() {
            task.abort();
        }
    }
}

impl Presence for RedisPresence {
    fn subscribe(&self, socket: &Socket<Connection>) {
        LocalPresence.subscribe(socket);
    }

    fn unsubscribe(&self, socket: &Socket<Connection>) {
        LocalPresence.unsubscribe(socket);
    }

    fn watchers(
        &self,
        op: BroadcastOperator,
        community: &Community<SocketId>,
        rooms: &[RoomName],
    ) -> BroadcastOperator {
        LocalPresence.watchers(op, community, rooms)
    }

    fn held_elsewhere<'a>(&'a self, users: &'a [UserId]) -> BoxFuture<'a, Vec<bool>> {
        Box::pin(self.shared.held_elsewhere(users))
    }

    fn socket_arrived(
        &self,
        community: &Community<SocketId>,
        socket: &SocketId,
        elsewhere: bool,
        mut notices: Vec<Outgoing<SocketId>>,
    ) -> Vec<Outgoing<SocketId>> {
        let Some(user) = community.user_id_of(socket).cloned() else {
            return notices;
        };
        // Tutorial users too: the other nodes list them, and a dead node's are swept.
        self.record(community, &user);
        if community.protocol_of(socket) == Some(Protocol::Full) {
            self.record_socket(socket, true);
        }
        if elsewhere {
            // Online already, announced by the node that has it: neither its presence nor
            // the tutorial's "has connected" again.
            notices.retain(|outgoing| {
                !matches!(
                    outgoing.notice,
                    Notice::Presence { .. }
                        | Notice::Chat {
                            from: Speaker::Server,
                            ..
                        }
                )
            });
        }
        notices
    }

    fn socket_left(
        &self,
        community: &mut Community<SocketId>,
        socket: &SocketId,
        resumable: bool,
        now_ms: u64,
    ) -> Vec<Outgoing<SocketId>> {
        let user = community.user_id_of(socket).cloned();
        let notices = LocalPresence.socket_left(community, socket, resumable, now_ms);
        self.record_socket(socket, false);
        if let Some(user) = user {
            self.record(community, &user);
        }
        notices
    }

    fn expire(&self, community: &mut Community<SocketId>, now_ms: u64) -> Swept<SocketId> {
        let over = if community.has_away_users() {
            community.grace_over(now_ms)
        } else {
            Vec::new()
        };
        let mut state = self.shared.state();
        let mut ends = Vec::new();
        let mut ask = false;
        for (user, protocol) in over {
            if protocol == Protocol::Tutorial {
                // A tutorial user is one socket on one node: nobody else to ask.
                ends.push((user, true));
            } else if let Some(announce) = state.decided.remove(&user) {
                ends.push((user, announce));
            } else if !state.checking.contains(&user) && state.to_check.insert(user) {
                ask = true;
            }
        }
        // Answers about users back meanwhile: the question removed this node's field, so
        // write it again.
        let stale: Vec<UserId> = state.decided.drain().map(|(user, _)| user).collect();
        state.dirty.extend(stale);
        let gone = std::mem::take(&mut state.gone);
        drop(state);
        let ended: Vec<UserId> = ends.iter().map(|(user, _)| user.clone()).collect();
        let mut swept = community.end_grace(ends, now_ms);
        {
            let mut state = self.shared.state();
            for user in ended {
                if !community.is_present(&user) {
                    // Its field went with the question; removed again in case a write
                    // since put it back.
                    state.held.remove(&user);
                    state.dirty.insert(user);
                }
            }
            // Users that left the community another way (a connection closed while
            // connecting and its new user forgotten): no longer held here.
            let State { held, dirty, .. } = &mut *state;
            held.retain(|user, _| {
                let present = community.is_present(user);
                if !present {
                    dirty.insert(user.clone());
                }
                present
            });
            if !state.dirty.is_empty() {
                ask = true;
            }
        }
        for (user, name) in gone {
            if community.is_present(&user) {
                continue;
            }
            swept.notices.extend(community.gone_elsewhere(&user, name));
            swept.departed.push(user);
        }
        if ask {
            self.shared.wake.notify_one();
        }
        swept
    }

    fn in_grace(&self, community: &Community<SocketId>) -> Vec<UserId> {
        community.users_in_grace()
    }

    fn restore_online(
        &self,
        community: &mut Community<SocketId>,
        user: UserId,
        name: UserName,
        rooms: Vec<RoomName>,
        leaves_at_ms: u64,
    ) {
        community.restore_present(user.clone(), name, rooms, leaves_at_ms);
        if community.is_present(&user) {
            self.record(community, &user);
        }
    }

    fn connected_elsewhere<'a>(&'a self, socket: &'a SocketId) -> BoxFuture<'a, bool> {
        Box::pin(self.shared.connected_elsewhere(socket))
    }

    fn online_elsewhere(&self) -> BoxFuture<'_, Option<Vec<UserName>>> {
        Box::pin(self.shared.online_elsewhere())
    }

    fn returned(&self, community: &Community<SocketId>) -> Vec<UserId> {
        let mut state = self.shared.state();
        if !std::mem::take(&mut state.swept_away) {
            return Vec::new();
        }
        state
            .held
            .keys()
            .filter(|user| community.is_present(user))
            .cloned()
            .collect()
    }

    fn stop(&self) {
        if let Some(task) = lock(&self.task).take() {
            task.abort();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    async fn run(self: Arc<Self>) {
        let mut heartbeat = tokio::time::interval(self.timing.heartbeat);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut dead_check = tokio::time::interval(self.timing.heartbeat.min(DEAD_CHECK));
        dead_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut dead_since: HashMap<String, Instant> = HashMap::new();
        loop {
            tokio::select! {
                _ = heartbeat.tick() => self.beat().await,
                _ = dead_check.tick() => self.sweep_dead(&mut dead_since).await,
                () = self.wake.notified() => {}
            }
            self.flush().await;
        }
    }

    /// Refresh the heartbeat; after a failed write (or if Redis lost this node's users),
    /// mark every held user to be written again.
    async fn beat(&self) {
        let ttl = i64::try_from(self.timing.node_ttl.as_millis()).unwrap_or(i64::MAX);
        let beat: Result<(), _> = self
            .client
            .set(
                &self.keys.heartbeat,
                "1",
                Some(Expiration::PX(ttl)),
                None,
                false,
            )
            .await;
        if let Err(error) = beat {
            warn!(%error, "presence heartbeat not written");
            self.state().resync = true;
            return;
        }
        // Again every time: a no-op while subscribed, a resubscription after a reconnect.
        if let Err(error) = self.liveness.subscribe(self.keys.alive(&self.node)).await {
            debug!(%error, "presence liveness channel not subscribed");
        }
        match self
            .client
            .sadd::<i64, _, _>(&self.keys.nodes, self.node.as_str())
            .await
        {
            Ok(added) => {
                let mut state = self.state();
                if added == 1 && std::mem::replace(&mut state.registered, true) {
                    // Swept as dead (a pause longer than its heartbeat's life): its users
                    // were announced gone; write them again and announce them back.
                    warn!("presence: this node was taken for dead; its users are announced back");
                    state.resync = true;
                    state.swept_away = true;
                }
            }
            Err(error) => {
                warn!(%error, "presence node not registered");
                self.state().resync = true;
                return;
            }
        }
        if let Some(hex) = self.socket_id_key.get() {
            let key = format!("{}:socket-id-key", self.keys.prefix);
            let kept: Result<Option<String>, _> = self
                .client
                .set(key, hex.as_str(), None, Some(SetOptions::NX), false)
                .await;
            if let Ok(Some(_)) = kept {
                warn!("presence: Redis had lost the socket-id key; written back");
            }
        }
        let written: Result<u64, _> = self.client.hlen(&self.keys.mine).await;
        let rewrite = {
            let mut state = self.state();
            // Compared only while nothing is on its way (a departure question removes a
            // field before the next sweep forgets the user).
            let idle = state.dirty.is_empty()
                && state.to_check.is_empty()
                && state.checking.is_empty()
                && state.decided.is_empty();
            let lost = idle && written.is_ok_and(|written| written != state.held.len() as u64);
            std::mem::take(&mut state.resync) || lost
        };
        if !rewrite {
            return;
        }
        // Everything held, and everything written that is no longer held.
        let Ok(written) = self.client.hkeys::<Vec<String>, _>(&self.keys.mine).await else {
            self.state().resync = true;
            return;
        };
        let mut state = self.state();
        debug!(
            users = state.held.len(),
            written = written.len(),
            "writing this node's presence again"
        );
        let all: Vec<UserId> = state
            .held
            .keys()
            .cloned()
            .chain(written.into_iter().map(UserId::new))
            .collect();
        state.dirty.extend(all);
    }

    /// Write what changed, ask what needs asking; in rounds of [`BATCH`].
    async fn flush(&self) {
        loop {
            let (writes, sockets, checks) = {
                let mut state = self.state();
                let users: Vec<UserId> = state.dirty.iter().take(BATCH).cloned().collect();
                let writes: Vec<(UserId, Option<(UserName, usize)>)> = users
                    .into_iter()
                    .map(|user| {
                        state.dirty.remove(&user);
                        let value = state.held.get(&user).cloned();
                        (user, value)
                    })
                    .collect();
                let sockets: Vec<SocketId> = state.sockets.keys().take(BATCH).cloned().collect();
                let sockets: Vec<(SocketId, bool)> = sockets
                    .into_iter()
                    .filter_map(|socket| state.sockets.remove_entry(&socket))
                    .collect();
                let checks: Vec<UserId> = state.to_check.iter().take(BATCH).cloned().collect();
                for user in &checks {
                    state.to_check.remove(user);
                    state.checking.insert(user.clone());
                }
                (writes, sockets, checks)
            };
            if writes.is_empty() && sockets.is_empty() && checks.is_empty() {
                return;
            }
            for (socket, connected) in sockets {
                let key = self.keys.socket(&socket);
                let written: Result<(), _> = if connected {
                    self.client
                        .set(
                            key,
                            self.node.as_str(),
                            Some(Expiration::PX(SOCKET_TTL_MS)),
                            None,
                            false,
                        )
                        .await
                } else {
                    self.client
                        .eval(FORGET_SOCKET, key, self.node.as_str())
                        .await
                };
                if let Err(error) = written {
                    debug!(%error, "presence: a socket's node not recorded");
                }
            }
            let mut failed = false;
            for (user, value) in writes {
                if failed {
                    break;
                }
                let (count, name) = match &value {
                    Some((name, count)) => (count.to_string(), name.as_str().to_owned()),
                    None => (String::new(), String::new()),
                };
                let written: Result<i64, _> = self
                    .client
                    .eval(
                        WRITE,
                        vec![self.keys.user(user.as_str()), self.keys.mine.clone()],
                        vec![field(&self.node), user.as_str().to_owned(), count, name],
                    )
                    .await;
                if let Err(error) = written {
                    warn!(%error, "presence not written to Redis; presence is per node until it answers");
                    failed = true;
                }
            }
            if failed {
                self.state().resync = true;
            }
            for user in checks {
                let announce = if failed {
                    true
                } else {
                    match self.depart(&self.node, user.as_str(), false).await {
                        Ok(answer) => answer != 0,
                        Err(error) => {
                            warn!(%error, "presence: Redis not asked; announcing the departure");
                            failed = true;
                            true
                        }
                    }
                };
                debug!(
                    user = user.as_str(),
                    announce, "presence: grace period over here"
                );
                let mut state = self.state();
                state.checking.remove(&user);
                state.decided.insert(user, announce);
            }
            if failed {
                return;
            }
        }
    }

    /// Run [`DEPART`] for `node`'s field of `user`.
    async fn depart(&self, node: &str, user: &str, sweep: bool) -> Result<i64, fred::error::Error> {
        self.client
            .eval(
                DEPART,
                vec![
                    self.keys.user(user),
                    self.keys.node_users(node),
                    self.keys.nodes.clone(),
                ],
                vec![
                    field(node),
                    user.to_owned(),
                    String::new(),
                    if sweep { "sweep" } else { "own" }.to_owned(),
                ],
            )
            .await
    }

    /// Whether a node other than this one holds each of `users`. Unknown (Redis away): no.
    async fn held_elsewhere(&self, users: &[UserId]) -> Vec<bool> {
        let mut answers = Vec::with_capacity(users.len());
        for chunk in users.chunks(BATCH) {
            let mut keys: Vec<String> = chunk
                .iter()
                .map(|user| self.keys.user(user.as_str()))
                .collect();
            keys.push(self.keys.nodes.clone());
            let asked: Result<Vec<i64>, _> = self
                .client
                .eval(ELSEWHERE, keys, vec![field(&self.node)])
                .await;
            match asked {
                Ok(flags) if flags.len() == chunk.len() => {
                    answers.extend(flags.into_iter().map(|flag| flag == 1));
                }
                Ok(_) => answers.extend(chunk.iter().map(|_| false)),
                Err(error) => {
                    warn!(%error, "presence: Redis not asked whether users are online elsewhere");
                    answers.extend(chunk.iter().map(|_| false));
                }
            }
        }
        answers
    }

    /// The names of the users the other nodes hold (also those of a node that died and is
    /// not swept yet: its users are announced gone when it is). `None` if Redis does not
    /// answer.
    async fn online_elsewhere(&self) -> Option<Vec<UserName>> {
        let nodes: Vec<String> = match self.client.smembers(&self.keys.nodes).await {
            Ok(nodes) => nodes,
            Err(error) => {
                debug!(%error, "presence: the other nodes' users not read");
                return None;
            }
        };
        let mut names = Vec::new();
        let mut seen = HashSet::new();
        for node in nodes.iter().filter(|node| **node != self.node) {
            let held: Vec<String> = self.client.hvals(self.keys.node_users(node)).await.ok()?;
            for name in held {
                if let Ok(name) = UserName::parse(&name)
                    && seen.insert(name.key())
                {
                    names.push(name);
                }
            }
        }
        Some(names)
    }

    /// Whether `node` lives: its heartbeat has not expired and it is subscribed to its
    /// liveness channel (a killed node's subscription is gone at once).
    async fn alive(&self, node: &str) -> Result<bool, fred::error::Error> {
        let beating: i64 = self.client.exists(self.keys.heartbeat_of(node)).await?;
        if beating == 0 {
            return Ok(false);
        }
        let subscribers: Vec<fred::types::Value> =
            self.client.pubsub_numsub(self.keys.alive(node)).await?;
        Ok(subscribers
            .get(1)
            .and_then(fred::types::Value::as_i64)
            .is_some_and(|count| count > 0))
    }

    /// Whether `socket` is connected on another live node. Unknown (Redis away): no.
    async fn connected_elsewhere(&self, socket: &SocketId) -> bool {
        if !self.track_sockets {
            return false;
        }
        let node: Option<String> = match self.client.get(self.keys.socket(socket)).await {
            Ok(node) => node,
            Err(error) => {
                debug!(%error, "presence: a socket's node not asked");
                return false;
            }
        };
        match node {
            Some(node) if node != self.node => self.alive(&node).await.unwrap_or(false),
            _ => false,
        }
    }

    /// If this node holds the sweeper lock: find nodes whose heartbeat expired, and once
    /// one has been dead for the grace period, announce its users gone (those no other node
    /// holds) and forget it.
    async fn sweep_dead(&self, dead_since: &mut HashMap<String, Instant>) {
        let hold =
            i64::try_from(self.timing.heartbeat.as_millis().saturating_mul(3)).unwrap_or(i64::MAX);
        let taken: Result<Option<String>, _> = self
            .client
            .set(
                &self.keys.sweeper,
                self.node.as_str(),
                Some(Expiration::PX(hold)),
                Some(SetOptions::NX),
                false,
            )
            .await;
        let ours = match taken {
            Ok(Some(_)) => true,
            Ok(None) => {
                let holder: Option<String> =
                    self.client.get(&self.keys.sweeper).await.unwrap_or(None);
                let ours = holder.as_deref() == Some(self.node.as_str());
                if ours {
                    let _ = self
                        .client
                        .pexpire::<(), _>(&self.keys.sweeper, hold, None)
                        .await;
                }
                ours
            }
            Err(_) => false,
        };
        if !ours {
            dead_since.clear();
            return;
        }
        let Ok(nodes) = self
            .client
            .smembers::<Vec<String>, _>(&self.keys.nodes)
            .await
        else {
            return;
        };
        dead_since.retain(|node, _| nodes.contains(node));
        for node in nodes {
            if node == self.node {
                continue;
            }
            let Ok(alive) = self.alive(&node).await else {
                return;
            };
            if alive {
                dead_since.remove(&node);
                continue;
            }
            let since = *dead_since.entry(node.clone()).or_insert_with(Instant::now);
            if since.elapsed() < self.timing.grace {
                continue;
            }
            if self.sweep_node(&node).await {
                dead_since.remove(&node);
            }
        }
    }

    /// Take a dead node's users: those nobody else holds are announced gone from here.
    /// Returns whether it is done (the node forgotten).
    async fn sweep_node(&self, node: &str) -> bool {
        let users_key = self.keys.node_users(node);
        let Ok(users) = self
            .client
            .hgetall::<HashMap<String, String>, _>(&users_key)
            .await
        else {
            return false;
        };
        let mut gone = Vec::new();
        for (user, name) in &users {
            match self.depart(node, user, true).await {
                Ok(1) => {
                    if let Ok(name) = UserName::parse(name) {
                        gone.push((UserId::new(user.as_str()), name));
                    }
                }
                Ok(_) => {}
                Err(_) => return false,
            }
        }
        info!(
            node,
            users = users.len(),
            gone = gone.len(),
            "presence: swept a dead node"
        );
        self.state().gone.extend(gone);
        let _ = self.client.del::<(), _>(&users_key).await;
        self.client
            .srem::<(), _, _>(&self.keys.nodes, node)
            .await
            .is_ok()
    }
}
