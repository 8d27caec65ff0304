//! The HTTP layer: one axum router for the web UI, the tutorial page, the socket.io client
//! bundle, health and readiness, and the engine's Socket.IO endpoint.
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
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use engine::{ServeStats, SocketIo};
use http::{HeaderMap, StatusCode};

use crate::chat::Chat;
use crate::cluster::Cluster;
use crate::store::history::general_conversation;
use assets::Asset;
use origin::OriginPolicy;

/// What the HTTP handlers read.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) io: SocketIo,
    pub(crate) chat: Arc<Chat>,
    /// The accept loop's counters (open and refused connections).
    pub(crate) serve_stats: Arc<ServeStats>,
    /// In a cluster, its Redis (readiness).
    pub(crate) cluster: Option<Arc<Cluster>>,
}

/// Longest a readiness probe waits for the database or Redis to answer.
const READY_TIMEOUT: Duration = Duration::from_millis(1_000);

/// The whole HTTP surface of chinwag.
pub fn router(
    io: &SocketIo,
    chat: Arc<Chat>,
    origins: OriginPolicy,
    serve_stats: Arc<ServeStats>,
    cluster: Option<Arc<Cluster>>,
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
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics::render))
        .with_state(AppState {
            io: io.clone(),
            chat,
            serve_stats,
            cluster,
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

/// Readiness, for a load balancer's health check: whether the database and (in a cluster)
/// Redis answer now, each reported on its own; 200 when all do, else 503. Without Redis a
/// node still stores and delivers locally, but should not get new clients.
async fn readyz(State(state): State<AppState>) -> Response {
    let database = tokio::time::timeout(
        READY_TIMEOUT,
        state.chat.history.last_seq(&general_conversation()),
    )
    .await
    .is_ok_and(|answer| answer.is_ok());
    let redis = match &state.cluster {
        // Redis answers, and the bus is subscribed (it may come back a moment later).
        Some(cluster) => Some(
            tokio::time::timeout(READY_TIMEOUT, cluster.ping())
                .await
                .unwrap_or(false)
                && state.chat.bus_connected() != Some(false),
        ),
        None => None,
    };
    let ready = database && redis != Some(false);
    let word = |up: bool| if up { "ok" } else { "unavailable" };
    let mut body = serde_json::json!({
        "status": if ready { "ready" } else { "unready" },
        "database": word(database),
    });
    if let Some(redis) = redis {
        body["redis"] = serde_json::Value::from(word(redis));
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}
