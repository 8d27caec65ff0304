//! The HTTP surface: our page, the socket.io client bundle, health, origins, shutdown.

mod support;

use std::process::Command;
use std::time::Duration;

use support::{TestApp, http_get, start_binary};

#[tokio::test]
async fn the_tutorial_page_is_ours_renders_text_only_and_loads_no_third_party_script() {
    let app = TestApp::start().await;
    let page = app.get("/tutorial", &[]).await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(
        page.header("content-security-policy")
            .is_some_and(|csp| csp.contains("script-src 'self'"))
    );
    let html = page.text();
    assert!(html.contains(r#"<script src="/socket.io/socket.io.js""#));
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no CDN"
    );
    assert!(!html.contains("prompt("));

    let script = app.get("/tutorial/app.js", &[]).await;
    assert_eq!(script.status, 200);
    let js = script.text();
    assert!(js.contains("textContent"));
    assert!(
        !js.contains("innerHTML") && !js.contains("insertAdjacentHTML") && !js.contains("prompt(")
    );
    assert_eq!(app.get("/tutorial/style.css", &[]).await.status, 200);
}

/// The `src` or `href` values of the page that point at `/assets/`.
fn asset_paths(html: &str) -> Vec<String> {
    html.split("\"/assets/")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .map(|name| format!("/assets/{name}"))
        .collect()
}

#[tokio::test]
async fn the_ui_page_is_revalidated_and_its_hashed_assets_are_immutable_and_gzipped() {
    let app = TestApp::start().await;
    let page = app.get("/", &[]).await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(page.header("cache-control"), Some("no-cache"));
    assert_eq!(page.header("content-encoding"), None, "not asked for gzip");
    assert!(
        page.header("content-security-policy")
            .is_some_and(|csp| csp.contains("script-src 'self'") && !csp.contains("unsafe"))
    );
    let html = page.text();
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no CDN"
    );
    assert!(!html.contains("<script>"), "no inline script");
    let etag = page.header("etag").expect("an etag").to_owned();
    let again = app.get("/", &[("If-None-Match", &etag)]).await;
    assert_eq!(again.status, 304);

    let gzipped = app.get("/", &[("Accept-Encoding", "gzip, br")]).await;
    assert_eq!(gzipped.header("content-encoding"), Some("gzip"));
    assert!(gzipped.body.starts_with(&[0x1f, 0x8b]), "a gzip stream");
    assert!(gzipped.body.len() < page.body.len());

    let paths = asset_paths(&html);
    let script = paths.iter().find(|p| p.ends_with(".js")).expect("a script");
    assert!(paths.iter().any(|p| p.ends_with(".css")), "a stylesheet");
    assert!(paths.iter().any(|p| p.ends_with(".svg")), "an icon");
    for path in &paths {
        let asset = app.get(path, &[]).await;
        assert_eq!(asset.status, 200, "{path}");
        assert_eq!(
            asset.header("cache-control"),
            Some("public, max-age=31536000, immutable"),
            "{path}"
        );
        let zipped = app.get(path, &[("Accept-Encoding", "gzip")]).await;
        assert_eq!(zipped.header("content-encoding"), Some("gzip"), "{path}");
        assert!(zipped.body.starts_with(&[0x1f, 0x8b]), "{path}");
    }
    let js = app.get(script, &[]).await.text();
    assert!(
        !js.contains("innerHTML") && !js.contains("insertAdjacentHTML") && !js.contains("prompt("),
        "text-only rendering"
    );
    assert_eq!(app.get("/assets/app-nosuch.js", &[]).await.status, 404);
    assert_eq!(app.get("/favicon.svg", &[]).await.status, 200);
}

#[tokio::test]
async fn the_official_client_bundle_is_served_with_its_source_maps() {
    let app = TestApp::start().await;
    for path in ["/socket.io/socket.io.js", "/socket.io/socket.io.min.js"] {
        let bundle = app.get(path, &[]).await;
        assert_eq!(bundle.status, 200, "{path}");
        assert_eq!(
            bundle.header("content-type"),
            Some("text/javascript; charset=utf-8")
        );
        let js = bundle.text();
        assert!(
            js.contains("Socket.IO v4.8."),
            "{path} is socket.io-client 4.8.x"
        );
        assert!(js.len() > 10_000);

        let map = app.get(&format!("{path}.map"), &[]).await;
        assert_eq!(map.status, 200, "{path}.map");
        assert!(map.text().starts_with('{'));
    }
}

#[tokio::test]
async fn a_cached_bundle_is_revalidated_with_its_etag() {
    let app = TestApp::start().await;
    let first = app.get("/socket.io/socket.io.js", &[]).await;
    let etag = first.header("etag").expect("an etag").to_owned();
    let again = app
        .get("/socket.io/socket.io.js", &[("If-None-Match", &etag)])
        .await;
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
}

#[tokio::test]
async fn health_reports_ok() {
    let app = TestApp::start().await;
    let health = app.get("/healthz", &[]).await;
    assert_eq!(health.status, 200);
    let body: serde_json::Value = serde_json::from_slice(&health.body).expect("json");
    assert_eq!(body["status"], "ok");
}

#[tokio::test]
async fn browsers_from_foreign_origins_are_refused_and_localhost_is_allowed() {
    let app = TestApp::start().await;
    let handshake = "/socket.io/?EIO=4&transport=polling";
    let foreign = app
        .get(handshake, &[("Origin", "https://evil.example")])
        .await;
    assert_eq!(foreign.status, 403);
    let local = app
        .get(handshake, &[("Origin", "http://localhost:3000")])
        .await;
    assert_eq!(local.status, 200, "{}", local.text());
    assert!(local.text().starts_with("0{"));
    let no_browser = app.get(handshake, &[]).await;
    assert_eq!(no_browser.status, 200);
}

#[tokio::test]
async fn configured_origins_are_allowed() {
    let mut config = support::test_config();
    config.allowed_origins = vec!["https://chat.example".to_owned()];
    let app = TestApp::start_with(config).await;
    let handshake = "/socket.io/?EIO=4&transport=polling";
    let allowed = app
        .get(
            handshake,
            &[("Origin", "https://chat.example"), ("Host", "chat.example")],
        )
        .await;
    assert_eq!(allowed.status, 200);
    // Reached by its public name, the server refuses pages on localhost.
    let local = app
        .get(
            handshake,
            &[
                ("Origin", "http://localhost:3000"),
                ("Host", "chat.example"),
            ],
        )
        .await;
    assert_eq!(local.status, 403);
}

#[tokio::test]
async fn a_dns_rebinding_page_is_refused() {
    // evil.example resolved to this server: Origin and Host agree, and name nothing
    // configured.
    let mut config = support::test_config();
    config.allowed_origins = vec!["https://chat.example".to_owned()];
    let app = TestApp::start_with(config).await;
    for transport in ["polling", "websocket"] {
        let handshake = format!("/socket.io/?EIO=4&transport={transport}");
        let rebound = app
            .get(
                &handshake,
                &[
                    ("Origin", "https://evil.example"),
                    ("Host", "evil.example"),
                    ("Upgrade", "websocket"),
                    ("Connection", "Upgrade"),
                    ("Sec-WebSocket-Version", "13"),
                    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                ],
            )
            .await;
        assert_eq!(rebound.status, 403, "{transport}: {}", rebound.text());
    }
    // Without configuration a host name is not trusted either.
    let app = TestApp::start().await;
    let rebound = app
        .get(
            "/socket.io/?EIO=4&transport=polling",
            &[
                ("Origin", "http://evil.example:8080"),
                ("Host", "evil.example:8080"),
            ],
        )
        .await;
    assert_eq!(rebound.status, 403);
}

#[tokio::test]
async fn shutdown_closes_open_sockets_and_returns() {
    let app = TestApp::start().await;
    let mut ann = app.client().await;
    ann.join_as("ann").await;
    let addr = app.addr;
    app.stop().await.expect("a clean shutdown");
    ann.expect_closed().await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}

#[tokio::test]
async fn the_binary_prints_its_port_serves_and_exits_zero_on_sigterm() {
    let (mut child, addr) = start_binary(&["--no-history"]).await;
    assert_eq!(http_get(addr, "/healthz", &[]).await.status, 200);

    let signalled = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(signalled.is_ok_and(|status| status.success()));
    let exited = tokio::task::spawn_blocking(move || child.wait());
    let status = tokio::time::timeout(Duration::from_secs(15), exited)
        .await
        .expect("chinwag exits within 15 s of SIGTERM")
        .expect("join")
        .expect("wait for chinwag");
    assert!(status.success(), "exit status {status}");
}

#[tokio::test]
async fn a_half_sent_request_is_timed_out_and_connections_per_address_are_limited() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut config = support::test_config();
    config.header_read_timeout_ms = 300;
    config.max_connections_per_ip = 2;
    let app = TestApp::start_with(config).await;

    // A request head that never ends is closed by the server.
    let mut slow = tokio::net::TcpStream::connect(app.addr)
        .await
        .expect("connect");
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("send half a head");
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut rest)).await;
    assert!(
        closed.is_ok(),
        "the half-sent request was still open after 5 s"
    );

    // Two idle connections from this address use up its allowance: the third is refused.
    let _idle = [
        tokio::net::TcpStream::connect(app.addr)
            .await
            .expect("connect"),
        tokio::net::TcpStream::connect(app.addr)
            .await
            .expect("connect"),
    ];
    // It gets a 503 and is closed (the close may reset the connection before the 503 is
    // read); either way it is not served.
    let mut refused = tokio::net::TcpStream::connect(app.addr)
        .await
        .expect("connect");
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = refused
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await;
        refused.read_to_end(&mut answer).await
    })
    .await
    .expect("the refused connection is closed at once");
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        read.is_err() || answer.starts_with("HTTP/1.1 503"),
        "{read:?} {answer}"
    );
}

#[tokio::test]
async fn a_history_that_cannot_be_opened_exits_non_zero_without_claiming_to_listen() {
    // A directory is not a database file.
    let directory = std::env::temp_dir().join(format!("chinwag-not-a-db-{}", std::process::id()));
    std::fs::create_dir_all(&directory).expect("a directory");
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_chinwag"))
            .args(["--port", "0", "--host", "127.0.0.1", "--db"])
            .arg(&directory)
            .env_remove("PORT")
            .env_remove("HOST")
            .output()
    });
    let output = tokio::time::timeout(Duration::from_secs(15), output)
        .await
        .expect("chinwag exits in time")
        .expect("join")
        .expect("run chinwag");
    assert!(!output.status.success());
    assert!(
        !String::from_utf8_lossy(&output.stdout).contains("listening on"),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
}

#[tokio::test]
async fn metrics_count_connections_users_and_stored_messages_for_prometheus() {
    let app = TestApp::start().await;
    let (mut ann, _) =
        support::Client::connect_with_auth(app.addr, serde_json::json!({"name": "ann"}))
            .await
            .expect("ann");
    for text in ["one", "two", "three"] {
        let ack = ann
            .request(
                "message:send",
                serde_json::json!({"room": "general", "text": text, "clientId": text}),
            )
            .await;
        assert_eq!(ack["ok"], serde_json::json!(true), "{ack}");
    }
    // A resend is not stored again, nor counted.
    ann.request(
        "message:send",
        serde_json::json!({"room": "general", "text": "one", "clientId": "one"}),
    )
    .await;

    let metrics = app.get("/metrics", &[]).await;
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .header("content-type")
            .is_some_and(|kind| kind.starts_with("text/plain; version=0.0.4")),
        "{:?}",
        metrics.header("content-type")
    );
    let text = metrics.text();
    for line in [
        "chinwag_socketio_connections 1",
        "chinwag_users_present 1",
        "chinwag_messages_stored_total 3",
        "# TYPE chinwag_store_batch_size histogram",
        "# TYPE chinwag_store_commit_seconds histogram",
        "chinwag_http_connections_refused_total{limit=\"per_ip\"} 0",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
    }
    // Every write so far (the session, the user, the messages) went through a batch.
    let batches: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("chinwag_store_batch_size_count "))
        .and_then(|count| count.parse().ok())
        .expect("a batch count");
    assert!(batches >= 1, "{text}");
}
