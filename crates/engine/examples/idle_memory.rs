//! Measure the server's resident memory per idle Socket.IO WebSocket connection.
//!
//! `cargo run --release -p chinwag-engine --example idle_memory -- measure 5000` starts a
//! server process and a client process (this same binary), opens N connections on loopback
//! (Engine.IO open + Socket.IO CONNECT to `/`), reads the server's VmRSS from /proc before and
//! after, prints KiB per connection, and stops both processes. Bounded: N ≤ 19,500 (clients of ≤ 10,000 each), 120 s.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use engine::{ConnectError, DisconnectReason, EngineConfig, Event, Handler, Socket, SocketIo};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

/// Counts live heap bytes so the report can tell heap use from allocator overhead.
struct Counting;

static LIVE_BYTES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

// SAFETY: delegates to the system allocator unchanged; only counts sizes.
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size(), std::sync::atomic::Ordering::Relaxed);
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        LIVE_BYTES.fetch_sub(layout.size(), std::sync::atomic::Ordering::Relaxed);
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The server process holds every connection: stay under its 20,000 open files.
const MAX_CONNECTIONS: usize = 19_500;
/// Connections per client process.
const PER_CLIENT: usize = 10_000;
const DEADLINE: Duration = Duration::from_secs(120);

struct Idle;

impl Handler for Idle {
    type Data = ();
    async fn on_connect(&self, _: &Socket<()>, _: &Value) -> Result<(), ConnectError> {
        Ok(())
    }
    async fn on_event(&self, _: &Socket<()>, _: Event) {}
    async fn on_disconnect(&self, _: &Socket<()>, _: DisconnectReason) {}
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn server() -> std::io::Result<()> {
    let io = SocketIo::builder(EngineConfig::default())
        .namespace("/", Idle)
        .build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("listening on http://{}", listener.local_addr()?);
    std::thread::spawn(|| {
        loop {
            std::thread::sleep(Duration::from_millis(200));
            println!(
                "live {}",
                LIVE_BYTES.load(std::sync::atomic::Ordering::Relaxed)
            );
        }
    });
    // Up to 19,500 connections, all from loopback.
    let options = engine::ServeOptions {
        max_connections: 19_600,
        max_connections_per_ip: 19_600,
        ..engine::ServeOptions::default()
    };
    let serve = engine::serve(listener, io.router(), options, std::future::pending());
    // Stop by itself when the deadline passes.
    let _ = tokio::time::timeout(DEADLINE, serve).await;
    Ok(())
}

async fn client(addr: String, count: usize) {
    let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
    let mut sockets = Vec::with_capacity(count);
    let mut pending = futures_util::stream::iter(0..count)
        .map(|_| {
            let url = url.clone();
            async move {
                let (mut ws, _) = tokio_tungstenite::connect_async(url).await.ok()?;
                ws.next().await?.ok()?; // open
                if std::env::var("IDLE_OPEN_ONLY").is_ok() {
                    return Some(ws);
                }
                ws.send(Message::text("40")).await.ok()?;
                ws.next().await?.ok()?; // CONNECT reply
                Some(ws)
            }
        })
        .buffer_unordered(64);
    while let Some(ws) = pending.next().await {
        if let Some(ws) = ws {
            sockets.push(ws);
        }
    }
    println!("connected {}", sockets.len());
    // Hold the connections until the parent closes our stdin (or the deadline).
    let stdin_closed = tokio::task::spawn_blocking(|| {
        let _ = std::io::Read::read(&mut std::io::stdin(), &mut [0u8; 1]);
    });
    let _ = tokio::time::timeout(DEADLINE, stdin_closed).await;
    drop(sockets);
}

fn measure(count: usize) {
    let exe = std::env::current_exe().expect("own path");
    let mut server = Command::new(&exe)
        .arg("server")
        .stdout(Stdio::piped())
        .spawn()
        .expect("server");
    let mut lines = BufReader::new(server.stdout.take().expect("stdout")).lines();
    let line = lines.next().and_then(Result::ok).unwrap_or_default();
    let addr = line.trim_start_matches("listening on http://").to_owned();
    let live = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let live_writer = live.clone();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if let Some(n) = line.strip_prefix("live ").and_then(|n| n.parse().ok()) {
                live_writer.store(n, std::sync::atomic::Ordering::Relaxed);
            }
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    let before = rss_kib(server.id());
    let live_before = live.load(std::sync::atomic::Ordering::Relaxed);
    let started = Instant::now();
    // Each process may hold 20,000 files: spread the connections over several clients.
    let mut clients = Vec::new();
    let mut remaining = count;
    while remaining > 0 {
        let share = remaining.min(PER_CLIENT);
        remaining -= share;
        let mut client = Command::new(&exe)
            .args(["client", &addr, &share.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("client");
        let lines = BufReader::new(client.stdout.take().expect("stdout")).lines();
        clients.push((client, lines));
    }
    let mut connected = 0;
    for (_, lines) in &mut clients {
        connected += lines
            .next()
            .and_then(Result::ok)
            .and_then(|l| {
                l.strip_prefix("connected ")
                    .and_then(|n| n.parse::<usize>().ok())
            })
            .unwrap_or(0);
    }
    // Let the allocator and the last tasks settle before reading RSS.
    std::thread::sleep(Duration::from_secs(2));
    let after = rss_kib(server.id());
    let live_after = live.load(std::sync::atomic::Ordering::Relaxed);
    let heap = live_after.saturating_sub(live_before) as f64 / 1024.0 / connected.max(1) as f64;
    let per = (after.saturating_sub(before)) as f64 / connected.max(1) as f64;
    println!(
        "connections {connected} in {:.1}s; server RSS {before} KiB -> {after} KiB; {per:.2} KiB per idle connection (live heap {heap:.2} KiB of it)",
        started.elapsed().as_secs_f64()
    );
    for (mut client, _) in clients {
        drop(client.stdin.take());
        let _ = client.wait();
    }
    let _ = server.kill();
    let _ = server.wait();
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("runtime")
    };
    match args.get(1).map(String::as_str) {
        Some("server") => {
            let _ = runtime().block_on(server());
        }
        Some("client") => {
            let count = args
                .get(3)
                .and_then(|n| n.parse().ok())
                .unwrap_or(1000)
                .min(MAX_CONNECTIONS);
            runtime().block_on(client(args[2].clone(), count));
        }
        _ => {
            let count = args
                .get(2)
                .and_then(|n| n.parse().ok())
                .unwrap_or(5000)
                .min(MAX_CONNECTIONS);
            measure(count);
        }
    }
}
