//! The engine's broadcast path in isolation, for fan-out benchmarks (`chinwag-bench fanout
//! --join none`): every event a client sends is broadcast to every socket, the sender
//! included, as `new message` with the same arguments. Binds 127.0.0.1 on `PORT` (default 0)
//! and prints `listening on http://ADDR`.

use std::sync::{Arc, OnceLock};

use engine::{
    ConnectError, DisconnectReason, EngineConfig, Event, Handler, ServeOptions, Socket, SocketIo,
};
use serde_json::Value;

/// Holds the server once it is built (the handler is built first).
struct Echo {
    io: Arc<OnceLock<SocketIo>>,
}

impl Handler for Echo {
    type Data = ();

    async fn on_connect(&self, _socket: &Socket<()>, _auth: &Value) -> Result<(), ConnectError> {
        Ok(())
    }

    async fn on_event(&self, _socket: &Socket<()>, event: Event) {
        if let Some(everyone) = self.io.get().and_then(|io| io.of("/")) {
            let _ = everyone.emit("new message", &event.args);
        }
    }

    async fn on_disconnect(&self, _socket: &Socket<()>, _reason: DisconnectReason) {}
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let slot = Arc::new(OnceLock::new());
    let io = SocketIo::builder(EngineConfig::default())
        .namespace("/", Echo { io: slot.clone() })
        .build();
    let _ = slot.set(io.clone());
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("listening on http://{}", listener.local_addr()?);
    let options = ServeOptions {
        // Benchmarks connect every client from loopback.
        max_connections_per_ip: ServeOptions::default().max_connections,
        ..ServeOptions::default()
    };
    engine::serve(listener, io.router(), options, std::future::pending()).await
}
