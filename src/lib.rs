//! chinwag: a self-hosted real-time chat server that speaks Socket.IO.
//!
//! # Layout
//! - [`domain`]: the pure core — names, rooms, messages, limits, who receives what. No I/O.
//! - `store`: message history behind the `HistoryStore` trait (SQLite, PostgreSQL, memory),
//!   and [`History`], the chat's one handle on it.
//! - [`chat`]: the application layer — shared state and its lock order, message ordering
//!   and delivery, the sweeper, presence; between `socket` and `store` + `domain`.
//! - [`cluster`]: cluster mode (`--redis-url`): the node's handle on Redis, shared by
//!   the nodes of one PostgreSQL history.
//! - [`socket`]: chat event handlers over the `engine` crate; the tutorial protocol adapter.
//! - [`http`]: the axum router — our page, the socket.io client bundle, health, metrics,
//!   Socket.IO.
//! - [`config`]: flags and environment into one typed [`Config`].
//! - [`run`] (this file): wiring and the shutdown sequence; `main.rs` only binds and signals.

pub mod chat;
pub mod cluster;
pub mod config;
pub mod domain;
pub mod http;
pub mod socket;
pub mod store;

use std::future::Future;
use std::sync::Arc;

use engine::{EngineConfig, SocketIo};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tracing::{info, warn};

use chat::Chat;
use cluster::Cluster;
pub use config::Config;
use domain::{Limits, QuotaLimits, RoomName};
use http::origin::OriginPolicy;
use socket::ChatHandler;
use store::Durability;
pub use store::History;

/// Serve chinwag on `listener` until `shutdown` completes: open the history named by the
/// configuration, then [`serve`].
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    config.check().map_err(std::io::Error::other)?;
    let history = open_history(&config).await?;
    let cluster = open_cluster(&config).await?;
    serve(listener, config, history, cluster, shutdown).await
}

/// Serve chinwag on `listener` with `history` (and, in cluster mode, `cluster`) until `shutdown` completes, then shut down in
/// order: stop accepting connections, close every socket (their disconnect handlers run),
/// wait for open HTTP exchanges to finish (bounded by `config.shutdown_grace`), flush and
/// close the history, return.
///
/// Tests call this with a listener on port 0 (opening the history first, outside the
/// spawned task: the SQL driver's open future is not `Send`).
pub async fn serve(
    listener: TcpListener,
    config: Config,
    history: History,
    cluster: Option<Arc<Cluster>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let recovery = config.connection_state_recovery && !config.no_history;
    if config.connection_state_recovery && !recovery {
        warn!("connection-state recovery needs history; it is off with --no-history");
    }
    if config.max_rooms != 0
        && (config.max_rooms_per_user == 0
            || config.max_rooms_per_user as usize >= config.max_rooms)
    {
        warn!(
            max_rooms = config.max_rooms,
            max_rooms_per_user = config.max_rooms_per_user,
            "one user may create as many rooms as the server keeps: set --max-rooms-per-user \
             well below --max-rooms"
        );
    }
    // In a cluster each process is a node of its own in the store: its tutorial users'
    // name claims and its `online` flags are its own (a node starting frees only what its
    // own last run left, never what the others hold).
    let history = match &cluster {
        Some(cluster) => history.with_node(cluster.node()),
        None => history,
    };
    let mut chat = Chat::new(limits(&config), quota_limits(&config), history, recovery);
    // In a cluster: presence in Redis, and socket ids derived from recovery pids with the
    // cluster's shared secret (a client resumed on another node keeps its socket id).
    let mut socket_id_key = None;
    if let Some(cluster) = &cluster {
        let presence =
            chat::redis_presence::RedisPresence::start(cluster, presence_timing(&config), recovery)
                .map_err(std::io::Error::other)?;
        // Live before it holds anyone: its users count as held from the first one on.
        presence
            .announce_node()
            .await
            .map_err(std::io::Error::other)?;
        if recovery {
            let (key, hex) = chat::redis_presence::shared_socket_id_key(cluster)
                .await
                .map_err(std::io::Error::other)?;
            presence.keep_socket_id_key(hex);
            socket_id_key = Some(key);
        }
        chat = chat.with_presence(Box::new(presence));
    }
    let chat = Arc::new(chat);
    let known_rooms = chat.history.rooms().await.map_err(std::io::Error::other)?;
    {
        // Rooms count against their creators' quotas across restarts.
        let mut quotas = chat.quotas();
        for creator in known_rooms
            .iter()
            .filter_map(|(_, creator)| creator.as_ref())
        {
            quotas.restore_room(creator);
        }
    }
    chat.community().restore_rooms(
        known_rooms
            .iter()
            .filter_map(|(name, _)| RoomName::parse(name).ok()),
    );
    // Users whose sessions are valid are members of their rooms while away, also across a
    // restart: listed offline, reachable by direct messages, holding their names.
    // Tutorial users live as long as their sockets: the last run's are gone, and so are
    // their claims on names (a crash left them held until they lapse).
    chat.history.release_tutorial_names().await;
    let members = chat
        .history
        .live_members(chat::now_ms())
        .await
        .map_err(std::io::Error::other)?;
    // Online users another node of a cluster has are that node's: not restored present
    // here (this node would later announce them gone).
    let online: Vec<domain::UserId> = members
        .iter()
        .filter(|member| member.online)
        .map(|member| member.user.clone())
        .collect();
    let elsewhere = chat.presence().held_elsewhere(&online).await;
    let elsewhere: std::collections::HashSet<&domain::UserId> = online
        .iter()
        .zip(elsewhere)
        .filter_map(|(user, held)| held.then_some(user))
        .collect();
    {
        // Those online when the server stopped stay present while their clients reconnect.
        let leaves_at = chat::now_ms_u64().saturating_add(config.restart_grace_ms);
        let mut community = chat.community();
        for member in members {
            if member.online && !elsewhere.contains(&member.user) {
                chat.presence().restore_online(
                    &mut community,
                    member.user,
                    member.name,
                    member.rooms,
                    leaves_at,
                );
            } else {
                community.restore_member(member.user, member.name, member.rooms);
            }
        }
    }
    // Shared by the accept loop and the engine: polling sessions count as connections.
    let serve_stats = Arc::new(engine::ServeStats::default());
    let io = SocketIo::builder(engine_config(&config, socket_id_key))
        .namespace("/", ChatHandler::new(Arc::clone(&chat)))
        .connection_limits(Arc::clone(&serve_stats))
        .build();
    chat.start(io.clone());
    let bus = match &cluster {
        Some(cluster) => {
            let bus = cluster::RedisBus::start(cluster)
                .await
                .map_err(std::io::Error::other)?;
            chat.follow(Arc::clone(&bus) as Arc<dyn cluster::Bus>);
            Some(bus)
        }
        None => None,
    };
    let origins = OriginPolicy::new(&config.allowed_origins);
    if !origins.is_configured() {
        info!(
            "browsers may connect from loopback and IP-address origins only: \
             list the public origin (e.g. https://chat.example) in --allowed-origins"
        );
    }
    let app = http::router(
        &io,
        Arc::clone(&chat),
        origins,
        Arc::clone(&serve_stats),
        cluster.clone(),
    );

    let (stop_accepting, accepting_stopped) = oneshot::channel::<()>();
    // The engine's accept loop: a header-read timeout and connection limits (total and per
    // address), so idle or half-sent connections cannot use up the file descriptors.
    let serve_options = engine::ServeOptions {
        header_read_timeout: std::time::Duration::from_millis(config.header_read_timeout_ms),
        max_connections: config.max_connections,
        max_connections_per_ip: config.max_connections_per_ip,
        trusted_proxies: config.trusted_proxies.clone(),
        stats: serve_stats,
        ..engine::ServeOptions::default()
    };
    let server = engine::serve(listener, app, serve_options, async move {
        // Either a send or a dropped sender means: stop.
        let _ = accepting_stopped.await;
    });
    let mut server = tokio::spawn(server);

    tokio::select! {
        finished = &mut server => {
            // The accept loop ended on its own: an I/O error, or a panic in it.
            return match finished {
                Ok(result) => result,
                Err(panic) => Err(std::io::Error::other(panic)),
            };
        }
        () = shutdown => {}
    }

    info!("shutting down: no new connections");
    let _ = stop_accepting.send(());
    // Users whose connections had already dropped were leaving: after the restart they are
    // not online. Everyone still connected is, while their clients reconnect.
    let mut leaving = chat.begin_shutdown();
    let grace = config.shutdown_grace();
    // Still online on another node of a cluster: not leaving.
    if let Ok(elsewhere) =
        tokio::time::timeout(grace, chat.presence().held_elsewhere(&leaving)).await
    {
        let mut elsewhere = elsewhere.into_iter();
        leaving.retain(|_| !elsewhere.next().unwrap_or(false));
    }
    if tokio::time::timeout(grace, chat.history.mark_offline(leaving))
        .await
        .is_err()
    {
        warn!(?grace, "recording departures did not finish in time");
    }
    info!(
        connections = io.connection_count(),
        "shutting down: closing sockets"
    );
    if tokio::time::timeout(grace, io.shutdown()).await.is_err() {
        warn!(?grace, "sockets did not all close in time");
    }
    match tokio::time::timeout(grace, server).await {
        Ok(Ok(result)) => result?,
        Ok(Err(panic)) => return Err(std::io::Error::other(panic)),
        Err(_) => warn!(?grace, "HTTP connections did not all finish in time"),
    }
    info!("shutting down: flushing history");
    chat.history.close().await;
    chat.presence().stop();
    if let Some(bus) = &bus {
        bus.close().await;
    }
    if let Some(cluster) = &cluster {
        cluster.close().await;
    }
    info!("shut down");
    Ok(())
}

/// The store named by `--db`, or memory with `--no-history`.
pub async fn open_history(config: &Config) -> std::io::Result<History> {
    if config.no_history {
        info!("history is off: messages are not stored");
        return Ok(History::new(Arc::new(store::MemoryStore::new(
            store::MemoryLimits::no_history(),
        ))));
    }
    let durability = if config.relaxed_durability {
        Durability::ProcessCrash
    } else {
        Durability::Full
    };
    let store = store::open_store(&config.db, durability)
        .await
        .map_err(std::io::Error::other)?;
    Ok(History::new(store))
}

/// The cluster named by `--redis-url`, connected; `None` without it (one node).
pub async fn open_cluster(config: &Config) -> std::io::Result<Option<Arc<Cluster>>> {
    let Some(url) = &config.redis_url else {
        return Ok(None);
    };
    Cluster::connect(url, &config.redis_prefix)
        .await
        .map(Some)
        .map_err(std::io::Error::other)
}

fn presence_timing(config: &Config) -> chat::redis_presence::PresenceTiming {
    chat::redis_presence::PresenceTiming {
        heartbeat: std::time::Duration::from_millis(config.presence_heartbeat_ms.max(1)),
        node_ttl: std::time::Duration::from_millis(config.presence_node_ttl_ms.max(1)),
        grace: std::time::Duration::from_millis(config.presence_grace_ms),
    }
}

fn limits(config: &Config) -> Limits {
    Limits {
        max_message_chars: config.max_message_chars,
        presence_grace_ms: config.presence_grace_ms,
        messages_per_second: config.max_messages_per_second,
        // The quotas enforce the flag; this is only the community's backstop.
        max_rooms: match config.max_rooms {
            0 => usize::MAX,
            max => max,
        },
    }
}

fn quota_limits(config: &Config) -> QuotaLimits {
    QuotaLimits {
        rooms_per_user: config.max_rooms_per_user,
        rooms_per_address_per_hour: config.max_rooms_per_ip,
        max_rooms: config.max_rooms,
        new_users_per_address_per_minute: config.max_new_users_per_ip,
    }
}

/// The engine's settings, from ours. Origins are checked in front of the engine (see
/// [`http::origin`]), which needs the request's `Host`; so the engine itself allows any.
fn engine_config(config: &Config, socket_id_key: Option<engine::SocketIdKey>) -> EngineConfig {
    EngineConfig {
        ping_interval: config.ping_interval(),
        ping_timeout: config.ping_timeout(),
        max_payload: config.max_payload,
        allowed_origins: None,
        connection_state_recovery: config.connection_state_recovery && !config.no_history,
        socket_id_key,
        trusted_proxies: config.trusted_proxies.clone(),
        ..EngineConfig::default()
    }
}
