//! Test helpers: start the real chinwag app on port 0 and speak Engine.IO v4 / Socket.IO v5
//! text frames to it over a WebSocket, as an official client would.

#![allow(dead_code)] // each test file uses a different part of this module

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use chinwag::Config;

/// How long any single expected event may take before a test fails.
pub const PATIENCE: Duration = Duration::from_secs(5);

/// The defaults, with history in a fresh SQLite file of this test's own.
pub fn test_config() -> Config {
    let mut config = Config::defaults();
    config.db = temp_db_path();
    config
}

/// Start the real `chinwag` binary on 127.0.0.1 port 0 with `args` added, and wait (up to 20 s)
/// for its `listening on http://ADDR` line; returns the process and that address.
pub async fn start_binary(args: &[&str]) -> (Child, SocketAddr) {
    try_start_binary(args, &[])
        .await
        .unwrap_or_else(|status| panic!("chinwag exited ({status}) instead of listening"))
}

/// [`start_binary`] with environment variables set, for a binary that may refuse to start:
/// its exit status when it exits before printing its address.
pub async fn try_start_binary(
    args: &[&str],
    envs: &[(&str, &str)],
) -> Result<(Child, SocketAddr), std::process::ExitStatus> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_chinwag"))
        .args(["--port", "0", "--host", "127.0.0.1"])
        .args(args)
        .env_remove("PORT")
        .env_remove("HOST")
        .envs(envs.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chinwag");
    let stdout = child.stdout.take().expect("stdout");
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    });
    let line = tokio::time::timeout(Duration::from_secs(20), line)
        .await
        .expect("chinwag starts or exits in time")
        .expect("join")
        .expect("read stdout");
    match line.trim().strip_prefix("listening on http://") {
        Some(addr) => Ok((child, addr.parse().expect("an address"))),
        None => Err(child.wait().expect("exit status")),
    }
}

/// A database no other test uses: a SQLite file in the system's temporary directory, or,
/// with `CHINWAG_TEST_DB=postgres` (the PostgreSQL leg of `scripts/test`), a fresh schema
/// in the PostgreSQL database of `CHINWAG_TEST_POSTGRES_URL`.
pub fn temp_db_path() -> String {
    if std::env::var("CHINWAG_TEST_DB").is_ok_and(|backend| backend == "postgres") {
        return fresh_postgres_schema();
    }
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let unique = NEXT.fetch_add(1, Ordering::Relaxed);
    // A random part too: process ids are reused, and an earlier run's file with the same name
    // would start this test with its history.
    let file = format!(
        "chinwag-test-{}-{unique}-{:08x}.db",
        std::process::id(),
        rand::random::<u32>()
    );
    std::env::temp_dir()
        .join(file)
        .to_string_lossy()
        .into_owned()
}

/// A running chinwag on 127.0.0.1 and a random port.
pub struct TestApp {
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    server: JoinHandle<std::io::Result<()>>,
}

impl TestApp {
    pub async fn start() -> Self {
        Self::start_with(test_config()).await
    }

    pub async fn start_with(config: Config) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a test port");
        let addr = listener.local_addr().expect("test listener address");
        let (shutdown, stop) = oneshot::channel::<()>();
        let history = chinwag::open_history(&config)
            .await
            .expect("open the test history");
        let server = tokio::spawn(chinwag::serve(
            listener,
            config,
            history,
            None,
            async move {
                let _ = stop.await;
            },
        ));
        Self {
            addr,
            shutdown: Some(shutdown),
            server,
        }
    }

    /// A client connected to namespace `/` over WebSocket.
    pub async fn client(&self) -> Client {
        Client::connect(self.addr).await
    }

    /// Ask the app to shut down and wait for `run` to return.
    pub async fn stop(mut self) -> std::io::Result<()> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        tokio::time::timeout(Duration::from_secs(15), &mut self.server)
            .await
            .expect("the app stops within 15 s")
            .expect("the app task does not panic")
    }

    /// A plain HTTP/1.1 GET.
    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
        http_get(self.addr, path, headers).await
    }
}

/// One Socket.IO client speaking raw Engine.IO v4 / Socket.IO v5 text frames.
pub struct Client {
    ws: WebSocketStream<TcpStream>,
    /// Packets read while waiting for an ack, handed out by `next_packet` first.
    pending: VecDeque<String>,
    /// The id of the next acknowledgement request.
    next_ack: u64,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Self {
        let mut client = Self::open(addr).await;
        client.send_raw("40").await;
        let reply = client.next_packet().await;
        assert!(
            reply.starts_with("40{"),
            "expected a CONNECT reply, got {reply:?}"
        );
        client
    }

    /// An Engine.IO connection that has not yet joined a namespace.
    pub async fn open(addr: SocketAddr) -> Self {
        Self::open_with_query(addr, "EIO=4&transport=websocket").await
    }

    /// An Engine.IO connection with this handshake query (e.g. `EIO=3` for a 2.x client).
    pub async fn open_with_query(addr: SocketAddr, query: &str) -> Self {
        let tcp = TcpStream::connect(addr).await.expect("tcp connect");
        let url = format!("ws://{addr}/socket.io/?{query}");
        let (ws, _) = tokio_tungstenite::client_async(url, tcp)
            .await
            .expect("websocket handshake");
        let mut client = Self {
            ws,
            pending: VecDeque::new(),
            next_ack: 0,
        };
        let open = client.next_packet().await;
        assert!(
            open.starts_with("0{"),
            "expected the Engine.IO open packet, got {open:?}"
        );
        client
    }

    /// An Engine.IO WebSocket connection from the local address `from` (any of 127.0.0.0/8
    /// reaches a loopback server) with extra request `headers` (e.g. `X-Forwarded-For`), or
    /// the HTTP status it was refused with.
    pub async fn open_from(
        addr: SocketAddr,
        from: std::net::IpAddr,
        headers: &[(&str, &str)],
    ) -> Result<Self, u16> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
        socket
            .bind(SocketAddr::new(from, 0))
            .expect("bind the local address");
        let tcp = socket.connect(addr).await.expect("tcp connect");
        let mut request = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket")
            .into_client_request()
            .expect("a request");
        for (name, value) in headers {
            request.headers_mut().append(
                http::HeaderName::from_bytes(name.as_bytes()).expect("a header name"),
                http::HeaderValue::from_str(value).expect("a header value"),
            );
        }
        let ws = match tokio_tungstenite::client_async(request, tcp).await {
            Ok((ws, _)) => ws,
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                return Err(response.status().as_u16());
            }
            Err(error) => panic!("websocket handshake: {error}"),
        };
        let mut client = Self {
            ws,
            pending: VecDeque::new(),
            next_ack: 0,
        };
        let open = client.next_packet().await;
        assert!(
            open.starts_with("0{"),
            "expected the open packet, got {open:?}"
        );
        Ok(client)
    }

    pub async fn send_raw(&mut self, frame: &str) {
        self.ws
            .send(Message::text(frame))
            .await
            .expect("send a frame");
    }

    /// Emit `event` with `args` (a JSON array of the arguments).
    pub async fn emit(&mut self, event: &str, args: Value) {
        let mut packet = vec![json!(event)];
        packet.extend(args.as_array().cloned().unwrap_or_default());
        self.send_raw(&format!("42{}", Value::Array(packet))).await;
    }

    /// Connect to namespace `/` with a CONNECT auth payload (full protocol). Returns the
    /// client and the `session` event's payload, or the CONNECT_ERROR payload.
    pub async fn connect_with_auth(addr: SocketAddr, auth: Value) -> Result<(Self, Value), Value> {
        let mut client = Self::open(addr).await;
        client.send_raw(&format!("40{auth}")).await;
        let reply = client.next_packet().await;
        if let Some(error) = reply.strip_prefix("44") {
            return Err(serde_json::from_str(error).expect("a JSON connect error"));
        }
        assert!(
            reply.starts_with("40{"),
            "expected a CONNECT reply, got {reply:?}"
        );
        let (event, mut args) = client.next_event().await;
        assert_eq!(event, "session");
        Ok((client, args.remove(0)))
    }

    /// Emit `event(payload)` asking for an ack, and wait for the ack's first argument.
    /// Events that arrive meanwhile stay queued for `next_event`.
    pub async fn request(&mut self, event: &str, payload: Value) -> Value {
        let id = self.next_ack;
        self.next_ack += 1;
        self.send_raw(&format!("42{id}{}", json!([event, payload])))
            .await;
        let prefix = format!("43{id}[");
        let mut skipped = Vec::new();
        let answer = loop {
            let packet = self.read_packet().await;
            if packet.starts_with(&prefix) {
                let mut args: Vec<Value> =
                    serde_json::from_str(&packet[prefix.len() - 1..]).expect("ack arguments");
                break args.remove(0);
            }
            skipped.push(packet);
        };
        self.pending.extend(skipped);
        answer
    }

    /// The next Engine.IO packet other than a ping (pings are answered).
    pub async fn next_packet(&mut self) -> String {
        if let Some(packet) = self.pending.pop_front() {
            return packet;
        }
        self.read_packet().await
    }

    async fn read_packet(&mut self) -> String {
        loop {
            let frame = tokio::time::timeout(PATIENCE, self.ws.next())
                .await
                .expect("a packet arrives in time")
                .expect("the connection stays open")
                .expect("a readable frame");
            match frame {
                Message::Text(text) if text.as_str() == "2" => self.send_raw("3").await,
                Message::Text(text) => return text.as_str().to_owned(),
                Message::Ping(_) | Message::Pong(_) => {}
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }

    /// The next event: its name and arguments.
    pub async fn next_event(&mut self) -> (String, Vec<Value>) {
        loop {
            let packet = self.next_packet().await;
            let Some(body) = packet.strip_prefix("42") else {
                continue;
            };
            let mut array: Vec<Value> =
                serde_json::from_str(body).expect("an event is a JSON array");
            let name = array.remove(0);
            return (name.as_str().expect("event name").to_owned(), array);
        }
    }

    /// Assert the next event is exactly `event(args...)`.
    pub async fn expect(&mut self, event: &str, args: Value) {
        let (name, got) = self.next_event().await;
        assert_eq!(
            (name.as_str(), Value::Array(got)),
            (event, args),
            "unexpected event"
        );
    }

    /// Add oneself in camelCase and consume the greeting and the user list.
    pub async fn join_as(&mut self, name: &str) {
        self.emit("addUser", json!([name])).await;
        self.expect("updateChat", json!(["Server", "you have connected"]))
            .await;
        let (event, _) = self.next_event().await;
        assert_eq!(event, "updateUsers");
    }

    /// Wait until the server has closed the connection.
    pub async fn expect_closed(&mut self) {
        loop {
            match tokio::time::timeout(PATIENCE, self.ws.next()).await {
                Err(_) => panic!("the connection was not closed in time"),
                Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => return,
                Ok(Some(Ok(_))) => {}
            }
        }
    }

    /// Drop the TCP connection without any goodbye (no Socket.IO DISCONNECT, no close frame).
    pub fn drop_abruptly(self) {
        drop(self.ws.into_inner());
    }

    /// End the TCP connection without any goodbye (no DISCONNECT, no close frame), but with an
    /// orderly FIN after everything sent, and read until the server closes. Unlike
    /// `drop_abruptly`, which resets the connection (unread data on our side makes the kernel
    /// send RST, and the peer's kernel then discards what the server had not read yet), every
    /// byte sent before reaches the server.
    pub async fn hang_up(self) {
        let mut stream = self.ws.into_inner();
        stream.shutdown().await.expect("half-close");
        let mut sink = [0u8; 4096];
        let drained = tokio::time::timeout(Duration::from_secs(10), async {
            while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
        })
        .await;
        drained.expect("the server closes the connection after our FIN");
    }
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// GET with `Connection: close`, read to the end (fixed-length bodies only). `Host` is the
/// address unless `headers` name another.
pub async fn http_get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
    let mut tcp = TcpStream::connect(addr).await.expect("tcp connect");
    let mut request = format!("GET {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("host"))
    {
        request.push_str(&format!("Host: {addr}\r\n"));
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    tcp.write_all(request.as_bytes())
        .await
        .expect("send the request");
    let mut raw = Vec::new();
    tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut raw))
        .await
        .expect("the response arrives in time")
        .expect("read the response");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header block");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    HttpResponse {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

/// The PostgreSQL database the tests use (`CHINWAG_TEST_POSTGRES_URL`, else the local `test`
/// database).
pub fn postgres_url() -> String {
    std::env::var("CHINWAG_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A URL of [`postgres_url`] whose `search_path` is a new, empty schema. The test fails,
/// rather than skips, when PostgreSQL does not answer.
fn fresh_postgres_schema() -> String {
    use sqlx::Connection;
    let admin_url = postgres_url();
    let schema = format!("t_{:016x}", rand::random::<u64>());
    let create = format!("CREATE SCHEMA {schema}");
    let url = admin_url.clone();
    // Tests call this from inside their runtime: connect on a thread with its own.
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for creating the schema");
        runtime.block_on(async {
            let mut connection = sqlx::PgConnection::connect(&url)
                .await
                .unwrap_or_else(|error| panic!("PostgreSQL at {url} is needed: {error}"));
            sqlx::query(&create)
                .execute(&mut connection)
                .await
                .unwrap_or_else(|error| panic!("{create}: {error}"));
            let _ = connection.close().await;
        });
    })
    .join()
    .expect("creating a test schema");
    let separator = if admin_url.contains('?') { '&' } else { '?' };
    format!("{admin_url}{separator}options[search_path]={schema}&application_name={schema}")
}
