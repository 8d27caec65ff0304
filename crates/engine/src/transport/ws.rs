//! The WebSocket transport: one task per connection that reads frames, dispatches handlers,
//! flushes the outbox in batches and keeps the heartbeat.
//!
//! Memory per idle connection is what this file is designed around: the task future holds
//! the WebSocket with a small read buffer, the outbox stays unallocated while empty, and
//! hyper's connection state is gone after the upgrade. The frame encoding and the writes
//! themselves are in `frame_writer.rs`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderValue, StatusCode, header};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{Instant, sleep_until};
// Closing calls `WebSocketStream::close` by name: when another crate in the build turns on
// `futures`' `std` feature, `Box<Ws>` is a `Sink` too and `ws.close(..)` would pick `SinkExt`'s.
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::EngineError;
use super::frame_writer::{Progress, write_frames};
use crate::conn::{Conn, Inbound, Job};
use crate::eio::{self, Frame, Incoming, PacketType};
use crate::server::ServerInner;
use crate::types::{DisconnectReason, FAR_FUTURE, Farewell, Handshake, Transport};

type Ws = WebSocketStream<TokioIo<Upgraded>>;

/// Bytes tungstenite reads per syscall; small so idle connections stay small.
const READ_BUFFER: usize = 128;
/// Frames are gathered up to this size before a write (several frames per syscall).
const WRITE_BUFFER: usize = 16 * 1024;
/// How long a closing connection may spend flushing its last frames.
const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a slow reader has to read its last frame and the close frame saying why.
const FAREWELL_TIMEOUT: Duration = Duration::from_secs(10);
/// After its close frame, the server reads (and drops) what the client still sends, for up
/// to this long and this many bytes, before closing the socket: closing it with unread data
/// sends a reset, and the client may lose the close frame (say, a 1009 for a frame it is
/// still writing).
const LINGER_TIMEOUT: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 64 << 20;

/// Why the WebSocket is opened.
pub(crate) enum Mode {
    /// A new Engine.IO connection over WebSocket.
    Open(Arc<Conn>),
    /// The upgrade of an existing polling session.
    Upgrade(Arc<Conn>),
    /// A WebSocket for a session that already has one (or is getting one): closed at once,
    /// the session untouched.
    Refuse(Arc<Conn>),
}

/// Answer the HTTP upgrade request and spawn the connection task.
pub(crate) fn accept(mut req: Request, mode: Mode) -> Response {
    let headers = req.headers();
    let is_upgrade = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let version_ok = headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v == "13");
    let Some(key) = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .filter(|_| is_upgrade && version_ok)
    else {
        return EngineError::BadRequest.response();
    };
    if let Mode::Upgrade(conn) = &mode {
        conn.set_upgrade_pending(true);
    }
    let accept_key = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let on_upgrade = hyper::upgrade::on(&mut req);
    let max_payload = match &mode {
        Mode::Open(conn) | Mode::Upgrade(conn) | Mode::Refuse(conn) => {
            conn.host.config().max_payload
        }
    };
    let fut = async move {
        let Ok(upgraded) = on_upgrade.await else {
            if let Mode::Upgrade(conn) = &mode {
                conn.set_upgrade_pending(false);
            }
            return;
        };
        let config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER)
            .write_buffer_size(WRITE_BUFFER)
            .max_message_size(Some(max_payload))
            .max_frame_size(Some(max_payload));
        // Boxed: the task future then carries a pointer, not the stream, through every state.
        let ws = Box::new(
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config))
                .await,
        );
        match mode {
            Mode::Open(conn) => open(conn, ws).await,
            Mode::Upgrade(conn) => upgrade(conn, ws).await,
            Mode::Refuse(_) => {
                let mut ws = ws;
                let frame = CloseFrame {
                    code: CloseCode::Policy,
                    reason: "session already has a WebSocket".into(),
                };
                let _ = tokio::time::timeout(
                    CLOSE_FLUSH_TIMEOUT,
                    WebSocketStream::close(&mut *ws, Some(frame)),
                )
                .await;
            }
        }
    };
    tokio::spawn(fut);
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(value) = HeaderValue::from_str(&accept_key) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, value);
    }
    response
}

/// A new connection over WebSocket (created with [`Conn::new`] by the router).
pub(crate) fn new_conn(server: Arc<ServerInner>, eio: u8, handshake: Handshake) -> Arc<Conn> {
    Conn::new(server, eio, Transport::WebSocket, handshake, false)
}

async fn open(conn: Arc<Conn>, mut ws: Box<Ws>) {
    let eio = conn.eio;
    // No local handle on the host: the task's future would carry it through `run`.
    if conn.host.shutting_down() {
        let _ = WebSocketStream::close(&mut *ws, None).await;
        return;
    }
    if ws
        .send(Message::text(conn.open_packet(false)))
        .await
        .is_err()
    {
        return;
    }
    conn.host.add_session(&conn);
    if eio == 3 {
        conn.enqueue(Inbound::Connect {
            nsp: "/".into(),
            auth: serde_json::json!({}),
            query: Vec::new(),
        });
    }
    run(conn, ws).await;
}

/// The upgrade of a polling session: probe, then `5`, then this task owns the connection.
async fn upgrade(conn: Arc<Conn>, mut ws: Box<Ws>) {
    let config = conn.host.config();
    let probe_timeout = config.ping_interval + config.ping_timeout;
    loop {
        let message = match tokio::time::timeout(probe_timeout, ws.next()).await {
            Ok(Some(Ok(message))) => message,
            _ => break,
        };
        let Message::Text(text) = message else {
            continue;
        };
        match (text.as_str(), conn.transport()) {
            ("2probe", Transport::Polling) => {
                if ws.send(Message::text("3probe")).await.is_err() {
                    break;
                }
                // Pending and new polls now answer with noop so the client can pause polling.
                conn.set_transport(Transport::Upgrading);
            }
            ("5", Transport::Upgrading) => {
                // The transport first: a poll waiting for the outcome must see it upgraded.
                conn.set_transport(Transport::WebSocket);
                conn.set_upgrade_pending(false);
                conn.reset_heartbeat();
                return run(conn, ws).await;
            }
            _ => break,
        }
    }
    // The upgrade failed: the session goes on over polling.
    if conn.transport() == Transport::Upgrading {
        conn.set_transport(Transport::Polling);
    }
    conn.set_upgrade_pending(false);
}

/// What a received WebSocket message asks of the loop.
enum Step {
    Continue,
    Close(DisconnectReason, Option<CloseCode>),
}

fn on_message(conn: &Arc<Conn>, message: Option<Result<Message, WsError>>) -> Step {
    let incoming = match message {
        None => return Step::Close(DisconnectReason::TransportClose, None),
        Some(Err(WsError::Capacity(_))) => {
            return Step::Close(DisconnectReason::TransportError, Some(CloseCode::Size));
        }
        Some(Err(WsError::Utf8(_))) => {
            return Step::Close(DisconnectReason::TransportError, Some(CloseCode::Invalid));
        }
        Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed | WsError::Io(_))) => {
            return Step::Close(DisconnectReason::TransportClose, None);
        }
        Some(Err(_)) => {
            return Step::Close(DisconnectReason::TransportError, Some(CloseCode::Protocol));
        }
        Some(Ok(Message::Close(_))) => return Step::Close(DisconnectReason::TransportClose, None),
        Some(Ok(Message::Text(text))) => match eio::decode_text(text.as_str()) {
            Ok(Incoming::Text(kind, data)) => {
                return match conn.receive(Incoming::Text(kind, data)) {
                    Ok(()) if kind == PacketType::Close => {
                        Step::Close(DisconnectReason::TransportClose, None)
                    }
                    Ok(()) => Step::Continue,
                    Err(e) => {
                        tracing::debug!(sid = %conn.sid, reason = e.0, "closing on invalid packet");
                        Step::Close(DisconnectReason::ParseError, None)
                    }
                };
            }
            _ => return Step::Close(DisconnectReason::ParseError, None),
        },
        Some(Ok(Message::Binary(data))) => {
            if conn.eio >= 4 {
                Incoming::Binary(data)
            } else {
                // v3 binary frames start with the packet type byte (4: message).
                match data.first() {
                    Some(4) => Incoming::Binary(data.slice(1..)),
                    _ => return Step::Close(DisconnectReason::ParseError, None),
                }
            }
        }
        Some(Ok(_)) => return Step::Continue, // ping/pong frames: tungstenite answers them
    };
    match conn.receive(incoming) {
        Ok(()) => Step::Continue,
        Err(_) => Step::Close(DisconnectReason::ParseError, None),
    }
}

/// Write every writable queued frame straight to the socket, several per syscall.
///
/// Server frames are unmasked, so a frame is a 2–10 byte header and the payload as it is,
/// encoded here without tungstenite's per-frame machinery (see [`write_frames`]).
/// Tungstenite's own pending output (an automatic pong) is flushed first, so frames never
/// interleave.
///
/// A batch of at least [`KEEP_BUFFER_FROM`] frames means the connection is busy: its buffer
/// is kept in `spare` and becomes the next outbox, so steady traffic allocates no buffers.
/// Smaller batches let it go, so idle connections keep none.
///
/// The batch being written and how far it got live in `writing`, outside this future: if the
/// future is dropped (the connection closed, or the write timed out), the goodbye knows
/// whether the stream ends inside a frame and can finish that frame before its close frame.
async fn flush(
    conn: &Conn,
    ws: &mut Ws,
    spare: &mut VecDeque<Frame>,
    writing: &mut Writing,
) -> Result<(), WsError> {
    if writing.batch.is_empty() {
        writing.batch = conn.take_batch_reusing(std::mem::take(spare));
        writing.progress = Progress::default();
        if writing.batch.is_empty() {
            *spare = std::mem::take(&mut writing.batch);
            return Ok(());
        }
    }
    if writing.progress.offset == 0 {
        // At a frame boundary: tungstenite's own output (a pong) may go first.
        ws.flush().await?;
    }
    write_frames(
        ws.get_mut(),
        conn.eio,
        writing.batch.make_contiguous(),
        &mut writing.progress,
    )
    .await
    .map_err(WsError::Io)?;
    let mut batch = std::mem::take(&mut writing.batch);
    if batch.len() >= KEEP_BUFFER_FROM {
        batch.clear();
        *spare = batch;
    }
    if conn.take_reply_pause() {
        // What `on_connect` emitted follows the CONNECT reply in a later read of the client,
        // as with the reference server: clients that handle one message per read event and
        // only then listen for the next (the official protocol suite does) would miss it.
        tokio::time::sleep(AFTER_CONNECT_REPLY).await;
    }
    Ok(())
}

/// The batch the writer took from the outbox and how much of it is on the wire.
#[derive(Default)]
struct Writing {
    batch: VecDeque<Frame>,
    progress: Progress,
}

impl Writing {
    /// Write the rest of the frame the stream stopped inside, if any, and forget the rest
    /// of the batch: what follows on the wire is then a whole frame.
    async fn finish_frame(&mut self, ws: &mut Ws, eio: u8) -> std::io::Result<()> {
        let Progress { next, offset } = self.progress;
        if offset > 0 && next < self.batch.len() {
            let frames = self.batch.make_contiguous();
            let mut progress = Progress { next: 0, offset };
            write_frames(ws.get_mut(), eio, &frames[next..=next], &mut progress).await?;
        }
        self.batch.clear();
        self.progress = Progress::default();
        Ok(())
    }
}

/// The pause between a CONNECT reply and the frames `on_connect` queued behind it.
const AFTER_CONNECT_REPLY: Duration = Duration::from_millis(1);

/// Batches of this many frames or more keep their buffer for the next batch.
const KEEP_BUFFER_FROM: usize = 4;

/// The lingering close: end our side of the stream, then read the client's until it ends
/// too (bounded by [`LINGER_TIMEOUT`] and [`LINGER_BYTES`]).
async fn linger(ws: &mut Ws) {
    let io = ws.get_mut();
    let drain = async {
        let _ = io.shutdown().await;
        let mut buffer = vec![0u8; 16 * 1024];
        let mut left = LINGER_BYTES;
        while left > 0 {
            match io.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(read) => left = left.saturating_sub(read),
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_TIMEOUT, drain).await;
}

/// Resolves once the connection is closed.
async fn closed(conn: &Conn) {
    loop {
        let idle = conn.idle.notified();
        tokio::pin!(idle);
        idle.as_mut().enable();
        if conn.closed().is_some() {
            return;
        }
        idle.await;
    }
}

/// The connection loop: read, dispatch, write, heartbeat — one task.
async fn run(conn: Arc<Conn>, mut ws: Box<Ws>) {
    let mut job: Option<Job> = None;
    let mut next_tick = conn.heartbeat_tick();
    // One timer for the whole connection, moved rather than re-created each iteration.
    let timer = sleep_until(next_tick.unwrap_or_else(|| Instant::now() + FAR_FUTURE));
    tokio::pin!(timer);
    let mut close_code = None;
    // The buffer of the last busy batch, reused as the next outbox (see `flush`).
    let mut spare = VecDeque::new();
    let mut writing = Writing::default();
    loop {
        if conn.closed().is_some() {
            break;
        }
        if job.is_none() {
            job = conn.next_job(false);
        }
        let running = job.is_some();
        let reading = !conn.inbox_full();
        let wake_at = next_tick.unwrap_or_else(|| Instant::now() + FAR_FUTURE);
        if timer.deadline() != wake_at {
            timer.as_mut().reset(wake_at);
        }
        tokio::select! {
            _ = async { if let Some(j) = job.as_mut() { j.await } }, if running => {
                job = None;
                conn.job_done();
            }
            _ = conn.writer_wake.notified() => {}
            _ = conn.dispatch_wake.notified(), if !running => {}
            message = ws.next(), if reading => {
                if let Step::Close(reason, code) = on_message(&conn, message) {
                    close_code = code;
                    if reason == DisconnectReason::TransportClose && code.is_none() {
                        conn.close_by_client();
                    } else {
                        conn.close(reason);
                    }
                    break;
                }
            }
            _ = &mut timer => {
                next_tick = conn.heartbeat_tick();
                // Once per heartbeat: a connection that went quiet gives its buffers back.
                if spare.capacity() > 0 && !conn.has_writable_frames() {
                    spare = VecDeque::new();
                    conn.release_idle_outbox();
                }
            }
        }
        if conn.has_writable_frames() {
            // A client that stops reading must not hold this task (and its memory) forever:
            // a write that cannot finish within a heartbeat period fails the connection.
            let write_timeout = conn.host.config().ping_interval + conn.host.config().ping_timeout;
            let written = tokio::select! {
                // The flush first: when it completes at once (the usual case), the timeout
                // is never polled, so no timer is registered for it.
                biased;
                result = flush(&conn, &mut ws, &mut spare, &mut writing) => result.is_ok(),
                _ = closed(&conn) => false,
                _ = tokio::time::sleep(write_timeout) => {
                    conn.cut_off_slow_reader(Farewell::StalledReader);
                    false
                }
            };
            if !written {
                conn.close(DisconnectReason::TransportError);
                break;
            }
        }
    }
    // Closed: send what is queued (CONNECT_ERROR, DISCONNECT…) and a close frame, bounded in
    // time. A slow reader is told why in the close frame, after the frame it was in the
    // middle of, and nothing else: it could not read the rest in time anyway.
    let farewell = conn.farewell();
    let eio = conn.eio;
    let goodbye = async {
        let frame = match farewell {
            Some(farewell) => {
                writing.finish_frame(&mut ws, eio).await?;
                Some(CloseFrame {
                    code: CloseCode::from(farewell.code()),
                    reason: farewell.reason(conn.host.config()).into(),
                })
            }
            None => {
                while !writing.batch.is_empty() || conn.has_writable_frames() {
                    flush(&conn, &mut ws, &mut spare, &mut writing).await?;
                }
                close_code.map(|code| CloseFrame {
                    code,
                    reason: "".into(),
                })
            }
        };
        WebSocketStream::close(&mut *ws, frame).await
    };
    let limit = if farewell.is_some() {
        FAREWELL_TIMEOUT
    } else {
        CLOSE_FLUSH_TIMEOUT
    };
    let _ = tokio::time::timeout(limit, goodbye).await;
    if !conn.closed_by_client() {
        // Boxed: the drain's buffer must not enlarge every connection's task.
        Box::pin(linger(&mut ws)).await;
    }
    drop(ws);
    // Finish the handler we were running; the cleanup task dispatches the rest.
    if let Some(job) = job {
        job.await;
        conn.job_done();
    }
}
