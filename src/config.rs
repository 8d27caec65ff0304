//! [`Config`]: every setting of the `chinwag` binary, from flags or environment variables.

use std::net::IpAddr;
use std::time::Duration;

use clap::Parser;
use clap::builder::BoolishValueParser;

use crate::domain::DEFAULT_MAX_MESSAGE_CHARS;

/// chinwag: a self-hosted real-time chat server that speaks Socket.IO.
///
/// Every flag can also be set through the environment variable named in brackets. Switches
/// (`--no-history` …) take `1`/`0`, `true`/`false`, `yes`/`no` or `on`/`off` there.
#[derive(Debug, Clone, Parser)]
#[command(name = "chinwag", version, about)]
pub struct Config {
    /// TCP port to listen on (0 picks a free port; the chosen one is printed).
    #[arg(long, env = "PORT", default_value_t = 8080)]
    pub port: u16,

    /// Address to listen on: loopback by default; `0.0.0.0` (or `::`) opens the chat to the
    /// network, where anyone who reaches it can join without a login.
    #[arg(long, env = "HOST", default_value = "127.0.0.1")]
    pub host: IpAddr,

    /// Log filter: a level (`info`, `debug`) or directives like `chinwag=debug,engine=info`.
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub log_level: String,

    /// Extra origins allowed to open Socket.IO connections from a browser, comma-separated
    /// (e.g. `https://chat.example.org`), or `*` for any. The server's own origin and
    /// localhost are always allowed.
    #[arg(long, env = "CHINWAG_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// Interval between heartbeats, in milliseconds.
    #[arg(long, env = "CHINWAG_PING_INTERVAL_MS", default_value_t = 25_000)]
    pub ping_interval_ms: u64,

    /// How long to wait for a heartbeat answer before closing, in milliseconds.
    #[arg(long, env = "CHINWAG_PING_TIMEOUT_MS", default_value_t = 20_000)]
    pub ping_timeout_ms: u64,

    /// Largest accepted packet, HTTP body or WebSocket message, in bytes.
    #[arg(long, env = "CHINWAG_MAX_PAYLOAD", default_value_t = 1_000_000)]
    pub max_payload: usize,

    /// Longest chat message, in characters.
    #[arg(long, env = "CHINWAG_MAX_MESSAGE_CHARS", default_value_t = DEFAULT_MAX_MESSAGE_CHARS)]
    pub max_message_chars: usize,

    /// Messages per second one connection may send on average (bursts of twice that);
    /// 0 for no limit (e.g. for benchmarks at saturation).
    #[arg(long, env = "CHINWAG_MAX_MESSAGES_PER_SECOND", default_value_t = 100)]
    pub max_messages_per_second: u32,

    /// Message history: a SQLite file path (created on first run) or a `postgres://` URL.
    #[arg(long, env = "CHINWAG_DB", default_value = "chinwag.db")]
    pub db: String,

    /// Cluster mode: the Redis that several chinwag nodes on one PostgreSQL `--db` share
    /// (e.g. `redis://127.0.0.1:6379/0`) for live fan-out and presence. Needs a `postgres://`
    /// database. Without it chinwag runs as one node.
    #[arg(long, env = "CHINWAG_REDIS_URL")]
    pub redis_url: Option<String>,

    /// Prefix of every Redis key and channel of this cluster, so several clusters can share
    /// one Redis.
    #[arg(long, env = "CHINWAG_REDIS_PREFIX", default_value = "chinwag")]
    pub redis_prefix: String,

    /// Keep no history: messages are numbered in memory and not stored (no scrollback or
    /// catch-up). For measuring what durability costs.
    #[arg(long, env = "CHINWAG_NO_HISTORY", value_parser = BoolishValueParser::new())]
    pub no_history: bool,

    /// Acknowledge messages once they survive a crash of chinwag, without waiting for the
    /// disk (fsync): faster, but a power loss may lose the last acknowledged messages.
    #[arg(long, env = "CHINWAG_RELAXED_DURABILITY", value_parser = BoolishValueParser::new())]
    pub relaxed_durability: bool,

    /// Socket.IO connection-state recovery: a client that reconnects with its `pid` and
    /// last offset gets the room messages it missed, also across restarts (needs history).
    /// Adds an offset as the last argument of every `message:new`.
    #[arg(long, env = "CHINWAG_CONNECTION_STATE_RECOVERY", value_parser = BoolishValueParser::new())]
    pub connection_state_recovery: bool,

    /// How long a user whose last connection dropped still counts as present, in
    /// milliseconds (a quick reconnect is not announced as leaving).
    #[arg(long, env = "CHINWAG_PRESENCE_GRACE_MS", default_value_t = 5_000)]
    pub presence_grace_ms: u64,

    /// How long users who were online when the server stopped still count as present after
    /// it starts again, in milliseconds: a restart is not announced as everyone leaving and
    /// coming back, unless they do not come back within this time.
    #[arg(long, env = "CHINWAG_RESTART_GRACE_MS", default_value_t = 30_000)]
    pub restart_grace_ms: u64,

    /// Open connections (HTTP and WebSocket) beyond which new ones are refused with 503.
    /// Keep it below the process's open-file limit (`ulimit -n`).
    #[arg(long, env = "CHINWAG_MAX_CONNECTIONS", default_value_t = 19_000)]
    pub max_connections: usize,

    /// Open connections from one IP address beyond which its new ones are refused with 503
    /// (loopback included: raise it for load tests from one host).
    #[arg(long, env = "CHINWAG_MAX_CONNECTIONS_PER_IP", default_value_t = 1_000)]
    pub max_connections_per_ip: usize,

    /// Reverse proxies (load balancers) to believe about whom they forward: comma-separated
    /// IP addresses or CIDR blocks (`10.0.0.1,10.1.0.0/16`); none by default. A connection
    /// from one of them counts, for the caps per address (`--max-connections-per-ip`,
    /// `--max-new-users-per-ip`, `--max-rooms-per-ip`), as its client: the right-most address
    /// of `X-Forwarded-For` that is not itself a trusted proxy (the peer's own address when
    /// the header is missing or malformed).
    #[arg(long, env = "CHINWAG_TRUSTED_PROXIES", default_value = "")]
    pub trusted_proxies: engine::TrustedProxies,

    /// Rooms that may exist on the server (0: no limit). Keep it far above
    /// `--max-rooms-per-user`, so that no single user can reach it.
    #[arg(long, env = "CHINWAG_MAX_ROOMS", default_value_t = 100_000)]
    pub max_rooms: usize,

    /// Rooms one user may create, ever (0: no limit).
    #[arg(long, env = "CHINWAG_MAX_ROOMS_PER_USER", default_value_t = 100)]
    pub max_rooms_per_user: u32,

    /// Rooms that may be created from one client address per hour (0: no limit). IPv6
    /// addresses count per /64 network.
    #[arg(long, env = "CHINWAG_MAX_ROOMS_PER_IP", default_value_t = 200)]
    pub max_rooms_per_ip: u32,

    /// New users (connects with a name) one client address may create per minute (0: no
    /// limit; raise it for load tests from one host). IPv6 addresses count per /64 network.
    #[arg(long, env = "CHINWAG_MAX_NEW_USERS_PER_IP", default_value_t = 60)]
    pub max_new_users_per_ip: u32,

    /// Time a client has to send a complete HTTP request head, in milliseconds.
    #[arg(long, env = "CHINWAG_HEADER_READ_TIMEOUT_MS", default_value_t = 10_000)]
    pub header_read_timeout_ms: u64,

    /// Longest wait for connections to close on shutdown, in milliseconds.
    #[arg(long, env = "CHINWAG_SHUTDOWN_GRACE_MS", default_value_t = 10_000)]
    pub shutdown_grace_ms: u64,
}

impl Config {
    /// Defaults for everything, as if no flag or variable were set; tests start from this.
    pub fn defaults() -> Self {
        Self {
            port: 8080,
            host: IpAddr::from([127, 0, 0, 1]),
            log_level: "info".to_owned(),
            allowed_origins: Vec::new(),
            ping_interval_ms: 25_000,
            ping_timeout_ms: 20_000,
            max_payload: 1_000_000,
            max_message_chars: DEFAULT_MAX_MESSAGE_CHARS,
            db: "chinwag.db".to_owned(),
            redis_url: None,
            redis_prefix: "chinwag".to_owned(),
            no_history: false,
            max_messages_per_second: 100,
            relaxed_durability: false,
            connection_state_recovery: false,
            presence_grace_ms: 5_000,
            restart_grace_ms: 30_000,
            shutdown_grace_ms: 10_000,
            max_connections: 19_000,
            max_connections_per_ip: 1_000,
            trusted_proxies: engine::TrustedProxies::default(),
            header_read_timeout_ms: 10_000,
            max_rooms: 100_000,
            max_rooms_per_user: 100,
            max_rooms_per_ip: 200,
            max_new_users_per_ip: 60,
        }
    }

    pub fn ping_interval(&self) -> Duration {
        Duration::from_millis(self.ping_interval_ms)
    }

    pub fn ping_timeout(&self) -> Duration {
        Duration::from_millis(self.ping_timeout_ms)
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }

    /// Settings that cannot work together, as the message to exit with: a cluster shares its
    /// history through PostgreSQL, so Redis with SQLite (or without history) is refused
    /// rather than running nodes that silently each keep their own.
    pub fn check(&self) -> Result<(), String> {
        let Some(_) = &self.redis_url else {
            return Ok(());
        };
        let postgres = self.db.starts_with("postgres://") || self.db.starts_with("postgresql://");
        if !postgres || self.no_history {
            return Err(
                "--redis-url (cluster mode) needs --db postgres://…: the nodes of a cluster share \
                 their history through PostgreSQL, which SQLite and --no-history cannot do"
                    .to_owned(),
            );
        }
        if self.redis_prefix.is_empty() {
            return Err("--redis-prefix must not be empty".to_owned());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_match_what_the_flags_default_to() {
        let parsed = Config::try_parse_from(["chinwag"]);
        let parsed = parsed.unwrap_or_else(|e| panic!("{e}"));
        let defaults = Config::defaults();
        // The environment may set PORT/HOST in CI; compare what it cannot change.
        assert_eq!(parsed.ping_interval_ms, defaults.ping_interval_ms);
        assert_eq!(parsed.max_payload, defaults.max_payload);
        assert_eq!(parsed.max_message_chars, defaults.max_message_chars);
        assert_eq!(parsed.max_connections, defaults.max_connections);
        assert_eq!(
            parsed.max_connections_per_ip,
            defaults.max_connections_per_ip
        );
        assert_eq!(
            parsed.header_read_timeout_ms,
            defaults.header_read_timeout_ms
        );
        assert_eq!(parsed.max_rooms, defaults.max_rooms);
        assert_eq!(parsed.max_rooms_per_user, defaults.max_rooms_per_user);
        assert_eq!(parsed.max_rooms_per_ip, defaults.max_rooms_per_ip);
        assert_eq!(parsed.max_new_users_per_ip, defaults.max_new_users_per_ip);
    }

    #[test]
    fn flags_set_every_setting() {
        let parsed = Config::try_parse_from([
            "chinwag",
            "--port",
            "0",
            "--host",
            "127.0.0.1",
            "--allowed-origins",
            "https://a.example,https://b.example",
            "--max-message-chars",
            "10",
        ]);
        let parsed = parsed.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(parsed.port, 0);
        assert_eq!(parsed.host, IpAddr::from([127, 0, 0, 1]));
        assert_eq!(
            parsed.allowed_origins,
            ["https://a.example", "https://b.example"]
        );
        assert_eq!(parsed.max_message_chars, 10);
    }

    #[test]
    fn redis_is_refused_without_postgres() {
        let parse = |args: &[&str]| {
            Config::try_parse_from(args.iter().copied()).unwrap_or_else(|e| panic!("{e}"))
        };
        let redis = ["chinwag", "--redis-url", "redis://127.0.0.1:6379"];
        let sqlite = parse(&redis);
        assert!(sqlite.check().is_err(), "the default SQLite file");
        let mut postgres = parse(&[&redis[..], &["--db", "postgres://u@h/db"]].concat());
        assert_eq!(postgres.check(), Ok(()));
        assert_eq!(postgres.redis_prefix, "chinwag");
        postgres.no_history = true;
        assert!(postgres.check().is_err());
        assert_eq!(
            parse(&["chinwag"]).check(),
            Ok(()),
            "one node needs no Redis"
        );
    }

    #[test]
    fn a_bad_port_is_refused() {
        assert!(Config::try_parse_from(["chinwag", "--port", "99999"]).is_err());
    }
}
