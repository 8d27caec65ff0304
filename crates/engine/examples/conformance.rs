//! The server the official Socket.IO protocol test suite expects: port `PORT` (default 3000)
//! on 127.0.0.1, path `/socket.io/`, pingInterval 300 ms, pingTimeout 200 ms, maxPayload
//! 1,000,000; namespaces `/` and `/custom`. On connect it emits `auth` with the handshake's auth
//! payload; it answers `message` with `message-back` (same arguments, binary included) and acks
//! `message-with-ack` with the same arguments.

use std::time::Duration;

use engine::{ConnectError, DisconnectReason, EngineConfig, Event, Handler, Socket, SocketIo};
use serde_json::Value;

struct Conformance;

impl Handler for Conformance {
    type Data = ();

    async fn on_connect(&self, socket: &Socket<()>, auth: &Value) -> Result<(), ConnectError> {
        let _ = socket.emit("auth", &[auth]);
        Ok(())
    }

    async fn on_event(&self, socket: &Socket<()>, event: Event) {
        match event.name.as_str() {
            "message" => {
                let _ = socket.emit_binary("message-back", &event.args, event.attachments);
            }
            "message-with-ack" => {
                if let Some(ack) = event.ack {
                    let _ = ack.send_binary(&event.args, event.attachments);
                }
            }
            _ => {}
        }
    }

    async fn on_disconnect(&self, _socket: &Socket<()>, _reason: DisconnectReason) {}
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3000);
    let config = EngineConfig {
        ping_interval: Duration::from_millis(300),
        ping_timeout: Duration::from_millis(200),
        max_payload: 1_000_000,
        connect_timeout: Duration::from_secs(1),
        ..EngineConfig::default()
    };
    let io = SocketIo::builder(config)
        .namespace("/", Conformance)
        .namespace("/custom", Conformance)
        .build();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("listening on http://{}", listener.local_addr()?);
    let options = engine::ServeOptions {
        // Test suites and fan-out benchmarks connect many clients from loopback.
        max_connections_per_ip: engine::ServeOptions::default().max_connections,
        ..engine::ServeOptions::default()
    };
    engine::serve(listener, io.router(), options, std::future::pending()).await
}
