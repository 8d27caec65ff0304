//! The hardened accept loop: header-read timeout, per-address limit, WebSockets outliving the
//! header timeout, graceful shutdown.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use engine::{EngineConfig, ServeOptions, ServeStats, SocketIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Read until the server closes the connection; what it sent. Fails after [`WAIT`].
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut raw = Vec::new();
    let read = tokio::time::timeout(WAIT, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server kept the connection open");
    raw
}

/// One keep-alive request on `stream`; the status line of the answer.
async fn keep_alive_get(stream: &mut TcpStream) -> String {
    stream
        .write_all(b"GET /socket.io/?EIO=4&transport=nope HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(WAIT, async {
        while !raw.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed before answering");
            raw.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("answer in time");
    let text = String::from_utf8_lossy(&raw);
    text.lines().next().unwrap_or_default().to_owned()
}

async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_slowloris_and_an_idle_connection_are_closed_after_the_header_timeout() {
    let options = ServeOptions {
        header_read_timeout: Duration::from_millis(300),
        ..ServeOptions::default()
    };
    let server = start_serving(fast_config(), options).await;
    let started = Instant::now();
    let mut partial = TcpStream::connect(server.addr).await.unwrap();
    partial
        .write_all(b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: t\r\n")
        .await
        .unwrap();
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    read_until_closed(&mut partial).await;
    read_until_closed(&mut idle).await;
    assert!(started.elapsed() >= Duration::from_millis(250));
    // A complete request in time is served.
    let mut prompt = TcpStream::connect(server.addr).await.unwrap();
    assert!(
        keep_alive_get(&mut prompt)
            .await
            .starts_with("HTTP/1.1 400")
    );
}

#[tokio::test]
async fn the_per_ip_limit_refuses_one_more_and_admits_again_after_one_closes() {
    let stats = Arc::new(ServeStats::default());
    let options = ServeOptions {
        max_connections_per_ip: 3,
        stats: stats.clone(),
        ..ServeOptions::default()
    };
    let server = start_serving(fast_config(), options).await;
    let mut open = Vec::new();
    for _ in 0..3 {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        assert!(
            keep_alive_get(&mut stream)
                .await
                .starts_with("HTTP/1.1 400")
        );
        open.push(stream);
    }
    let mut fourth = TcpStream::connect(server.addr).await.unwrap();
    let refusal = String::from_utf8_lossy(&read_until_closed(&mut fourth).await).into_owned();
    assert!(refusal.starts_with("HTTP/1.1 503"), "{refusal}");
    assert_eq!(stats.refused_ip_limit(), 1);

    drop(open.pop());
    wait_until("the closed connection is uncounted", || {
        stats.open_connections() == 2
    })
    .await;
    let mut again = TcpStream::connect(server.addr).await.unwrap();
    assert!(keep_alive_get(&mut again).await.starts_with("HTTP/1.1 400"));
}

/// Open polling sessions (each on a fresh connection that then closes) until one is refused;
/// returns the sids of those opened and the refusal's status line.
async fn open_sessions_until_refused(
    server: &TestServer,
    stats: &ServeStats,
    most: usize,
) -> (Vec<String>, u16) {
    let mut sids = Vec::new();
    for _ in 0..most {
        let response = get(server, "EIO=4&transport=polling").await;
        wait_until("the handshake's connection is uncounted", || {
            stats.open_connections() == 0
        })
        .await;
        if response.status != 200 {
            return (sids, response.status);
        }
        let open = json_of(&response.text(), 1);
        sids.push(open["sid"].as_str().unwrap().to_owned());
    }
    (sids, 200)
}

#[tokio::test]
async fn unused_polling_sessions_count_against_the_per_ip_limit_and_expire() {
    // Handshakes that never connect a namespace hold no connection between requests; they
    // must still count, or one address opens sessions without bound.
    let stats = Arc::new(ServeStats::default());
    let options = ServeOptions {
        max_connections_per_ip: 4,
        stats: stats.clone(),
        ..ServeOptions::default()
    };
    let config = EngineConfig {
        ping_interval: Duration::from_secs(10),
        ping_timeout: Duration::from_secs(10),
        first_connect_timeout: Duration::from_millis(400),
        connect_timeout: Duration::from_secs(10),
        ..EngineConfig::default()
    };
    let server = start_serving(config, options).await;
    // A handshake needs its own connection's place too: three sessions fit under four.
    let (sids, refusal) = open_sessions_until_refused(&server, &stats, 10).await;
    assert_eq!(sids.len(), 3, "sessions admitted");
    assert_eq!(refusal, 503);
    assert_eq!(stats.polling_sessions(), 3);
    assert!(stats.refused_ip_limit() >= 1);
    assert_eq!(server.io.unconnected_count(), 3);

    // One of them connects its namespace in time and stays; the others sent no CONNECT and
    // are closed after the first-connect timeout, giving their places back.
    let q = format!("EIO=4&transport=polling&sid={}", sids[0]);
    post(&server, &q, "40").await;
    assert!(get(&server, &q).await.text().starts_with("40"));
    wait_until("the unused sessions expire", || {
        stats.polling_sessions() == 1 && server.io.connection_count() == 1
    })
    .await;
    let stale = get(&server, &format!("EIO=4&transport=polling&sid={}", sids[1])).await;
    assert_eq!(stale.status, 400);
    let (again, _) = open_sessions_until_refused(&server, &stats, 10).await;
    assert_eq!(again.len(), 2, "places given back");
}

#[tokio::test]
async fn unused_polling_sessions_count_against_the_total_limit() {
    let stats = Arc::new(ServeStats::default());
    let options = ServeOptions {
        max_connections: 3,
        stats: stats.clone(),
        ..ServeOptions::default()
    };
    let server = start_serving(fast_config(), options).await;
    let (sids, refusal) = open_sessions_until_refused(&server, &stats, 10).await;
    assert_eq!((sids.len(), refusal), (2, 503));
    assert!(stats.refused_total_limit() >= 1);
}

#[tokio::test]
async fn an_upgraded_session_is_counted_by_its_websocket_alone() {
    let stats = Arc::new(ServeStats::default());
    let options = ServeOptions {
        stats: stats.clone(),
        ..ServeOptions::default()
    };
    let server = start_serving(fast_config(), options).await;
    let sid = polling_session(&server).await;
    assert_eq!(stats.polling_sessions(), 1);
    let mut ws = ws_connect(&server, &format!("EIO=4&transport=websocket&sid={sid}")).await;
    ws_send(&mut ws, "2probe").await;
    assert_eq!(ws_text(&mut ws).await, "3probe");
    ws_send(&mut ws, "5").await;
    wait_until("the session's place is given back", || {
        stats.polling_sessions() == 0
    })
    .await;
    assert_eq!(stats.open_connections(), 1);
}

#[tokio::test]
async fn an_upgraded_websocket_outlives_the_header_timeout_and_stays_counted() {
    let stats = Arc::new(ServeStats::default());
    let options = ServeOptions {
        header_read_timeout: Duration::from_millis(100),
        max_connections_per_ip: 1,
        stats: stats.clone(),
        ..ServeOptions::default()
    };
    let server = start_serving(fast_config(), options).await;
    let mut ws = sio_ws(&server).await;
    // Several heartbeats (300 ms apart) go by: far past the 100 ms header timeout.
    for _ in 0..3 {
        let ping = tokio::time::timeout(WAIT, futures_util::StreamExt::next(&mut ws))
            .await
            .expect("ping in time");
        assert!(matches!(ping, Some(Ok(m)) if m.to_text().unwrap_or_default() == "2"));
        ws_send(&mut ws, "3").await;
    }
    ws_send(&mut ws, "42[\"message\",\"still here\"]").await;
    assert_eq!(
        ws_text(&mut ws).await,
        "42[\"message-back\",\"still here\"]"
    );
    // The WebSocket is the address's one allowed connection.
    assert_eq!(stats.open_connections(), 1);
    let mut second = TcpStream::connect(server.addr).await.unwrap();
    assert!(
        read_until_closed(&mut second)
            .await
            .starts_with(b"HTTP/1.1 503")
    );
}

#[tokio::test]
async fn shutdown_stops_accepting_and_returns_once_connections_are_done() {
    let io = SocketIo::builder(EngineConfig::default()).build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(engine::serve(
        listener,
        io.router(),
        ServeOptions::default(),
        async move {
            let _ = stopped.await;
        },
    ));
    let mut idle_keep_alive = TcpStream::connect(addr).await.unwrap();
    assert!(
        keep_alive_get(&mut idle_keep_alive)
            .await
            .starts_with("HTTP/1.1 400")
    );
    stop.send(()).unwrap();
    let finished = tokio::time::timeout(WAIT, serving).await;
    assert!(matches!(finished, Ok(Ok(Ok(())))), "serve did not return");
    read_until_closed(&mut idle_keep_alive).await;
    assert!(TcpStream::connect(addr).await.is_err());
}
