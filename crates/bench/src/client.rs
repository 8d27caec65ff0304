//! One client connection: TCP from a chosen loopback source address, the WebSocket handshake,
//! the Engine.IO v4 / Socket.IO v5 handshake (or none in raw mode), then a loop that answers
//! pings, writes what the scenario queues and hands every received text frame to the scenario.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::error::BenchError;

/// Largest frame the generator accepts (a joined-users list of thousands of names fits).
const MAX_FRAME: usize = 4 * 1024 * 1024;
/// Bytes read from the socket at a time; several frames are parsed from one read.
const READ_CHUNK: usize = 16 * 1024;
/// How long one connection may take from TCP connect to Socket.IO CONNECT acknowledged.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);

/// How frames are framed on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wire {
    /// Engine.IO v4 + Socket.IO v5 over WebSocket, namespace `/`.
    SocketIo,
    /// Plain WebSocket text frames (the raw relay).
    Raw,
}

/// Where and how to connect; shared by every connection of a run.
pub struct Connector {
    /// Servers to connect to (several: the nodes of a cluster, or its balancer alone).
    targets: Vec<SocketAddr>,
    next_target: AtomicUsize,
    wire: Wire,
    /// Local addresses to connect from, used round-robin, so one generator can open more
    /// connections than one address has ephemeral ports.
    sources: Vec<IpAddr>,
    next_source: AtomicUsize,
}

/// What the server said during the handshake.
#[derive(Debug, Default, Clone)]
pub struct Handshake {
    /// The `pid` in the CONNECT reply (socket.io connection-state recovery), if any.
    pub recovery_pid: Option<String>,
    /// Frames that arrived before the CONNECT reply (Node's recovery replays missed packets
    /// first), for the scenario to handle like any later frame.
    pub early_frames: Vec<String>,
}

/// Frames kept from before the CONNECT reply, at most (a bound on a misbehaving server).
const MAX_EARLY_FRAMES: usize = 10_000;

pub type Ws = WebSocketStream<TcpStream>;

/// Parses `http://127.0.0.1:PORT`, `ws://…` or `127.0.0.1:PORT` and refuses anything that is not
/// a loopback address: the generator is a load source and must never point at another machine.
pub fn parse_target(url: &str) -> Result<SocketAddr, BenchError> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("ws://"))
        .unwrap_or(url);
    let host_port = rest.split('/').next().unwrap_or(rest);
    let host_port = host_port.replace("localhost", "127.0.0.1");
    let addr: SocketAddr = host_port
        .parse()
        .map_err(|_| BenchError::Usage(format!("target {url:?} is not IP:PORT")))?;
    if !addr.ip().is_loopback() {
        return Err(BenchError::Usage(format!(
            "target {addr} is not a loopback address; the bench only loads this machine"
        )));
    }
    Ok(addr)
}

/// Parses a comma-separated list of loopback source addresses.
pub fn parse_sources(list: &str) -> Result<Vec<IpAddr>, BenchError> {
    list.split(',')
        .filter(|part| !part.trim().is_empty())
        .map(|part| {
            let ip: IpAddr = part
                .trim()
                .parse()
                .map_err(|_| BenchError::Usage(format!("source {part:?} is not an IP")))?;
            if ip.is_loopback() {
                Ok(ip)
            } else {
                Err(BenchError::Usage(format!("source {ip} is not loopback")))
            }
        })
        .collect()
}

fn websocket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_CHUNK)
        .write_buffer_size(0)
        .max_message_size(Some(MAX_FRAME))
        .max_frame_size(Some(MAX_FRAME))
}

impl Connector {
    /// `targets` must not be empty.
    pub fn new(targets: Vec<SocketAddr>, wire: Wire, sources: Vec<IpAddr>) -> Connector {
        Connector {
            targets,
            next_target: AtomicUsize::new(0),
            wire,
            sources,
            next_source: AtomicUsize::new(0),
        }
    }

    pub fn wire(&self) -> Wire {
        self.wire
    }

    async fn tcp(&self, target: SocketAddr, source: usize) -> Result<TcpStream, BenchError> {
        let socket = if target.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if !self.sources.is_empty() {
            socket.bind(SocketAddr::new(
                self.sources[source % self.sources.len()],
                0,
            ))?;
        }
        let stream = socket.connect(target).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    /// Connects and completes the handshake. `auth` is the JSON sent with the Socket.IO
    /// CONNECT packet (ignored in raw mode). Targets and sources are used round-robin.
    pub async fn open(&self, auth: Option<&str>) -> Result<(Ws, Handshake), BenchError> {
        let target = self.next_target.fetch_add(1, Ordering::Relaxed);
        let source = self.next_source.fetch_add(1, Ordering::Relaxed);
        self.open_bounded(target, source, auth).await
    }

    /// Like `open`, for client `index`: target `index % targets`, source `index % sources`, so
    /// a client's node (or, behind a balancer hashing on the client address, its source and
    /// hence its node) does not depend on the order in which connections complete.
    pub async fn open_for(
        &self,
        index: usize,
        auth: Option<&str>,
    ) -> Result<(Ws, Handshake), BenchError> {
        self.open_bounded(index, index, auth).await
    }

    async fn open_bounded(
        &self,
        target: usize,
        source: usize,
        auth: Option<&str>,
    ) -> Result<(Ws, Handshake), BenchError> {
        let target = self.targets[target % self.targets.len()];
        tokio::time::timeout(HANDSHAKE_TIMEOUT, self.open_unbounded(target, source, auth))
            .await
            .map_err(|_| BenchError::Timeout("handshake"))?
    }

    async fn open_unbounded(
        &self,
        target: SocketAddr,
        source: usize,
        auth: Option<&str>,
    ) -> Result<(Ws, Handshake), BenchError> {
        let stream = self.tcp(target, source).await?;
        let path = match self.wire {
            Wire::SocketIo => "/socket.io/?EIO=4&transport=websocket",
            Wire::Raw => "/",
        };
        let url = format!("ws://{target}{path}");
        let (mut ws, _) =
            tokio_tungstenite::client_async_with_config(url, stream, Some(websocket_config()))
                .await?;
        if self.wire == Wire::Raw {
            return Ok((ws, Handshake::default()));
        }
        expect_engine_open(&mut ws).await?;
        let connect = match auth {
            Some(auth) => format!("40{auth}"),
            None => "40".to_owned(),
        };
        ws.send(Message::text(connect)).await?;
        let handshake = expect_socket_connect(&mut ws).await?;
        Ok((ws, handshake))
    }
}

async fn next_text(ws: &mut Ws) -> Result<String, BenchError> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => return Ok(text.as_str().to_owned()),
            Some(Ok(Message::Close(_))) | None => {
                return Err(BenchError::Protocol("closed during handshake".into()));
            }
            Some(Ok(_)) => {}
            Some(Err(err)) => return Err(err.into()),
        }
    }
}

async fn expect_engine_open(ws: &mut Ws) -> Result<(), BenchError> {
    let open = next_text(ws).await?;
    if open.starts_with('0') {
        Ok(())
    } else {
        Err(BenchError::Protocol(format!(
            "expected Engine.IO open, got {}",
            clip(&open)
        )))
    }
}

async fn expect_socket_connect(ws: &mut Ws) -> Result<Handshake, BenchError> {
    let mut early_frames = Vec::new();
    loop {
        let packet = next_text(ws).await?;
        if packet == "2" {
            ws.send(Message::text("3")).await?;
        } else if let Some(body) = packet.strip_prefix("40") {
            let reply: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
            return Ok(Handshake {
                recovery_pid: reply
                    .get("pid")
                    .and_then(|pid| pid.as_str())
                    .map(str::to_owned),
                early_frames,
            });
        } else if packet.starts_with("44") {
            return Err(BenchError::Protocol(format!(
                "connect refused: {}",
                clip(&packet)
            )));
        } else if early_frames.len() < MAX_EARLY_FRAMES {
            early_frames.push(packet);
        }
    }
}

fn clip(text: &str) -> &str {
    let end = text
        .char_indices()
        .nth(120)
        .map_or(text.len(), |(at, _)| at);
    &text[..end]
}

/// Why a connection loop ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// The scenario dropped the outbox: the connection was closed on purpose.
    ByUs,
    /// The server closed it or the socket failed.
    ByServer,
}

/// Runs one connection until the server closes it or `outbox` is closed: answers Engine.IO pings,
/// writes queued frames (all that are queued, then one flush), and passes every other received
/// text frame to `on_frame`.
pub async fn drive(
    ws: Ws,
    wire: Wire,
    mut outbox: mpsc::Receiver<String>,
    mut on_frame: impl FnMut(&str),
) -> Ended {
    let (mut sink, mut source) = ws.split();
    loop {
        tokio::select! {
            frame = source.next() => match frame {
                Some(Ok(Message::Text(text))) => {
                    if wire == Wire::SocketIo && text.as_str() == "2" {
                        if sink.send(Message::text("3")).await.is_err() {
                            return Ended::ByServer;
                        }
                    } else {
                        on_frame(text.as_str());
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return Ended::ByServer,
                Some(Ok(_)) => {}
            },
            queued = outbox.recv() => match queued {
                Some(frame) => {
                    if sink.feed(Message::text(frame)).await.is_err() {
                        return Ended::ByServer;
                    }
                    while let Ok(more) = outbox.try_recv() {
                        if sink.feed(Message::text(more)).await.is_err() {
                            return Ended::ByServer;
                        }
                    }
                    if sink.flush().await.is_err() {
                        return Ended::ByServer;
                    }
                }
                None => return Ended::ByUs,
            },
        }
    }
}

/// Frames a chat event for the wire: `42["event",arg]` for Socket.IO, the bare text in raw mode.
pub fn event_frame(wire: Wire, event: &str, text: &str) -> String {
    match wire {
        Wire::SocketIo => {
            let args = serde_json::json!([event, text]);
            format!("42{args}")
        }
        Wire::Raw => text.to_owned(),
    }
}

/// Frames a chat message: the tutorial's `42["sendChat",text]`, chinwag's full protocol
/// `42ACK["message:send",{"room":"general","text":text}]` (with an ack id, as its clients send
/// it), or the bare text in raw mode.
pub fn chat_frame(wire: Wire, full: bool, event: &str, text: &str, ack: u64) -> String {
    if full && wire == Wire::SocketIo {
        let args = serde_json::json!(["message:send", {"room": "general", "text": text}]);
        format!("42{ack}{args}")
    } else {
        event_frame(wire, event, text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_targets_are_accepted() {
        assert!(parse_target("http://127.0.0.1:8080").is_ok());
        assert!(parse_target("127.0.0.2:9").is_ok());
        assert!(parse_target("localhost:8080").is_ok());
        assert!(parse_target("http://10.0.0.1:8080").is_err());
        assert!(parse_target("http://example.org:80").is_err());
        assert!(parse_sources("127.0.0.1,127.0.0.2").is_ok());
        assert!(parse_sources("192.168.1.1").is_err());
    }

    #[tokio::test]
    async fn client_i_connects_to_url_i_mod_n() {
        let first = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let second = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let targets = vec![
            first.local_addr().expect("addr"),
            second.local_addr().expect("addr"),
        ];
        let connector = std::sync::Arc::new(Connector::new(targets, Wire::Raw, Vec::new()));
        for (index, listener) in [(3, &second), (4, &first)] {
            let connector = std::sync::Arc::clone(&connector);
            // No WebSocket server answers: only where the TCP connection lands matters.
            let opening = tokio::spawn(async move { connector.open_for(index, None).await });
            let accepted = tokio::time::timeout(Duration::from_secs(5), listener.accept()).await;
            assert!(accepted.is_ok(), "client {index} went to the wrong target");
            opening.abort();
        }
    }

    #[test]
    fn event_frames_are_socket_io_events() {
        assert_eq!(
            event_frame(Wire::SocketIo, "sendChat", "hi"),
            r#"42["sendChat","hi"]"#
        );
        assert_eq!(event_frame(Wire::Raw, "sendChat", "hi"), "hi");
        assert_eq!(
            chat_frame(Wire::SocketIo, true, "sendChat", "hi", 7),
            r#"427["message:send",{"room":"general","text":"hi"}]"#
        );
    }
}
