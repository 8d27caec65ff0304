//! What the reconnecting scenarios (jitter, avalanche) share: numbered messages from one
//! publisher, each client's record of which numbers it saw, and socket.io's recovery state.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
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
    /// chinwag's catch-up: resume the session with its token, then `sync` from the last
    /// sequence seen in `general` (again while the answer says `more`). Needs `--full`.
    Chinwag,
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
    /// chinwag: the session token (from the `session` event) and the last `general` seq seen.
    pub token: Option<String>,
    pub last_seq: u64,
    /// chinwag: where follow-up `sync` requests go while a connection is open.
    outbox: Option<mpsc::Sender<String>>,
    next_ack: u64,
}

impl ClientState {
    pub fn new(max_messages: u64) -> ClientState {
        ClientState {
            seen: vec![0; (max_messages as usize).div_ceil(64)],
            unique: 0,
            pid: None,
            offset: None,
            connected_at: 0,
            token: None,
            last_seq: 0,
            outbox: None,
            next_ack: 0,
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
        if recovery == Recovery::Chinwag {
            self.track_chinwag(frame);
        }
        // A sync answer carries many messages: count every marker in the frame.
        let now = now_micros();
        for (at, _) in frame.match_indices(MARKER) {
            if let Some((id, sent)) = parse_marker(&frame[at..]) {
                self.record(id, sent, now, latencies);
            }
        }
    }

    fn record(&mut self, id: u64, sent: u64, now: u64, latencies: &Latencies) {
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
        latencies.from_send.record(now.saturating_sub(sent));
        latencies
            .replay_lag
            .record(now.saturating_sub(sent.max(self.connected_at)));
    }

    /// chinwag: keeps the session token, the last sequence seen, and asks for more after a
    /// `sync` answer that says `more`.
    fn track_chinwag(&mut self, frame: &str) {
        let (is_ack, body) = if let Some(body) = frame.strip_prefix("42") {
            (false, body)
        } else if let Some(body) = frame.strip_prefix("43") {
            (true, body.trim_start_matches(|c: char| c.is_ascii_digit()))
        } else {
            return;
        };
        let Ok(Value::Array(args)) = serde_json::from_str::<Value>(body) else {
            return;
        };
        if !is_ack && args.first().and_then(Value::as_str) == Some("session") {
            self.token = args
                .get(1)
                .and_then(|session| session.get("token"))
                .and_then(Value::as_str)
                .map(str::to_owned);
            return;
        }
        for arg in &args {
            self.last_seq = self.last_seq.max(max_seq(arg));
        }
        let more = is_ack
            && args
                .first()
                .and_then(|answer| answer.get("more"))
                .and_then(Value::as_bool)
                == Some(true);
        if more {
            self.send_sync();
        }
    }

    /// chinwag: asks for everything in `general` after the last sequence seen.
    fn send_sync(&mut self) {
        if let Some(outbox) = &self.outbox {
            self.next_ack += 1;
            let args = serde_json::json!(["sync", {"rooms": {"general": self.last_seq}}]);
            outbox.try_send(format!("42{}{args}", self.next_ack)).ok();
        }
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
            (Recovery::Chinwag, _) if self.token.is_some() => {
                let token = self.token.clone().unwrap_or_default();
                Some(serde_json::json!({ "token": token }).to_string())
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
    acked: Arc<Mutex<HashSet<u64>>>,
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
        let acks = Arc::clone(&acked);
        let connection = tokio::spawn(client::drive(ws, wire, rx, move |frame| {
            if let Some(id) = acknowledged(frame) {
                acks.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(id);
            }
        }));
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

/// The message a frame acknowledges as stored (`43N[{"ok":true,...}]` answers the message
/// sent with ack id N, which is its id + 1).
fn acknowledged(frame: &str) -> Option<u64> {
    let rest = frame.strip_prefix("43")?;
    let digits = rest.find('[')?;
    let ack: u64 = rest[..digits].parse().ok()?;
    rest[digits..]
        .contains(r#""ok":true"#)
        .then(|| ack.checked_sub(1))
        .flatten()
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
    let (ws, handshake) = match connector.open(auth.as_deref()).await {
        Ok(opened) => opened,
        Err(err) => {
            let err = err.to_string();
            if err.contains("invalid_token") {
                // The server forgot the session: start a new one under the name next time.
                state.token = None;
            }
            return Err(err);
        }
    };
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
    // Receivers send only chinwag's `sync` requests; the outbox lives as long as the connection.
    let (outbox, rx) = mpsc::channel::<String>(16);
    state.outbox = Some(outbox);
    if recovery == Recovery::Chinwag && state.token.is_some() {
        state.send_sync();
    }
    let ended = tokio::select! {
        ended = client::drive(ws, wire, rx, |frame| state.on_frame(frame, recovery, latencies)) => {
            Some(ended)
        }
        () = until => None,
    };
    state.outbox = None;
    Ok(ended)
}

/// The largest `seq` of a chinwag message object anywhere inside `value` (0 if none).
fn max_seq(value: &Value) -> u64 {
    match value {
        Value::Object(fields) => {
            let own = if fields.contains_key("text") {
                fields.get("seq").and_then(Value::as_u64).unwrap_or(0)
            } else {
                0
            };
            fields.values().map(max_seq).fold(own, u64::max)
        }
        Value::Array(items) => items.iter().map(max_seq).fold(0, u64::max),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_successful_ack_counts_as_stored() {
        assert_eq!(acknowledged(r#"437[{"ok":true,"seq":3}]"#), Some(6));
        assert_eq!(acknowledged(r#"437[{"ok":false,"error":{}}]"#), None);
        assert_eq!(acknowledged(r#"42["message:new",{"ok":true}]"#), None);
        assert_eq!(acknowledged(r#"430[{"ok":true}]"#), None);
    }

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

    #[test]
    fn a_chinwag_client_keeps_its_token_and_counts_every_message_of_a_sync_answer() {
        let latencies = Latencies::default();
        let mut state = ClientState::new(100);
        state.on_frame(
            r#"42["session",{"token":"t1","user":{"name":"a"}}]"#,
            Recovery::Chinwag,
            &latencies,
        );
        assert_eq!(
            state.auth(Recovery::Chinwag, None).as_deref(),
            Some(r#"{"token":"t1"}"#)
        );
        let answer = format!(
            r#"431[{{"ok":true,"rooms":{{"general":[{{"seq":7,"text":"{}"}},{{"seq":8,"text":"{}"}}]}},"more":false}}]"#,
            body(1),
            body(2)
        );
        state.on_frame(&answer, Recovery::Chinwag, &latencies);
        assert!(state.has(1) && state.has(2));
        assert_eq!(state.last_seq, 8);
    }
}
