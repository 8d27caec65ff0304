//! Test harness: a recording handler, a server on port 0, a raw HTTP client and a WebSocket
//! client. Everything waits with timeouts, never fixed sleeps.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use engine::{
    ConnectError, DisconnectReason, EngineConfig, Event, Handler, ServeOptions, Socket, SocketIo,
};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

pub const WAIT: Duration = Duration::from_secs(5);

/// What the handler saw, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Seen {
    Connect(String, Value),
    Event(String, String, Vec<Value>),
    Disconnect(String, DisconnectReason),
}

/// A handler that records everything and reacts to a few event names:
/// - `message` → `message-back` with the same args and attachments; `message-with-ack` → ack;
/// - `slow` → sleeps the given ms, then echoes `slow-done` with its args (ordering tests);
/// - `join` / `leave` a room; `to` → broadcast `[room, payload]` to the room;
/// - `flood` → emits N messages of S bytes; `bye` → server-side disconnect;
/// - `ask` → emit_with_ack `question` and report the answer as `answer`.
///
/// A connect with auth `{"refuse": msg}` is refused; a recovery pid starting with `gone` has
/// no session to restore (`may_restore` says no).
pub struct Recorder {
    pub seen: mpsc::UnboundedSender<Seen>,
    pub log: Arc<Mutex<Vec<Seen>>>,
}

impl Recorder {
    fn record(&self, seen: Seen) {
        self.log.lock().unwrap().push(seen.clone());
        let _ = self.seen.send(seen);
    }
}

impl Handler for Recorder {
    type Data = ();

    async fn may_restore(&self, pid: &str, _id: &engine::SocketId) -> bool {
        !pid.starts_with("gone")
    }

    async fn on_connect(&self, socket: &Socket<()>, auth: &Value) -> Result<(), ConnectError> {
        if let Some(message) = auth.get("refuse").and_then(Value::as_str) {
            return Err(ConnectError::new(message));
        }
        if let Some(ms) = auth.get("delay").and_then(Value::as_u64) {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        if auth.get("bye").is_some() {
            socket.disconnect();
        }
        if auth.get("pid").is_some() {
            socket.restore_session();
        }
        self.record(Seen::Connect(socket.namespace().to_owned(), auth.clone()));
        let _ = socket.emit("auth", &[auth]);
        Ok(())
    }

    async fn on_event(&self, socket: &Socket<()>, event: Event) {
        self.record(Seen::Event(
            socket.namespace().to_owned(),
            event.name.clone(),
            event.args.clone(),
        ));
        let arg = |i: usize| event.args.get(i).cloned().unwrap_or(Value::Null);
        match event.name.as_str() {
            "message" => {
                let _ = socket.emit_binary("message-back", &event.args, event.attachments);
            }
            "message-with-ack" => {
                if let Some(ack) = event.ack {
                    let _ = ack.send_binary(&event.args, event.attachments);
                }
            }
            "slow" => {
                let ms = arg(0).as_u64().unwrap_or(0);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                let _ = socket.emit("slow-done", &event.args);
            }
            "join" => socket.join(arg(0).as_str().unwrap_or_default()),
            "leave" => socket.leave(arg(0).as_str().unwrap_or_default()),
            "to" => {
                let _ = socket
                    .to(arg(0).as_str().unwrap_or_default())
                    .emit("room-message", &[arg(1)]);
            }
            "all" => {
                let _ = socket.broadcast().emit("all-message", &[arg(0)]);
            }
            "flood" => {
                let count = arg(0).as_u64().unwrap_or(0);
                let payload = "x".repeat(arg(1).as_u64().unwrap_or(0) as usize);
                for _ in 0..count {
                    if socket.emit("flood", &[&payload]).is_err() {
                        break;
                    }
                }
            }
            "bye" => socket.disconnect(),
            "later" => {
                // Opts out of ordering: the answer comes from a spawned task.
                let to_me = socket.emitter();
                tokio::spawn(async move {
                    tokio::task::yield_now().await;
                    let _ = to_me.emit("later-done", &[(); 0]);
                });
            }
            "ask" => {
                let answer = socket
                    .emit_with_ack("question", &[arg(0)], Duration::from_secs(2))
                    .await;
                let _ = socket.emit("answer", &[format!("{answer:?}")]);
            }
            _ => {}
        }
    }

    async fn on_disconnect(&self, socket: &Socket<()>, reason: DisconnectReason) {
        self.record(Seen::Disconnect(socket.namespace().to_owned(), reason));
    }
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub io: SocketIo,
    pub seen: mpsc::UnboundedReceiver<Seen>,
    pub log: Arc<Mutex<Vec<Seen>>>,
}

impl TestServer {
    /// The next thing the handler saw, within [`WAIT`].
    pub async fn next_seen(&mut self) -> Seen {
        tokio::time::timeout(WAIT, self.seen.recv())
            .await
            .expect("handler event in time")
            .expect("channel open")
    }

    /// Wait until the handler sees a disconnect; returns its reason.
    pub async fn next_disconnect(&mut self) -> DisconnectReason {
        loop {
            if let Seen::Disconnect(_, reason) = self.next_seen().await {
                return reason;
            }
        }
    }

    pub fn url(&self, query: &str) -> String {
        format!("/socket.io/?{query}")
    }
}

/// The configuration of the official test suite (fast heartbeats).
pub fn fast_config() -> EngineConfig {
    EngineConfig {
        ping_interval: Duration::from_millis(300),
        ping_timeout: Duration::from_millis(200),
        ..EngineConfig::default()
    }
}

pub async fn start(config: EngineConfig) -> TestServer {
    let options = ServeOptions {
        // Every test connects from loopback.
        max_connections_per_ip: 100_000,
        ..ServeOptions::default()
    };
    start_serving(config, options).await
}

/// A server run by [`engine::serve`] with `options`, until the test's runtime ends.
pub async fn start_serving(config: EngineConfig, options: ServeOptions) -> TestServer {
    let (tx, rx) = mpsc::unbounded_channel();
    let log = Arc::new(Mutex::new(Vec::new()));
    let io = SocketIo::builder(config)
        .connection_limits(options.stats.clone())
        .namespace(
            "/",
            Recorder {
                seen: tx.clone(),
                log: log.clone(),
            },
        )
        .namespace(
            "/custom",
            Recorder {
                seen: tx,
                log: log.clone(),
            },
        )
        .build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = io.router();
    tokio::spawn(engine::serve(
        listener,
        app,
        options,
        std::future::pending::<()>(),
    ));
    TestServer {
        addr,
        io,
        seen: rx,
        log,
    }
}

/// A raw HTTP/1.1 response.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One request on a fresh connection (`Connection: close`), read to the end.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
    extra_headers: &[(&str, &str)],
) -> HttpResponse {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in extra_headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut raw))
        .await
        .expect("response in time")
        .unwrap();
    parse_response(&raw)
}

pub fn parse_response(raw: &[u8]) -> HttpResponse {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header end");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    HttpResponse {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line_end) = data.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(std::str::from_utf8(&data[..line_end]).unwrap().trim(), 16)
                .unwrap();
        if size == 0 {
            break;
        }
        out.extend_from_slice(&data[line_end + 2..line_end + 2 + size]);
        data = &data[line_end + 2 + size + 2..];
    }
    out
}

pub async fn get(server: &TestServer, query: &str) -> HttpResponse {
    http(server.addr, "GET", &server.url(query), b"", &[]).await
}

pub async fn post(server: &TestServer, query: &str, body: &str) -> HttpResponse {
    http(
        server.addr,
        "POST",
        &server.url(query),
        body.as_bytes(),
        &[("Content-Type", "text/plain;charset=UTF-8")],
    )
    .await
}

/// Open a v4 polling session; returns the sid.
pub async fn polling_session(server: &TestServer) -> String {
    let response = get(server, "EIO=4&transport=polling").await;
    assert_eq!(response.status, 200);
    let open: Value = serde_json::from_str(&response.text()[1..]).unwrap();
    open["sid"].as_str().unwrap().to_owned()
}

pub type WsClient =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

pub async fn ws_connect(server: &TestServer, query: &str) -> WsClient {
    let url = format!("ws://{}{}", server.addr, server.url(query));
    let (ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("websocket handshake");
    ws
}

/// The next message that is not an Engine.IO ping, within [`WAIT`].
pub async fn ws_next(ws: &mut WsClient) -> Message {
    loop {
        let message = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("message in time");
        match message {
            Some(Ok(Message::Text(t))) if t.as_str() == "2" => continue,
            Some(Ok(message)) => return message,
            other => panic!("connection ended: {other:?}"),
        }
    }
}

pub async fn ws_text(ws: &mut WsClient) -> String {
    match ws_next(ws).await {
        Message::Text(t) => t.as_str().to_owned(),
        other => panic!("expected text, got {other:?}"),
    }
}

pub async fn ws_send(ws: &mut WsClient, text: &str) {
    ws.send(Message::text(text)).await.unwrap();
}

/// Wait until the server closes the WebSocket; returns the close code if one was sent.
pub async fn ws_closed(ws: &mut WsClient) -> Option<u16> {
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("close in time")
        {
            Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return None,
        }
    }
}

/// Engine.IO open over WebSocket + Socket.IO CONNECT to `/` (+ the `auth` echo).
pub async fn sio_ws(server: &TestServer) -> WsClient {
    let mut ws = ws_connect(server, "EIO=4&transport=websocket").await;
    let open = ws_text(&mut ws).await;
    assert!(open.starts_with('0'));
    ws_send(&mut ws, "40").await;
    assert!(ws_text(&mut ws).await.starts_with("40{\"sid\":"));
    assert_eq!(ws_text(&mut ws).await, "42[\"auth\",{}]");
    ws
}

pub fn json_of(text: &str, skip: usize) -> Value {
    serde_json::from_str(&text[skip..]).unwrap_or(json!(null))
}
