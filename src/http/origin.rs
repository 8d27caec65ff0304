//! Which browser origins may open Socket.IO connections. Requests without an `Origin` header
//! (non-browser clients such as Node or Python socket.io clients) are not browsers and pass.
//!
//! A browser page may connect when its origin is configured (`--allowed-origins`: the
//! public origin(s) the server is reached at, such as `https://chat.example`, and any other
//! sites), or when the browser addressed the server without a DNS name an attacker could
//! control:
//! - a loopback `Host` (`localhost`, `127.0.0.1`, `[::1]`, any port): pages on loopback
//!   origins may connect (a development setup with the page on another local port);
//! - an IP-address `Host`: the page of exactly that origin (`http://192.0.2.7:8080` reaching
//!   `192.0.2.7:8080`).
//!
//! The `Host` header alone never makes an origin "same-origin": a DNS-rebinding page at
//! `https://evil.example`, resolved to this server, sends `Host: evil.example` and
//! `Origin: https://evil.example`, which match each other but nothing configured.

use std::net::IpAddr;

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

    /// Whether any origin was configured (a deployment reached by a host name needs one).
    pub fn is_configured(&self) -> bool {
        !self.extra.is_empty()
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
        let Some(host) = host.map(str::trim) else {
            return false;
        };
        match host_kind(host) {
            HostKind::Loopback => host_kind(authority) == HostKind::Loopback,
            HostKind::Address => host.eq_ignore_ascii_case(authority),
            // A name: only what is configured (the name could be an attacker's, rebound).
            HostKind::Name => false,
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum HostKind {
    /// `localhost`, or a loopback address.
    Loopback,
    /// Another IP address.
    Address,
    /// A DNS name.
    Name,
}

/// What `authority` (`host`, `host:port`, `[v6]:port`) names.
fn host_kind(authority: &str) -> HostKind {
    let host = if let Some(rest) = authority.strip_prefix('[') {
        rest.split_once(']').map_or(rest, |(host, _)| host)
    } else {
        authority
            .split_once(':')
            .map_or(authority, |(host, _)| host)
    };
    if host.eq_ignore_ascii_case("localhost") {
        return HostKind::Loopback;
    }
    match host.parse::<IpAddr>() {
        Ok(ip) if ip.to_canonical().is_loopback() => HostKind::Loopback,
        Ok(_) => HostKind::Address,
        Err(_) => HostKind::Name,
    }
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
            tracing::debug!(?origin, ?host, "refused a connection from a foreign origin");
            return (
                StatusCode::FORBIDDEN,
                "origin not allowed (see --allowed-origins)\n",
            )
                .into_response();
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_name_is_same_origin_only_when_configured() {
        let policy = OriginPolicy::new(&[]);
        assert!(!policy.allows("https://chat.example", Some("chat.example")));
        // DNS rebinding: the attacker's name, resolved to this server.
        assert!(!policy.allows("https://evil.example", Some("evil.example")));
        let policy = OriginPolicy::new(&["https://chat.example".to_owned()]);
        assert!(policy.allows("https://chat.example", Some("chat.example")));
        assert!(!policy.allows("https://evil.example", Some("evil.example")));
        assert!(!policy.allows("https://evil.example", Some("chat.example")));
    }

    #[test]
    fn an_address_host_allows_exactly_its_own_origin() {
        let policy = OriginPolicy::new(&[]);
        assert!(policy.allows("http://192.0.2.7:8080", Some("192.0.2.7:8080")));
        assert!(policy.allows("http://[2001:db8::1]:80", Some("[2001:db8::1]:80")));
        assert!(!policy.allows("http://192.0.2.7:9999", Some("192.0.2.7:8080")));
        assert!(!policy.allows("http://localhost:3000", Some("192.0.2.7:8080")));
    }

    #[test]
    fn localhost_pages_reach_a_loopback_host_only() {
        let policy = OriginPolicy::new(&[]);
        for origin in [
            "http://localhost:3000",
            "http://127.0.0.1:9",
            "http://[::1]:80",
            "http://localhost",
        ] {
            assert!(policy.allows(origin, Some("localhost:8080")), "{origin}");
            assert!(policy.allows(origin, Some("127.0.0.1:8080")), "{origin}");
            assert!(!policy.allows(origin, Some("chat.example")), "{origin}");
        }
        assert!(!policy.allows("https://evil.example", Some("localhost:8080")));
        assert!(!policy.allows("http://localhost.evil.example", Some("localhost")));
        assert!(!policy.allows("null", Some("localhost")));
        assert!(!policy.allows("http://localhost:3000", None));
    }

    #[test]
    fn configured_origins_and_the_wildcard_are_allowed() {
        let policy = OriginPolicy::new(&["https://App.example/".to_owned()]);
        assert!(policy.allows("https://app.example", None));
        assert!(!policy.allows("https://other.example", None));
        assert!(OriginPolicy::new(&["*".to_owned()]).allows("https://other.example", None));
    }
}
