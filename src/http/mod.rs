//! The HTTP layer: one axum router for the web UI, the tutorial page, the socket.io client
//! bundle, health, and the engine's Socket.IO endpoint.
//!
//! # Layout
//! - this file: [`router`], every route in one place.
//! - [`metrics`]: `GET /metrics` in the Prometheus text format.
//! - [`assets`]: files embedded in the binary (the UI, the tutorial page, the client bundle).
//! - [`origin`]: the browser origin allow-list in front of the Socket.IO endpoint.

pub mod assets;
pub mod metrics;
pub mod origin;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use engine::{ServeStats, SocketIo};
use http::{HeaderMap, StatusCode};

use crate::chat::Chat;
use assets::Asset;
use origin::OriginPolicy;

/// What the HTTP handlers read.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) io: SocketIo,
    pub(crate) chat: Arc<Chat>,
    /// The accept loop's counters (open and refused connections).
    pub(crate) serve_stats: Arc<ServeStats>,
}

/// The whole HTTP surface of chinwag.
pub fn router(
    io: &SocketIo,
    chat: Arc<Chat>,
    origins: OriginPolicy,
    serve_stats: Arc<ServeStats>,
) -> Router {
    let files = Router::new()
        .route("/", get(|h: HeaderMap| async move { assets::ui_page(&h) }))
        .route("/assets/{name}", get(ui_asset))
        .route("/favicon.svg", get(favicon))
        .route(
            "/tutorial",
            get(|h: HeaderMap| async move { assets::TUTORIAL_HTML.respond_as_page(&h) }),
        )
        .route(
            "/tutorial/app.js",
            get(|h: HeaderMap| file(&assets::TUTORIAL_JS, h)),
        )
        .route(
            "/tutorial/style.css",
            get(|h: HeaderMap| file(&assets::TUTORIAL_CSS, h)),
        )
        .route(
            "/socket.io/socket.io.js",
            get(|h: HeaderMap| file(&assets::CLIENT_JS, h)),
        )
        .route(
            "/socket.io/socket.io.js.map",
            get(|h: HeaderMap| file(&assets::CLIENT_JS_MAP, h)),
        )
        .route(
            "/socket.io/socket.io.min.js",
            get(|h: HeaderMap| file(&assets::CLIENT_MIN_JS, h)),
        )
        .route(
            "/socket.io/socket.io.min.js.map",
            get(|h: HeaderMap| file(&assets::CLIENT_MIN_JS_MAP, h)),
        );
    let health = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics::render))
        .with_state(AppState {
            io: io.clone(),
            chat,
            serve_stats,
        });
    let socket_io = io.router().layer(axum::middleware::from_fn_with_state(
        Arc::new(origins),
        origin::check_origin,
    ));
    files.merge(health).merge(socket_io)
}

async fn file(asset: &'static Asset, headers: HeaderMap) -> Response {
    asset.respond(&headers)
}

/// The UI's content-hashed script, style and icon.
async fn ui_asset(Path(name): Path<String>, headers: HeaderMap) -> Response {
    match assets::ui_asset(&name) {
        Some(asset) => asset.respond_immutable(&headers),
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}

/// The icon under a fixed name, for pages that cannot know its hashed one (the tutorial's).
async fn favicon(headers: HeaderMap) -> Response {
    match assets::UI_ASSETS
        .iter()
        .find(|file| file.name.starts_with("icon-"))
    {
        Some(icon) => icon.respond_immutable(&headers),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// Liveness and a glance at the load: Socket.IO connections (those still without a
/// namespace socket also apart), polling sessions and HTTP connections counted against the
/// connection caps, and users present.
async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    axum::Json(serde_json::json!({
        "status": "ok",
        "connections": state.io.connection_count(),
        "unconnected": state.io.unconnected_count(),
        "pollingSessions": state.serve_stats.polling_sessions(),
        "httpConnections": state.serve_stats.open_connections(),
        "users": state.chat.user_count(),
    }))
}
