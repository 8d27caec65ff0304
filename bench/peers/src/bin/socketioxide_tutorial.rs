//! The Socket.IO chat tutorial's server on socketioxide 0.18: the Rust library people would pick
//! instead of chinwag, written the plain way its documentation shows, to be measured side by side.
//!
//! Behaviour and camelCase events follow the tutorial (and the Node port in `bench/node`).
//! Emit results are ignored as in socketioxide's own examples, which is what a plain app does;
//! the benchmark's delivered/expected column shows what that costs under overload.
//!
//! Env: `PORT` (default 8080; 0 picks a free port). Binds 127.0.0.1 only: it is a bench target.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use socketioxide::SocketIo;
use socketioxide::extract::{Data, SocketRef, State};

/// The name a socket gave with `addUser`, kept in the socket's extensions.
#[derive(Clone)]
struct Username(String);

/// The tutorial's global `usernames` object: name → name, sent whole in `updateUsers`.
#[derive(Clone, Default)]
struct Usernames(Arc<Mutex<BTreeMap<String, String>>>);

impl Usernames {
    /// A copy of the map for one emit, taken under the lock and sent after it is released.
    fn snapshot(&self) -> BTreeMap<String, String> {
        self.0.lock().map(|names| names.clone()).unwrap_or_default()
    }

    fn insert(&self, name: &str) {
        if let Ok(mut names) = self.0.lock() {
            names.insert(name.to_owned(), name.to_owned());
        }
    }

    fn remove(&self, name: &str) {
        if let Ok(mut names) = self.0.lock() {
            names.remove(name);
        }
    }
}

/// A name for messages sent before `addUser`: the tutorial broadcasts `undefined` (JSON null).
fn username_of(socket: &SocketRef) -> Option<String> {
    socket.extensions.get::<Username>().map(|name| name.0)
}

async fn on_connect(socket: SocketRef) {
    socket.on(
        "sendChat",
        async |socket: SocketRef, Data::<serde_json::Value>(text), io: SocketIo| {
            let name = username_of(&socket);
            io.emit("updateChat", &(name, text)).await.ok();
        },
    );

    socket.on(
        "addUser",
        async |socket: SocketRef, Data::<String>(name), io: SocketIo, names: State<Usernames>| {
            socket.extensions.insert(Username(name.clone()));
            names.insert(&name);
            socket
                .emit("updateChat", &("Server", "you have connected"))
                .ok();
            let joined = format!("{name} has connected");
            socket
                .broadcast()
                .emit("updateChat", &("Server", joined))
                .await
                .ok();
            io.emit("updateUsers", &names.snapshot()).await.ok();
        },
    );

    socket.on_disconnect(
        async |socket: SocketRef, io: SocketIo, names: State<Usernames>| {
            // Only named users were announced joining, so only they are announced leaving.
            let Some(name) = username_of(&socket) else {
                return;
            };
            names.remove(&name);
            io.emit("updateUsers", &names.snapshot()).await.ok();
            let left = format!("{name} has disconnected.");
            socket
                .broadcast()
                .emit("updateChat", &("Server", left))
                .await
                .ok();
        },
    );
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = match std::env::var("PORT") {
        Ok(port) => port.parse()?,
        Err(_) => 8080,
    };
    let names = Usernames::default();
    let (layer, io) = SocketIo::builder().with_state(names).build_layer();
    io.ns("/", on_connect);
    let app = axum::Router::new().layer(layer).with_state(());

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    Ok(())
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => return std::future::pending().await,
    };
    term.recv().await;
}
