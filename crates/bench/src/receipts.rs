//! What the reconnecting scenarios (jitter, avalanche) share: numbered messages from one
//! publisher, each client's record of which numbers it saw, and socket.io's recovery state.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{mpsc, watch};

use crate::client::{self, Connector, Ended, Wire};
use crate::histogram::Histogram;
use crate::{Common, now_micros};

const MARKER: &str = "~j|";

/// How a client gets back what it missed while offline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Recovery {
    /// Nothing: a reconnect is a new session (Node socket.io default).
    None,
    /// socket.io connection-state recovery: `{pid, offset}` in the CONNECT auth.
    Socketio,
}

/// Parses `~j|ID|MICROS|` out of a frame.
pub fn parse_marker(frame: &str) -> Option<(u64, u64)> {
    let at = frame.find(MARKER)? + MARKER.len();
    let mut fields = frame[at..].splitn(3, '|');
    let id = fields.next()?.parse().ok()?;
    let micros = fields.next()?.parse().ok()?;
    Some((id, micros))
}

/// The body of message `id`, carrying its send time.
pub fn body(id: u64) -> String {
    format!("{MARKER}{id}|{}|", now_micros())
}

/// Latencies shared by every client of a run.
#[derive(Default)]
pub struct Latencies {
    /// Receipt minus send time (as AnyCable reports it).
    pub from_send: Histogram,
    /// Receipt minus the later of send time and the client's reconnect time.
    pub replay_lag: Histogram,
    /// Copies received twice by the same client.
    pub duplicates: AtomicU64,
}

/// One client's view: which message ids it received, and its recovery state.
pub struct ClientState {
    seen: Vec<u64>,
    pub unique: u64,
    /// socket.io CSR: the session id to resume and the last offset seen.
    pub pid: Option<String>,
    pub offset: Option<String>,
    /// When the current connection was established (µs since the epoch).
    pub connected_at: u64,
}

impl ClientState {
    pub fn new(max_messages: u64) -> ClientState {
        ClientState {
            seen: vec![0; (max_messages as usize).div_ceil(64)],
            unique: 0,
            pid: None,
            offset: None,
            connected_at: 0,
        }
    }

    pub fn has(&self, id: u64) -> bool {
        let (word, bit) = ((id / 64) as usize, id % 64);
        self.seen.get(word).is_some_and(|w| w & (1 << bit) != 0)
    }

    /// Handles one received frame: records a marked message, tracks the CSR offset.
    pub fn on_frame(&mut self, frame: &str, recovery: Recovery, latencies: &Latencies) {
        if recovery == Recovery::Socketio && self.pid.is_some() && frame.starts_with("42") {
            // The official client's rule: the last argument of an event, if it is a string,
            // is the recovery offset.
            if let Ok(Value::Array(args)) = serde_json::from_str::<Value>(&frame[2..])
                && let Some(Value::String(offset)) = args.last().filter(|_| args.len() > 1)
            {
                self.offset = Some(offset.clone());
            }
        }
        let Some((id, sent)) = parse_marker(frame) else {
            return;
        };
        let (word, bit) = ((id / 64) as usize, id % 64);
        let Some(slot) = self.seen.get_mut(word) else {
            return;
        };
        if *slot & (1 << bit) != 0 {
            latencies.duplicates.fetch_add(1, Ordering::Relaxed);
            return;
        }
        *slot |= 1 << bit;
        self.unique += 1;
        let now = now_micros();
        latencies.from_send.record(now.saturating_sub(sent));
        latencies
            .replay_lag
            .record(now.saturating_sub(sent.max(self.connected_at)));
    }

    /// The CONNECT auth for the next connection of this client.
    pub fn auth(&self, recovery: Recovery, base: Option<&str>) -> Option<String> {
        match (recovery, &self.pid) {
            (Recovery::Socketio, Some(pid)) => {
                let mut auth: serde_json::Map<String, Value> = base
                    .and_then(|base| serde_json::from_str(base).ok())
                    .unwrap_or_default();
                auth.insert("pid".into(), Value::String(pid.clone()));
                if let Some(offset) = &self.offset {
                    auth.insert("offset".into(), Value::String(offset.clone()));
                }
                Some(Value::Object(auth).to_string())
            }
            _ => base.map(str::to_owned),
        }
    }
}

/// The publisher: one connection (reconnecting after 500 ms if it drops) sending message ids
/// 0, 1, 2, … at `rate` per second until `stop`. Returns, per id, whether it was written.
pub async fn publish(
    connector: Arc<Connector>,
    common: Common,
    rate: f64,
    max_messages: u64,
    mut stop: watch::Receiver<bool>,
    published: Arc<AtomicU64>,
) -> Vec<u64> {
    let wire = connector.wire();
    let mut sent_at = Vec::new();
    let period = Duration::from_secs_f64(1.0 / rate.max(0.01));
    let mut next = tokio::time::Instant::now();
    let mut id = 0;
    'connections: while !*stop.borrow() && id < max_messages {
        let Ok((ws, _)) = connector.open(common.auth_for(usize::MAX).as_deref()).await else {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        // Messages not sent while disconnected are skipped, not sent in a burst on return.
        next = tokio::time::Instant::now().max(next);
        let (outbox, rx) = mpsc::channel::<String>(64);
        if wire == Wire::SocketIo && !common.full {
            outbox
                .try_send(client::event_frame(wire, &common.join_event, "publisher"))
                .ok();
        }
        let connection = tokio::spawn(client::drive(ws, wire, rx, |_| {}));
        while id < max_messages {
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                _ = stop.changed() => break 'connections,
            }
            next += period;
            if connection.is_finished() {
                continue 'connections;
            }
            let frame =
                client::chat_frame(wire, common.full, &common.send_event, &body(id), id + 1);
            if outbox.send(frame).await.is_err() {
                continue 'connections;
            }
            sent_at.push(now_micros());
            id += 1;
            published.store(id, Ordering::Relaxed);
        }
        break;
    }
    sent_at
}

/// Runs one connection of a client until it ends or `until` resolves; returns how it ended
/// (`None` when `until` fired, i.e. we closed it).
pub async fn connect_once(
    connector: &Connector,
    state: &mut ClientState,
    recovery: Recovery,
    base_auth: Option<&str>,
    latencies: &Latencies,
    until: impl std::future::Future<Output = ()>,
) -> Result<Option<Ended>, String> {
    let auth = state.auth(recovery, base_auth);
    let (ws, handshake) = connector
        .open(auth.as_deref())
        .await
        .map_err(|err| err.to_string())?;
    state.connected_at = now_micros();
    if recovery == Recovery::Socketio {
        if handshake.recovery_pid != state.pid {
            // A new session: the offset of the old one means nothing to it.
            state.offset = None;
        }
        state.pid = handshake.recovery_pid;
    }
    for frame in &handshake.early_frames {
        state.on_frame(frame, recovery, latencies);
    }
    let wire = connector.wire();
    // The outbox stays open for the connection's life; nothing is sent by receivers.
    let (_outbox, rx) = mpsc::channel::<String>(1);
    tokio::select! {
        ended = client::drive(ws, wire, rx, |frame| state.on_frame(frame, recovery, latencies)) => {
            Ok(Some(ended))
        }
        () = until => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_counts_each_message_once_and_tracks_the_offset() {
        let latencies = Latencies::default();
        let mut state = ClientState::new(100);
        state.pid = Some("p1".into());
        let frame = format!(r#"42["updateChat",null,"{}","offset-7"]"#, body(5));
        state.on_frame(&frame, Recovery::Socketio, &latencies);
        state.on_frame(&frame, Recovery::Socketio, &latencies);
        assert!(state.has(5));
        assert!(!state.has(4));
        assert_eq!(state.unique, 1);
        assert_eq!(latencies.duplicates.load(Ordering::Relaxed), 1);
        assert_eq!(state.offset.as_deref(), Some("offset-7"));
        let auth = state.auth(Recovery::Socketio, None).unwrap_or_default();
        assert_eq!(auth, r#"{"offset":"offset-7","pid":"p1"}"#);
    }
}
