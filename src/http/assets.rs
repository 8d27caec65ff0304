//! Files served from memory: our page and the official socket.io browser client.
//!
//! Everything is embedded in the binary at build time, so the server never reads files
//! relative to its working directory. `build.rs` installs the client bundle with npm.

use std::sync::LazyLock;

use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};

/// One embedded file with its content type and a validator for conditional requests.
pub struct Asset {
    pub bytes: &'static [u8],
    pub content_type: &'static str,
    etag: LazyLock<HeaderValue>,
}

macro_rules! asset {
    ($path:literal, $content_type:expr) => {
        Asset {
            bytes: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/", $path)),
            content_type: $content_type,
            etag: LazyLock::new(|| {
                etag_of(include_bytes!(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/",
                    $path
                )))
            }),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";
const MAP: &str = "application/json; charset=utf-8";

pub static INDEX_HTML: Asset = asset!("static/index.html", "text/html; charset=utf-8");
pub static APP_JS: Asset = asset!("static/app.js", "text/javascript; charset=utf-8");
pub static STYLE_CSS: Asset = asset!("static/style.css", "text/css; charset=utf-8");

pub static CLIENT_JS: Asset = asset!("web/node_modules/socket.io-client/dist/socket.io.js", JS);
pub static CLIENT_JS_MAP: Asset = asset!(
    "web/node_modules/socket.io-client/dist/socket.io.js.map",
    MAP
);
pub static CLIENT_MIN_JS: Asset = asset!(
    "web/node_modules/socket.io-client/dist/socket.io.min.js",
    JS
);
pub static CLIENT_MIN_JS_MAP: Asset = asset!(
    "web/node_modules/socket.io-client/dist/socket.io.min.js.map",
    MAP
);

/// Our page's policy: scripts, styles and connections only from this server, no framing.
const PAGE_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     connect-src 'self' ws: wss:; img-src 'self' data:; frame-ancestors 'none'; \
     base-uri 'none'; form-action 'none'";

impl Asset {
    /// The file, or `304 Not Modified` when the client already holds this version.
    pub fn respond(&self, request_headers: &HeaderMap) -> Response {
        let etag = &*self.etag;
        let fresh = request_headers
            .get(header::IF_NONE_MATCH)
            .is_some_and(|tags| tags.as_bytes() == etag.as_bytes());
        let mut headers = HeaderMap::new();
        headers.insert(header::ETAG, etag.clone());
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        if fresh {
            return (StatusCode::NOT_MODIFIED, headers).into_response();
        }
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.content_type),
        );
        (headers, self.bytes).into_response()
    }

    /// [`Asset::respond`] plus the headers of our own HTML page.
    pub fn respond_as_page(&self, request_headers: &HeaderMap) -> Response {
        let mut response = self.respond(request_headers);
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(PAGE_POLICY),
        );
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        response
    }
}

/// A strong validator: the length and a 64-bit FNV-1a hash of the content.
fn etag_of(bytes: &[u8]) -> HeaderValue {
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    });
    let tag = format!("\"{:x}-{hash:016x}\"", bytes.len());
    HeaderValue::from_str(&tag).unwrap_or_else(|_| HeaderValue::from_static("\"0\""))
}
