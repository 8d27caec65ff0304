//! HTTP long-polling: the handshake GET, the waiting GET that drains the outbox, the POST that
//! feeds the reader, and the session's driver task (heartbeat and dispatch until an upgrade).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use http::StatusCode;
use http_body_util::{BodyExt, Limited};
use tokio::time::{Instant, sleep_until};

use super::{EngineError, plain_response};
use crate::conn::{Conn, Host, Inbound, Job};
use crate::eio::{self, Frame};
use crate::serve::{ConnGuard, Slot};
use crate::server::ServerInner;
use crate::types::{DisconnectReason, FAR_FUTURE, Handshake, Transport};

/// Open a polling session: the response carries the open packet. `client_slot`: a proxied
/// client's place under the per-address cap (see `transport::route`), held for its life.
pub(crate) fn open(
    server: Arc<ServerInner>,
    eio: u8,
    handshake: Handshake,
    b64: bool,
    client_slot: Option<ConnGuard>,
) -> Response {
    // A polling session counts as a connection (per address too, unless its client was
    // counted through a proxy already) while it lives on polling.
    let per_ip = match client_slot {
        Some(_) => None,
        None => handshake.remote_addr.map(|addr| addr.ip()),
    };
    let slot = match (&server.limits, handshake.remote_addr) {
        (Some(limits), Some(_)) => match limits.admit(per_ip, Slot::PollingSession) {
            Some(slot) => Some(slot),
            None => return super::too_many_connections(),
        },
        _ => None,
    };
    let upgrades = server.config.allow_upgrades && server.config.allow_websocket;
    let conn = Conn::new(
        server.clone(),
        eio,
        Transport::Polling,
        handshake,
        eio == 3 && !b64,
    );
    if let Some(slot) = slot {
        conn.hold_slot(slot);
    }
    if let Some(slot) = client_slot {
        conn.hold_client_slot(slot);
    }
    server.add_session(&conn);
    let open = Frame::text(conn.open_packet(upgrades));
    if eio == 3 {
        // Socket.IO v4 clients are connected to `/` implicitly.
        conn.enqueue(Inbound::Connect {
            nsp: "/".into(),
            auth: serde_json::json!({}),
            query: Vec::new(),
        });
    }
    tokio::spawn(driver(conn.clone()));
    encode_response(&conn, &[open])
}

fn encode_response(conn: &Conn, frames: &[Frame]) -> Response {
    if conn.eio >= 4 {
        return plain_response(
            StatusCode::OK,
            "text/plain; charset=UTF-8",
            eio::encode_payload_v4(frames),
        );
    }
    let has_binary = frames.iter().any(|f| matches!(f, Frame::Binary(_)));
    if conn.v3_binary_polling && has_binary {
        plain_response(
            StatusCode::OK,
            "application/octet-stream",
            eio::encode_payload_v3_binary(frames),
        )
    } else {
        plain_response(
            StatusCode::OK,
            "text/plain; charset=UTF-8",
            eio::encode_payload_v3_text(frames),
        )
    }
}

/// Closes the session if the waiting GET is dropped (the client went away).
struct PollGuard {
    conn: Arc<Conn>,
    answered: bool,
}

impl Drop for PollGuard {
    fn drop(&mut self) {
        self.conn.end_poll();
        if !self.answered {
            self.conn.close(DisconnectReason::TransportClose);
        }
    }
}

/// The waiting GET: answers with queued frames as soon as there are some.
pub(crate) async fn get(conn: Arc<Conn>) -> Response {
    if !conn.begin_poll() {
        // A second concurrent poll is a protocol violation: close the session; the pending
        // poll answers with the close packet.
        conn.close(DisconnectReason::TransportError);
        return EngineError::BadRequest.response();
    }
    let mut guard = PollGuard {
        conn: conn.clone(),
        answered: false,
    };
    // A poll that begins while a WebSocket upgrade of the session is under way waits a moment
    // for its outcome, as the reference server (which handles `2probe` and `5` in one turn)
    // behaves: refused once upgraded, answered as usual otherwise. Bounded, because a client
    // that sent it before seeing `3probe` waits for it before it sends `5`.
    let hold_until = conn
        .upgrade_pending()
        .then(|| Instant::now() + UPGRADE_OUTCOME_WAIT);
    loop {
        let wake = conn.writer_wake.notified();
        tokio::pin!(wake);
        wake.as_mut().enable();
        if let Some(until) = hold_until.filter(|until| Instant::now() < *until)
            && conn.closed().is_none()
            && !conn.has_writable_frames()
        {
            if conn.transport() == Transport::WebSocket {
                guard.answered = true;
                return EngineError::BadRequest.response();
            }
            if conn.upgrade_pending() {
                tokio::select! {
                    _ = &mut wake => {}
                    _ = sleep_until(until) => {}
                }
                continue;
            }
        }
        if let Some(frames) = ready_frames(&conn) {
            guard.answered = true;
            return encode_response(&conn, &frames);
        }
        wake.await;
    }
}

/// How long a poll begun during a WebSocket upgrade waits for the upgrade's outcome.
const UPGRADE_OUTCOME_WAIT: std::time::Duration = std::time::Duration::from_millis(30);

/// What a poll should answer now, if anything.
fn ready_frames(conn: &Conn) -> Option<Vec<Frame>> {
    if conn.closed().is_some() {
        let mut frames: Vec<Frame> = conn.take_batch().into();
        if conn.closed_by_client() {
            if frames.is_empty() {
                frames.push(Frame::text("6"));
            }
        } else {
            frames.push(conn.final_close_packet());
        }
        return Some(frames);
    }
    match conn.transport() {
        Transport::WebSocket => Some(vec![Frame::text("6")]),
        Transport::Upgrading => {
            let frames: Vec<Frame> = conn.take_batch().into();
            Some(if frames.is_empty() {
                vec![Frame::text("6")]
            } else {
                frames
            })
        }
        Transport::Polling => {
            let frames: Vec<Frame> = conn.take_batch().into();
            (!frames.is_empty()).then_some(frames)
        }
    }
}

struct PostGuard(Arc<Conn>);

impl Drop for PostGuard {
    fn drop(&mut self) {
        self.0.end_post();
    }
}

/// A POST: read the body (bounded in size and time), decode, hand every packet to the reader.
pub(crate) async fn post(conn: Arc<Conn>, req: Request) -> Response {
    if !conn.begin_post() {
        conn.close(DisconnectReason::TransportError);
        return EngineError::BadRequest.response();
    }
    let _guard = PostGuard(conn.clone());
    let config = conn.host.config();
    let binary_body = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/octet-stream"));
    let declared = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > config.max_payload as u64) {
        conn.close(DisconnectReason::TransportError);
        return plain_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            "text/plain",
            "payload too large",
        );
    }
    let body = Limited::new(req.into_body(), config.max_payload).collect();
    let body = match tokio::time::timeout(config.http_request_timeout, body).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(error)) => {
            conn.close(DisconnectReason::TransportError);
            if error
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                return plain_response(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "text/plain",
                    "payload too large",
                );
            }
            return EngineError::BadRequest.response();
        }
        Err(_) => {
            conn.close(DisconnectReason::TransportError);
            return plain_response(StatusCode::REQUEST_TIMEOUT, "text/plain", "request timeout");
        }
    };

    // Backpressure: wait (bounded) while earlier packets still wait for their handlers.
    let deadline = Instant::now() + config.http_request_timeout;
    while conn.inbox_full() {
        let idle = conn.idle.notified();
        tokio::pin!(idle);
        idle.as_mut().enable();
        if conn.closed().is_some() || !conn.inbox_full() {
            break;
        }
        if tokio::time::timeout_at(deadline, idle).await.is_err() {
            conn.close(DisconnectReason::TransportError);
            return EngineError::BadRequest.response();
        }
    }

    let decoded = match (conn.eio, binary_body) {
        (4, _) => eio::decode_payload_v4(&body),
        (_, true) => eio::decode_payload_v3_binary(&body),
        (_, false) => eio::decode_payload_v3_text(&body),
    };
    let Ok(packets) = decoded else {
        conn.close(DisconnectReason::ParseError);
        return EngineError::BadRequest.response();
    };
    for packet in packets {
        if let Err(error) = conn.receive(packet) {
            tracing::debug!(sid = %conn.sid, reason = error.0, "closing on invalid packet");
            conn.close(DisconnectReason::ParseError);
            return EngineError::BadRequest.response();
        }
    }
    plain_response(StatusCode::OK, "text/html", Body::from("ok"))
}

/// The polling session's own task: heartbeat and dispatch. It ends when the session closes
/// or a WebSocket has taken over (after finishing the handler it was running).
async fn driver(conn: Arc<Conn>) {
    let mut job: Option<Job> = None;
    let mut next_tick = conn.heartbeat_tick();
    // One timer for the whole connection, moved rather than re-created each iteration.
    let timer = sleep_until(next_tick.unwrap_or_else(|| Instant::now() + FAR_FUTURE));
    tokio::pin!(timer);
    loop {
        if job.is_none() {
            if conn.closed().is_some() {
                return;
            }
            if conn.transport() == Transport::WebSocket {
                // Pass the baton: a wake-up meant for the dispatcher may have reached us.
                conn.dispatch_wake.notify_one();
                return;
            }
            job = conn.next_job(false);
        }
        let running = job.is_some();
        let wake_at = next_tick.unwrap_or_else(|| Instant::now() + FAR_FUTURE);
        if timer.deadline() != wake_at {
            timer.as_mut().reset(wake_at);
        }
        tokio::select! {
            _ = async { if let Some(j) = job.as_mut() { j.await } }, if running => {
                job = None;
                conn.job_done();
            }
            _ = conn.dispatch_wake.notified(), if !running => {}
            _ = &mut timer => {
                next_tick = if conn.transport() == Transport::WebSocket { None } else { conn.heartbeat_tick() };
            }
        }
    }
}
