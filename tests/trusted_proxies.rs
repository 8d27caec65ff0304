//! `--trusted-proxies`: behind a trusted load balancer the caps per client address count the
//! address it forwards for (right-most untrusted `X-Forwarded-For` entry); from any other peer
//! the header is ignored. The server listens on 127.0.0.1 and trusts that address only; the
//! untrusted peer connects from 127.0.0.2 (also loopback).

mod support;

use std::net::{IpAddr, SocketAddr};

use serde_json::json;
use support::{Client, TestApp, test_config};

const PROXY: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1));
const STRANGER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

async fn app(configure: impl FnOnce(&mut chinwag::Config)) -> TestApp {
    let mut config = test_config();
    config.trusted_proxies = "127.0.0.1".parse().expect("a proxy list");
    configure(&mut config);
    TestApp::start_with(config).await
}

async fn open(addr: SocketAddr, from: IpAddr, forwarded: &str) -> Result<Client, u16> {
    Client::open_from(addr, from, &[("X-Forwarded-For", forwarded)]).await
}

#[tokio::test]
async fn connections_through_a_trusted_proxy_are_capped_per_forwarded_client() {
    let app = app(|config| config.max_connections_per_ip = 2).await;
    let mut kept = Vec::new();
    for _ in 0..2 {
        kept.push(
            open(app.addr, PROXY, "198.51.100.7, 203.0.113.1")
                .await
                .expect("within the cap"),
        );
    }
    assert_eq!(
        open(app.addr, PROXY, "203.0.113.1").await.err(),
        Some(503),
        "a third from the same client"
    );
    // Another client through the same proxy: the proxy's own connections are not capped.
    for _ in 0..2 {
        kept.push(
            open(app.addr, PROXY, "203.0.113.2")
                .await
                .expect("another client"),
        );
    }
    // A spoofed left part does not make a new client: the right-most untrusted entry counts.
    assert_eq!(
        open(app.addr, PROXY, "192.0.2.99, 203.0.113.2").await.err(),
        Some(503)
    );
    // A malformed header counts as the proxy itself (which has no connection counted yet).
    kept.push(
        open(app.addr, PROXY, "not an address")
            .await
            .expect("the proxy's own"),
    );
    drop(kept);
    app.stop().await.expect("stop");
}

#[tokio::test]
async fn an_untrusted_peer_is_capped_as_itself_whatever_it_forwards() {
    let app = app(|config| config.max_connections_per_ip = 2).await;
    let first = open(app.addr, STRANGER, "203.0.113.1")
        .await
        .expect("first");
    let second = open(app.addr, STRANGER, "203.0.113.2")
        .await
        .expect("second");
    assert_eq!(
        open(app.addr, STRANGER, "203.0.113.3").await.err(),
        Some(503),
        "X-Forwarded-For from an untrusted peer changes nothing"
    );
    drop((first, second));
    app.stop().await.expect("stop");
}

/// Connect a new user called `name` through `from` forwarding for `forwarded`; the error
/// code when refused.
async fn new_user(
    addr: SocketAddr,
    from: IpAddr,
    forwarded: &str,
    name: &str,
) -> Result<Client, String> {
    let mut client = open(addr, from, forwarded).await.expect("a connection");
    client
        .send_raw(&format!("40{}", json!({"name": name})))
        .await;
    let reply = client.next_packet().await;
    match reply.strip_prefix("44") {
        Some(error) => {
            let error: serde_json::Value = serde_json::from_str(error).expect("JSON");
            Err(error["data"]["code"]
                .as_str()
                .unwrap_or_default()
                .to_owned())
        }
        None => Ok(client),
    }
}

#[tokio::test]
async fn new_users_are_counted_per_forwarded_client_behind_a_trusted_proxy() {
    let app = app(|config| config.max_new_users_per_ip = 1).await;
    let ann = new_user(app.addr, PROXY, "203.0.113.1", "ann")
        .await
        .expect("ann");
    let refused = new_user(app.addr, PROXY, "203.0.113.1", "bob").await.err();
    assert_eq!(
        refused.as_deref(),
        Some("rate_limited"),
        "a second user of one client"
    );
    let cy = new_user(app.addr, PROXY, "203.0.113.2", "cy")
        .await
        .expect("another client");
    // From an untrusted peer the header is ignored: both count as 127.0.0.2.
    let dee = new_user(app.addr, STRANGER, "203.0.113.3", "dee")
        .await
        .expect("dee");
    let refused = new_user(app.addr, STRANGER, "203.0.113.4", "eve")
        .await
        .err();
    assert_eq!(refused.as_deref(), Some("rate_limited"));
    drop((ann, cy, dee));
    app.stop().await.expect("stop");
}

#[tokio::test]
async fn polling_sessions_through_a_trusted_proxy_are_capped_per_forwarded_client() {
    let app = app(|config| config.max_connections_per_ip = 1).await;
    let handshake = "/socket.io/?EIO=4&transport=polling";
    let poll = |client: &'static str| {
        let addr = app.addr;
        async move {
            support::http_get(addr, handshake, &[("X-Forwarded-For", client)])
                .await
                .status
        }
    };
    assert_eq!(poll("203.0.113.1").await, 200);
    assert_eq!(
        poll("203.0.113.1").await,
        503,
        "its session holds its one slot"
    );
    assert_eq!(poll("203.0.113.2").await, 200, "another client");
    app.stop().await.expect("stop");
}
