//! A raw-WebSocket relay: every text frame received from any client is sent to every connected
//! client (the sender included), with no Socket.IO framing. It is the floor of this machine for
//! fan-out, the number chinwag is measured against.
//!
//! Each broadcast is one shared `Utf8Bytes` (reference-counted), so a frame is copied once into
//! each socket's write buffer and never re-encoded. Each client has a bounded queue; a client whose
//! queue is full is disconnected (counted on stderr at exit), never silently skipped.
//!
//! Env: `PORT` (default 8080; 0 picks a free port). Binds 127.0.0.1 only: it is a bench target.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

/// Frames queued per client before it counts as a slow reader and is disconnected.
const CLIENT_QUEUE: usize = 4096;
/// Largest frame accepted from a client.
const MAX_FRAME: usize = 64 * 1024;

/// Every connected client's outbound queue, by connection id.
#[derive(Default)]
struct Clients {
    senders: Mutex<HashMap<u64, mpsc::Sender<Utf8Bytes>>>,
    next_id: AtomicU64,
    dropped_slow: AtomicU64,
}

impl Clients {
    fn add(&self, sender: mpsc::Sender<Utf8Bytes>) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut senders) = self.senders.lock() {
            senders.insert(id, sender);
        }
        id
    }

    fn remove(&self, id: u64) {
        if let Ok(mut senders) = self.senders.lock() {
            senders.remove(&id);
        }
    }

    /// Queues the frame for every client; a client with a full queue is removed, which closes
    /// its writer and therefore its connection.
    fn broadcast(&self, frame: &Utf8Bytes) {
        let Ok(mut senders) = self.senders.lock() else {
            return;
        };
        senders.retain(|_, sender| match sender.try_send(frame.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.dropped_slow.fetch_add(1, Ordering::Relaxed);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
    }
}

async fn serve_client(stream: TcpStream, clients: Arc<Clients>) {
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        // Frames are fed into a 16 KiB buffer and written with one flush per batch.
        .write_buffer_size(16 * 1024)
        .max_message_size(Some(MAX_FRAME))
        .max_frame_size(Some(MAX_FRAME));
    let Ok(socket) = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await else {
        return;
    };
    let (mut sink, mut source) = socket.split();
    let (sender, mut queue) = mpsc::channel::<Utf8Bytes>(CLIENT_QUEUE);
    let id = clients.add(sender);

    let writer = tokio::spawn(async move {
        // Batch: feed everything already queued, then flush once.
        while let Some(frame) = queue.recv().await {
            if sink.feed(Message::Text(frame)).await.is_err() {
                return;
            }
            while let Ok(frame) = queue.try_recv() {
                if sink.feed(Message::Text(frame)).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
        sink.close().await.ok();
    });

    while let Some(Ok(message)) = source.next().await {
        match message {
            Message::Text(text) => clients.broadcast(&text),
            Message::Close(_) => break,
            _ => {}
        }
    }
    clients.remove(id);
    writer.abort();
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = match std::env::var("PORT") {
        Ok(port) => port.parse()?,
        Err(_) => 8080,
    };
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    println!("listening on http://{}", listener.local_addr()?);
    let clients = Arc::new(Clients::default());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                // Accept errors (e.g. out of file descriptors) are transient: keep serving.
                if let Ok((stream, _)) = accepted {
                    stream.set_nodelay(true).ok();
                    tokio::spawn(serve_client(stream, Arc::clone(&clients)));
                }
            }
            _ = term.recv() => break,
        }
    }
    eprintln!(
        "raw relay: {} slow clients disconnected",
        clients.dropped_slow.load(Ordering::Relaxed)
    );
    Ok(())
}
