//! Which browser origins may open Socket.IO connections: the server's own origin, localhost,
//! and the configured extras. Requests without an `Origin` header (non-browser clients such
//! as Node or Python socket.io clients) are not browsers and pass.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};
use std::sync::Arc;

/// The allow-list, normalised once at startup.
#[derive(Debug, Clone, Default)]
pub struct OriginPolicy {
    /// `*` was configured: any origin is allowed.
    any: bool,
    /// Configured origins, lowercased, without a trailing slash.
    extra: Vec<String>,
}

impl OriginPolicy {
    pub fn new(configured: &[String]) -> Self {
        let extra: Vec<String> = configured
            .iter()
            .map(|origin| origin.trim().trim_end_matches('/').to_ascii_lowercase())
            .filter(|origin| !origin.is_empty())
            .collect();
        Self {
            any: extra.iter().any(|origin| origin == "*"),
            extra,
        }
    }

    /// Whether a browser page from `origin` may connect to a server reached as `host`
    /// (the request's `Host` header).
    pub fn allows(&self, origin: &str, host: Option<&str>) -> bool {
        let origin = origin.trim().trim_end_matches('/').to_ascii_lowercase();
        if self.any || self.extra.contains(&origin) {
            return true;
        }
        let Some((scheme, authority)) = origin.split_once("://") else {
            return false; // "null" (a file:// page, a sandboxed frame) unless configured
        };
        if !matches!(scheme, "http" | "https") {
            return false;
        }
        let same_origin = host.is_some_and(|host| host.eq_ignore_ascii_case(authority));
        same_origin || is_localhost(authority)
    }
}

/// `localhost`, `127.0.0.1` or `[::1]`, on any port.
fn is_localhost(authority: &str) -> bool {
    let host = if let Some(rest) = authority.strip_prefix('[') {
        rest.split_once(']').map_or(rest, |(host, _)| host)
    } else {
        authority
            .split_once(':')
            .map_or(authority, |(host, _)| host)
    };
    matches!(host, "localhost" | "127.0.0.1" | "::1")
}

/// Middleware for the Socket.IO endpoint: refuse browsers from other origins with 403.
pub async fn check_origin(
    State(policy): State<Arc<OriginPolicy>>,
    request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    if let Some(origin) = headers.get(header::ORIGIN) {
        let host = headers
            .get(header::HOST)
            .and_then(|host| host.to_str().ok());
        let allowed = origin
            .to_str()
            .is_ok_and(|origin| policy.allows(origin, host));
        if !allowed {
            tracing::debug!(?origin, "refused a connection from a foreign origin");
            return (StatusCode::FORBIDDEN, "origin not allowed\n").into_response();
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_servers_own_origin_is_allowed() {
        let policy = OriginPolicy::new(&[]);
        assert!(policy.allows("http://chat.example:8080", Some("chat.example:8080")));
        assert!(policy.allows("https://chat.example", Some("chat.example")));
        assert!(!policy.allows("https://evil.example", Some("chat.example")));
    }

    #[test]
    fn localhost_on_any_port_is_allowed() {
        let policy = OriginPolicy::new(&[]);
        for origin in [
            "http://localhost:3000",
            "http://127.0.0.1:9",
            "http://[::1]:80",
            "http://localhost",
        ] {
            assert!(policy.allows(origin, Some("chat.example")), "{origin}");
        }
        assert!(!policy.allows("http://localhost.evil.example", Some("chat.example")));
        assert!(!policy.allows("null", Some("chat.example")));
    }

    #[test]
    fn configured_origins_and_the_wildcard_are_allowed() {
        let policy = OriginPolicy::new(&["https://App.example/".to_owned()]);
        assert!(policy.allows("https://app.example", None));
        assert!(!policy.allows("https://other.example", None));
        assert!(OriginPolicy::new(&["*".to_owned()]).allows("https://other.example", None));
    }
}
