//! A hardened HTTP/1.1 accept loop for the router: a header-read timeout, a cap on open
//! connections and a cap per client address, graceful shutdown, and `ConnectInfo<SocketAddr>`
//! for the handlers (what `axum::serve` with `into_make_service_with_connect_info` gives).
//!
//! Why not `axum::serve`: it has no header-read timeout and no connection limit, so one host
//! holding thousands of idle or half-sent connections uses up the process's file descriptors.
//!
//! A connection is counted from `accept` until its socket closes, including after a WebSocket
//! upgrade: the count lives in a wrapper around the TCP stream, which the upgraded stream owns.
//! An Engine.IO polling session holds no socket between its requests, so it counts as one
//! more connection for as long as it lives on polling (see
//! [`crate::SocketIoBuilder::connection_limits`]): otherwise one address could open sessions
//! without bound with a handful of short-lived HTTP requests.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tower_service::Service;

/// Limits of [`serve`]. `ServeOptions::default()` suits a process allowed 20,000 open files.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Time a client has to send a complete request head, counted from when the server starts
    /// waiting for it (also between keep-alive requests). Upgraded WebSockets are not affected.
    /// Default 10 s.
    pub header_read_timeout: Duration,
    /// Open connections (HTTP and upgraded WebSocket) beyond which new ones are refused.
    /// Default 19,000: keep it below the process's open-file limit (`ulimit -n`).
    pub max_connections: usize,
    /// Open connections from one IP address beyond which its new ones are refused. Loopback
    /// counts like any address: raise it for load tests from one host. Default 1,000.
    pub max_connections_per_ip: usize,
    /// Reverse proxies (load balancers) whose connections are not counted per address: they
    /// carry many clients, each counted under its own address by the engine (give it the
    /// same list in [`crate::EngineConfig::trusted_proxies`]). Default none.
    pub trusted_proxies: crate::TrustedProxies,
    /// Disable Nagle's algorithm on accepted sockets: small real-time messages leave at once
    /// (the engine already batches its writes). Default true.
    pub tcp_nodelay: bool,
    /// Where the accept loop counts what it does; clone the `Arc` before passing the options
    /// to read them later.
    pub stats: Arc<ServeStats>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            max_connections: 19_000,
            max_connections_per_ip: 1_000,
            trusted_proxies: crate::TrustedProxies::default(),
            tcp_nodelay: true,
            stats: Arc::default(),
        }
    }
}

/// Counters of the accept loop, and the admission of connections and polling sessions
/// against its caps (the caps are those of the [`serve`] call the stats are passed to).
#[derive(Debug)]
pub struct ServeStats {
    open: AtomicUsize,
    /// Polling sessions, each counted as a connection.
    sessions: AtomicUsize,
    refused_total_limit: AtomicU64,
    refused_ip_limit: AtomicU64,
    /// Connections and polling sessions per address; an address leaves the map with its
    /// last one.
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    /// Set by [`serve`]; unlimited until then.
    max_connections: AtomicUsize,
    max_connections_per_ip: AtomicUsize,
}

impl Default for ServeStats {
    fn default() -> Self {
        Self {
            open: AtomicUsize::new(0),
            sessions: AtomicUsize::new(0),
            refused_total_limit: AtomicU64::new(0),
            refused_ip_limit: AtomicU64::new(0),
            per_ip: Mutex::new(HashMap::new()),
            max_connections: AtomicUsize::new(usize::MAX),
            max_connections_per_ip: AtomicUsize::new(usize::MAX),
        }
    }
}

/// What an admission counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    /// An accepted TCP connection.
    Connection,
    /// An Engine.IO session on polling (it holds no connection between requests).
    PollingSession,
    /// A client behind a trusted proxy, under the per-address cap only: its requests and
    /// WebSocket travel on the proxy's connections, which the total cap counts.
    Client,
}

impl ServeStats {
    /// Connections open now (HTTP and upgraded).
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
    /// Polling sessions open now, each counted against the caps like a connection.
    pub fn polling_sessions(&self) -> usize {
        self.sessions.load(Ordering::Relaxed)
    }
    /// Connections refused because `max_connections` were open.
    pub fn refused_total_limit(&self) -> u64 {
        self.refused_total_limit.load(Ordering::Relaxed)
    }
    /// Connections refused because their address had `max_connections_per_ip` open.
    pub fn refused_ip_limit(&self) -> u64 {
        self.refused_ip_limit.load(Ordering::Relaxed)
    }
}

/// What a refused connection reads before the server closes it. Written with one
/// non-blocking write into the fresh socket's empty send buffer: the accept loop never waits.
const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\n\
content-length: 20\r\nconnection: close\r\nretry-after: 5\r\n\r\ntoo many connections";

/// Serve `router` on `listener` until `shutdown` resolves, then stop accepting, let every
/// open HTTP connection finish its current request, and return once they all closed.
/// Upgraded WebSockets are not waited for: close them with [`crate::SocketIo::shutdown`].
///
/// Over-limit connections get an immediate `503` and are closed; see [`ServeOptions`].
/// Handlers can extract `ConnectInfo<SocketAddr>`.
pub async fn serve<S>(
    listener: TcpListener,
    router: axum::Router,
    options: ServeOptions,
    shutdown: S,
) -> io::Result<()>
where
    S: Future<Output = ()> + Send + 'static,
{
    let stats = options.stats.clone();
    stats
        .max_connections
        .store(options.max_connections, Ordering::Relaxed);
    stats
        .max_connections_per_ip
        .store(options.max_connections_per_ip, Ordering::Relaxed);
    // Connection tasks watch `stop`; each holds a clone of `alive`, so `alive_tx.closed()`
    // resolves when the last one ends.
    let (stop_tx, stop_rx) = watch::channel(false);
    let (alive_tx, alive_rx) = watch::channel(());
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    accept_error(error).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // A trusted proxy's connections count against the total only: its clients are
        // counted per address by the engine, from `X-Forwarded-For`.
        let per_ip = (!options.trusted_proxies.contains(peer.ip())).then(|| peer.ip());
        let Some(guard) = stats.admit(per_ip, Slot::Connection) else {
            // A refused client is not worth a task or a wait: best effort, then close.
            let _ = stream.try_write(REFUSAL);
            continue;
        };
        if options.tcp_nodelay {
            let _ = stream.set_nodelay(true);
        }
        let io = TokioIo::new(Counted {
            stream,
            _guard: guard,
        });
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            // `Router` is always ready: no `poll_ready` needed before `call`.
            router.clone().call(request)
        });
        let header_read_timeout = options.header_read_timeout;
        let mut stop = stop_rx.clone();
        let alive = alive_rx.clone();
        tokio::spawn(async move {
            let _alive = alive;
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_read_timeout)
                .serve_connection(io, service)
                .with_upgrades();
            tokio::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => return log_end(result),
                _ = stop.wait_for(|stop| *stop) => {}
            }
            connection.as_mut().graceful_shutdown();
            log_end(connection.await);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(alive_rx);
    alive_tx.closed().await;
    Ok(())
}

fn log_end(result: Result<(), hyper::Error>) {
    if let Err(error) = result {
        // Timeouts, resets and malformed requests are the client's business.
        tracing::debug!(%error, "HTTP connection ended with an error");
    }
}

/// Per-connection accept errors are the peer's; others (out of file descriptors) are the
/// process's: back off so the loop does not spin while nothing can be accepted.
async fn accept_error(error: io::Error) {
    use io::ErrorKind::*;
    if matches!(
        error.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    ) {
        return;
    }
    tracing::warn!(%error, "accept failed; retrying in 100 ms");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

impl ServeStats {
    /// Count one connection or polling session from `ip` (`None`: not counted per address),
    /// or refuse it (over a cap).
    pub(crate) fn admit(self: &Arc<Self>, ip: Option<IpAddr>, slot: Slot) -> Option<ConnGuard> {
        let ip = ip.map(|ip| ip.to_canonical());
        let in_use = self.open.load(Ordering::Relaxed) + self.sessions.load(Ordering::Relaxed);
        if slot != Slot::Client && in_use >= self.max_connections.load(Ordering::Relaxed) {
            self.refused_total_limit.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(?ip, ?slot, "refused: max_connections open");
            return None;
        }
        if let Some(ip) = ip {
            let mut per_ip = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            let count = per_ip.entry(ip).or_insert(0);
            if *count >= self.max_connections_per_ip.load(Ordering::Relaxed) {
                if *count == 0 {
                    per_ip.remove(&ip);
                }
                self.refused_ip_limit.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%ip, ?slot, "refused: max_connections_per_ip open");
                return None;
            }
            *count += 1;
        }
        if let Some(counter) = self.counter(slot) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        Some(ConnGuard {
            stats: self.clone(),
            ip,
            slot,
        })
    }

    /// The total `slot` counts in, if any.
    fn counter(&self, slot: Slot) -> Option<&AtomicUsize> {
        match slot {
            Slot::Connection => Some(&self.open),
            Slot::PollingSession => Some(&self.sessions),
            Slot::Client => None,
        }
    }
}

/// One counted connection or session; uncounted when dropped.
pub(crate) struct ConnGuard {
    stats: Arc<ServeStats>,
    ip: Option<IpAddr>,
    slot: Slot,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        if let Some(counter) = self.stats.counter(self.slot) {
            counter.fetch_sub(1, Ordering::Relaxed);
        }
        let Some(ip) = self.ip else { return };
        let mut per_ip = self.stats.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = per_ip.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                per_ip.remove(&ip);
            }
        }
    }
}

/// A TCP stream that stays counted while anyone (hyper, or an upgraded WebSocket) owns it.
struct Counted {
    stream: TcpStream,
    _guard: ConnGuard,
}

impl AsyncRead for Counted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
