//! Files served from memory: the web UI, the tutorial-compatible page and the official
//! socket.io browser client.
//!
//! Everything is embedded in the binary at build time, so the server never reads files
//! relative to its working directory. `build.rs` installs the client bundle with npm and
//! builds the UI (`ui/`) into content-hashed files, each with a gzip copy made at build time.

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

pub static TUTORIAL_HTML: Asset = asset!("static/index.html", "text/html; charset=utf-8");
pub static TUTORIAL_JS: Asset = asset!("static/app.js", "text/javascript; charset=utf-8");
pub static TUTORIAL_CSS: Asset = asset!("static/style.css", "text/css; charset=utf-8");

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
        response.headers_mut().extend(page_headers());
        response
    }
}

/// One file of the web UI as `build.rs` left it: the bytes and their gzip copy.
pub struct UiFile {
    pub name: &'static str,
    pub content_type: &'static str,
    pub bytes: &'static [u8],
    pub gzip: &'static [u8],
}

// `UI_INDEX` (the page) and `UI_ASSETS` (its hashed script, style and icon).
include!(concat!(env!("OUT_DIR"), "/ui_assets.rs"));

/// The UI's hashed asset called `name`, if any.
pub fn ui_asset(name: &str) -> Option<&'static UiFile> {
    UI_ASSETS.iter().find(|file| file.name == name)
}

/// How long a hashed file may be cached: its name changes whenever its content does.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// ETags of the UI page, one per encoding (a strong validator names one representation).
static UI_INDEX_ETAGS: LazyLock<[HeaderValue; 2]> = LazyLock::new(|| {
    let tag = etag_of(UI_INDEX.bytes);
    let text = tag.to_str().unwrap_or("\"0\"").trim_matches('"').to_owned();
    [
        tag,
        HeaderValue::from_str(&format!("\"{text}-gz\"")).unwrap_or_else(|_| etag_of(UI_INDEX.gzip)),
    ]
});

/// The UI's page at `/`: revalidated on every load (`no-cache`), with our page's headers.
pub fn ui_page(request_headers: &HeaderMap) -> Response {
    let gzip = accepts_gzip(request_headers);
    let etag = &UI_INDEX_ETAGS[usize::from(gzip)];
    let fresh = request_headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|tags| tags.as_bytes() == etag.as_bytes());
    let mut headers = page_headers();
    headers.insert(header::ETAG, etag.clone());
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    if fresh {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    UI_INDEX.body(headers, gzip)
}

impl UiFile {
    /// A hashed asset: cached for a year, never revalidated.
    pub fn respond_immutable(&self, request_headers: &HeaderMap) -> Response {
        let mut headers = HeaderMap::new();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(IMMUTABLE));
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
        self.body(headers, accepts_gzip(request_headers))
    }

    fn body(&self, mut headers: HeaderMap, gzip: bool) -> Response {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.content_type),
        );
        if gzip {
            headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            (headers, self.gzip).into_response()
        } else {
            (headers, self.bytes).into_response()
        }
    }
}

/// Whether the request's `Accept-Encoding` allows gzip: named with a non-zero q, or else
/// allowed by `*` (an explicit `gzip;q=0` wins over `*`).
pub fn accepts_gzip(request_headers: &HeaderMap) -> bool {
    let (mut gzip, mut any) = (None, None);
    let items = request_headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','));
    for item in items {
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or("").trim();
        let refused = parts.any(|param| {
            let param = param.trim();
            param
                .strip_prefix("q=")
                .or_else(|| param.strip_prefix("Q="))
                .and_then(|q| q.trim().parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        if coding.eq_ignore_ascii_case("gzip") {
            gzip = Some(!refused);
        } else if coding == "*" {
            any = Some(!refused);
        }
    }
    gzip.or(any).unwrap_or(false)
}

/// The security headers of our HTML pages.
fn page_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PAGE_POLICY),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers
}

/// A strong validator: the length and a 64-bit FNV-1a hash of the content.
fn etag_of(bytes: &[u8]) -> HeaderValue {
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    });
    let tag = format!("\"{:x}-{hash:016x}\"", bytes.len());
    HeaderValue::from_str(&tag).unwrap_or_else(|_| HeaderValue::from_static("\"0\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_str(value).expect("header"),
        );
        headers
    }

    #[test]
    fn gzip_is_chosen_only_when_accepted() {
        assert!(accepts_gzip(&accept("gzip, deflate, br, zstd")));
        assert!(accepts_gzip(&accept("br;q=1.0, GZIP;q=0.5")));
        assert!(accepts_gzip(&accept("*")));
        assert!(!accepts_gzip(&accept("gzip;q=0")));
        assert!(!accepts_gzip(&accept("gzip;q=0, *")));
        assert!(accepts_gzip(&accept("br;q=0, *;q=0.1")));
        assert!(!accepts_gzip(&accept("br, deflate")));
        assert!(!accepts_gzip(&accept("identity")));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[test]
    fn the_page_names_only_embedded_assets() {
        let page = std::str::from_utf8(UI_INDEX.bytes).expect("utf-8 page");
        for name in page.split("/assets/").skip(1) {
            let name = name.split('"').next().unwrap_or("");
            assert!(ui_asset(name).is_some(), "{name} is not embedded");
        }
        assert!(UI_ASSETS.iter().any(|file| file.name.ends_with(".js")));
        assert!(UI_ASSETS.iter().all(|file| !file.gzip.is_empty()));
    }
}
