//! The HTTP side: request routing, handshake, errors, CORS. One handler serves the Engine.IO
//! path; it validates the query and hands over to [`polling`] or [`ws`].
//!
//! Errors use socket.io's standard bodies: HTTP 400 with `{"code":N,"message":"..."}`
//! (0 transport unknown, 1 session id unknown, 2 bad handshake method, 3 bad request,
//! 5 unsupported protocol version) and 403 code 4 for a forbidden origin.

mod frame_writer;
pub(crate) mod polling;
pub(crate) mod ws;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::response::Response;
use axum::routing::any;
use http::{HeaderValue, Method, StatusCode, header};

use crate::eio::parse_query;
use crate::serve::Slot;
use crate::server::{ServerInner, SocketIo};
use crate::types::{Handshake, Transport};

pub(crate) fn router(server: Arc<ServerInner>) -> Router {
    let path = server.config.path.clone();
    let trimmed = path.trim_end_matches('/').to_owned();
    let mut router = Router::new().route(&path, any(handle));
    if !trimmed.is_empty() && trimmed != path {
        router = router.route(&trimmed, any(handle));
    }
    router.with_state(server)
}

/// The router lives here, not in `server.rs`, so the server does not import its transport.
impl SocketIo {
    /// An axum router serving the Engine.IO endpoint at `config.path` (polling and WebSocket).
    /// Serve it with [`crate::serve()`] (or `axum::serve` with
    /// `into_make_service_with_connect_info::<SocketAddr>()`) so remote addresses are known.
    pub fn router(&self) -> axum::Router {
        router(self.inner.clone())
    }
}

/// Socket.IO's standard error codes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum EngineError {
    UnknownTransport,
    UnknownSid,
    BadHandshakeMethod,
    BadRequest,
    Forbidden,
    UnsupportedProtocolVersion,
}

impl EngineError {
    pub(crate) fn response(self) -> Response {
        let (status, code, message) = match self {
            Self::UnknownTransport => (StatusCode::BAD_REQUEST, 0, "Transport unknown"),
            Self::UnknownSid => (StatusCode::BAD_REQUEST, 1, "Session ID unknown"),
            Self::BadHandshakeMethod => (StatusCode::BAD_REQUEST, 2, "Bad handshake method"),
            Self::BadRequest => (StatusCode::BAD_REQUEST, 3, "Bad request"),
            Self::Forbidden => (StatusCode::FORBIDDEN, 4, "Forbidden"),
            Self::UnsupportedProtocolVersion => {
                (StatusCode::BAD_REQUEST, 5, "Unsupported protocol version")
            }
        };
        let body = serde_json::json!({ "code": code, "message": message }).to_string();
        plain_response(status, "application/json", body)
    }
}

pub(crate) fn plain_response(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Body>,
) -> Response {
    let mut response = Response::new(body.into());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

async fn handle(State(server): State<Arc<ServerInner>>, req: Request) -> Response {
    let origin = req.headers().get(header::ORIGIN).cloned();
    let allowed = match (&server.config.allowed_origins, &origin) {
        (Some(list), Some(origin)) => origin.to_str().is_ok_and(|o| list.iter().any(|a| a == o)),
        _ => true,
    };
    if !allowed {
        return EngineError::Forbidden.response();
    }
    let mut response = if req.method() == Method::OPTIONS {
        preflight(&req)
    } else {
        route(server, req).await
    };
    if let Some(origin) = origin {
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
    }
    response
}

fn preflight(req: &Request) -> Response {
    let mut response = plain_response(StatusCode::NO_CONTENT, "text/plain", Body::empty());
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, OPTIONS"),
    );
    let requested = req
        .headers()
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .cloned();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        requested.unwrap_or_else(|| HeaderValue::from_static("content-type")),
    );
    response
}

async fn route(server: Arc<ServerInner>, req: Request) -> Response {
    let query = parse_query(req.uri().query().unwrap_or(""));
    let param = |key: &str| {
        query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    let config = &server.config;
    let websocket = match param("transport") {
        Some("polling") if config.allow_polling => false,
        Some("websocket") if config.allow_websocket => true,
        _ => return EngineError::UnknownTransport.response(),
    };

    if let Some(sid) = param("sid") {
        // `heartbeat_tick` first: a session whose pong deadline just passed is closed now,
        // not when its timer task gets to run.
        let Some(conn) = server.session(sid).filter(|c| c.heartbeat_tick().is_some()) else {
            // A session cut off with a farewell answers one last poll with it.
            return match server.session(sid).filter(|c| c.farewell_pending()) {
                Some(conn) if !websocket && req.method() == Method::GET => polling::get(conn).await,
                _ => EngineError::UnknownSid.response(),
            };
        };
        if websocket {
            if !config.allow_upgrades {
                return EngineError::BadRequest.response();
            }
            // A second WebSocket for a session that is already upgrading or upgraded is
            // accepted and closed at once, as the reference server does: the session keeps
            // its transport, and the client sees a WebSocket close rather than a failed
            // handshake.
            if conn.transport() != Transport::Polling {
                return ws::accept(req, ws::Mode::Refuse(conn));
            }
            return ws::accept(req, ws::Mode::Upgrade(conn));
        }
        if conn.transport() == Transport::WebSocket {
            return EngineError::BadRequest.response();
        }
        return match *req.method() {
            Method::GET => polling::get(conn).await,
            Method::POST => polling::post(conn, req).await,
            _ => EngineError::BadRequest.response(),
        };
    }

    let eio = match param("EIO") {
        Some("4") => 4,
        Some("3") if config.allow_eio3 => 3,
        _ => return EngineError::UnsupportedProtocolVersion.response(),
    };
    if req.method() != Method::GET {
        return EngineError::BadHandshakeMethod.response();
    }
    if server
        .shutting_down
        .load(std::sync::atomic::Ordering::SeqCst)
    {
        return plain_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "shutting down",
        );
    }
    let b64 = param("b64").is_some_and(|v| !v.is_empty() && v != "0" && v != "false");
    let remote_addr = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let proxied = remote_addr.is_some_and(|peer| config.trusted_proxies.contains(peer.ip()));
    let client_addr =
        remote_addr.map(|peer| config.trusted_proxies.client_addr(peer.ip(), req.headers()));
    // Behind a trusted proxy the accept loop counted only the proxy's connection: the client
    // takes its place under the per-address cap here, for the session's life.
    let client_slot = match (&server.limits, client_addr) {
        (Some(limits), Some(ip)) if proxied => match limits.admit(Some(ip), Slot::Client) {
            Some(slot) => Some(slot),
            None => return too_many_connections(),
        },
        _ => None,
    };
    let handshake = Handshake {
        remote_addr,
        client_addr,
        headers: owned_headers(req.headers()),
        // Engine.IO's own parameters are transport plumbing; the application gets the rest.
        query: query
            .into_iter()
            .filter(|(k, _)| !matches!(k.as_str(), "EIO" | "transport" | "t" | "b64" | "sid"))
            .collect(),
        eio,
    };
    if websocket {
        let conn = ws::new_conn(server, eio, handshake);
        if let Some(slot) = client_slot {
            conn.hold_client_slot(slot);
        }
        ws::accept(req, ws::Mode::Open(conn))
    } else {
        polling::open(server, eio, handshake, b64, client_slot)
    }
}

/// `503` with a `Retry-After`: a cap on connections is reached.
pub(crate) fn too_many_connections() -> Response {
    let mut response = plain_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "text/plain",
        "too many connections",
    );
    response.headers_mut().insert(
        http::header::RETRY_AFTER,
        http::HeaderValue::from_static("5"),
    );
    response
}

/// A copy of `headers` that owns its bytes. hyper parses header values as slices of its
/// connection read buffer (8 KiB); keeping those would keep that buffer alive for the whole
/// life of the connection.
fn owned_headers(headers: &http::HeaderMap) -> http::HeaderMap {
    // Transport plumbing the application never needs.
    let plumbing = [
        header::SEC_WEBSOCKET_KEY,
        header::SEC_WEBSOCKET_VERSION,
        header::SEC_WEBSOCKET_EXTENSIONS,
        header::UPGRADE,
        header::CONNECTION,
    ];
    let keep = |name: &header::HeaderName| !plumbing.contains(name);
    let mut owned = http::HeaderMap::with_capacity(headers.keys().filter(|n| keep(n)).count());
    for (name, value) in headers.iter().filter(|(name, _)| keep(name)) {
        if let Ok(copy) = HeaderValue::from_bytes(value.as_bytes()) {
            owned.append(name.clone(), copy);
        }
    }
    owned
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_pairs_are_percent_decoded() {
        let q = parse_query("EIO=4&transport=polling&name=J%C3%BCrgen+K&x&bad=%zz&end=%4");
        assert_eq!(q[0], ("EIO".into(), "4".into()));
        assert_eq!(q[2], ("name".into(), "Jürgen K".into()));
        assert_eq!(q[3], ("x".into(), "".into()));
        assert_eq!(q[4], ("bad".into(), "%zz".into()));
        assert_eq!(q[5], ("end".into(), "%4".into()));
    }
}
