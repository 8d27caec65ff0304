//! Engine.IO v4 + Socket.IO v5 on the wire: handshake, polling, WebSocket, upgrade,
//! heartbeat, namespaces, events, acks, binary, malformed input.

mod common;

use std::time::Duration;

use common::*;
use engine::{DisconnectReason, EngineConfig};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn polling_handshake_returns_the_open_packet() {
    let server = start(fast_config()).await;
    let response = get(&server, "EIO=4&transport=polling").await;
    assert_eq!(response.status, 200);
    let text = response.text();
    assert!(text.starts_with('0'));
    let open = json_of(&text, 1);
    let mut keys: Vec<&str> = open
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "maxPayload",
            "pingInterval",
            "pingTimeout",
            "sid",
            "upgrades"
        ]
    );
    assert_eq!(open["upgrades"], json!(["websocket"]));
    assert_eq!(open["pingInterval"], 300);
    assert_eq!(open["pingTimeout"], 200);
    assert_eq!(open["maxPayload"], 1_000_000);
    assert_eq!(open["sid"].as_str().unwrap().len(), 20);
}

#[tokio::test]
async fn bad_requests_get_400_with_socket_io_error_bodies() {
    let server = start(fast_config()).await;
    let cases = [
        ("GET", "transport=polling", 5),
        ("GET", "EIO=abc&transport=polling", 5),
        ("GET", "EIO=4", 0),
        ("GET", "EIO=4&transport=abc", 0),
        ("POST", "EIO=4&transport=polling", 2),
        ("PUT", "EIO=4&transport=polling", 2),
        ("GET", "EIO=4&transport=polling&sid=nope", 1),
        ("GET", "EIO=4&transport=websocket", 3),
    ];
    for (method, query, code) in cases {
        let response = http(server.addr, method, &server.url(query), b"", &[]).await;
        assert_eq!(response.status, 400, "{method} {query}");
        assert_eq!(response.json()["code"], code, "{method} {query}");
        assert!(response.json()["message"].is_string());
    }
}

#[tokio::test]
async fn a_disallowed_origin_is_forbidden_and_an_allowed_one_gets_cors_headers() {
    let config = EngineConfig {
        allowed_origins: Some(vec!["http://good.example".into()]),
        ..fast_config()
    };
    let server = start(config).await;
    let bad = http(
        server.addr,
        "GET",
        &server.url("EIO=4&transport=polling"),
        b"",
        &[("Origin", "http://evil.example")],
    )
    .await;
    assert_eq!(bad.status, 403);
    assert_eq!(bad.json()["code"], 4);
    let good = http(
        server.addr,
        "GET",
        &server.url("EIO=4&transport=polling"),
        b"",
        &[("Origin", "http://good.example")],
    )
    .await;
    assert_eq!(good.status, 200);
    assert_eq!(
        good.header("access-control-allow-origin"),
        Some("http://good.example")
    );
    assert_eq!(
        good.header("access-control-allow-credentials"),
        Some("true")
    );
}

#[tokio::test]
async fn polling_carries_socket_io_connect_events_and_acks() {
    let mut server = start(fast_config()).await;
    let sid = polling_session(&server).await;
    let q = format!("EIO=4&transport=polling&sid={sid}");
    let response = post(&server, &q, "40{\"token\":\"123\"}").await;
    assert_eq!((response.status, response.text().as_str()), (200, "ok"));
    assert_eq!(
        server.next_seen().await,
        Seen::Connect("/".into(), json!({"token":"123"}))
    );
    let poll = get(&server, &q).await.text();
    let packets: Vec<&str> = poll.split('\x1e').collect();
    assert!(packets[0].starts_with("40{\"sid\":"), "{poll:?}");
    assert_eq!(packets[1], "42[\"auth\",{\"token\":\"123\"}]");

    post(
        &server,
        &q,
        "42[\"message\",1,\"2\"]\x1e421[\"message-with-ack\",{\"a\":[true]}]",
    )
    .await;
    let poll = get(&server, &q).await.text();
    let mut poll = poll.clone();
    if !poll.contains("431") {
        poll.push('\x1e');
        poll.push_str(&get(&server, &q).await.text());
    }
    assert!(
        poll.starts_with("42[\"message-back\",1,\"2\"]\x1e431[{\"a\":[true]}]"),
        "{poll:?}"
    );
}

#[tokio::test]
async fn polling_binary_packets_travel_as_base64() {
    let server = start(fast_config()).await;
    let sid = polling_session(&server).await;
    let q = format!("EIO=4&transport=polling&sid={sid}");
    post(&server, &q, "40").await;
    let _connect = get(&server, &q).await;
    post(
        &server,
        &q,
        "451-[\"message\",{\"_placeholder\":true,\"num\":0}]\x1ebAQID",
    )
    .await;
    let poll = get(&server, &q).await.text();
    assert_eq!(
        poll,
        "451-[\"message-back\",{\"_placeholder\":true,\"num\":0}]\x1ebAQID"
    );
}

#[tokio::test]
async fn an_invalid_polling_packet_closes_the_session() {
    let server = start(fast_config()).await;
    let sid = polling_session(&server).await;
    let q = format!("EIO=4&transport=polling&sid={sid}");
    assert_eq!(post(&server, &q, "abc").await.status, 400);
    assert_eq!(get(&server, &q).await.status, 400);
}

#[tokio::test]
async fn a_duplicate_poll_closes_the_session_and_the_first_poll_gets_close() {
    let server = start(EngineConfig {
        ping_interval: Duration::from_secs(10),
        ..fast_config()
    })
    .await;
    let sid = polling_session(&server).await;
    let q = format!("EIO=4&transport=polling&sid={sid}");
    let (a, b) = tokio::join!(get(&server, &q), get(&server, &q));
    let (mut statuses, texts) = ([a.status, b.status], [a.text(), b.text()]);
    statuses.sort();
    assert_eq!(statuses, [200, 400]);
    assert!(texts.contains(&"1".to_owned()), "{texts:?}");
    assert_eq!(get(&server, &q).await.status, 400);
}

#[tokio::test]
async fn a_client_close_answers_the_pending_poll_with_noop() {
    let server = start(EngineConfig {
        ping_interval: Duration::from_secs(5),
        ..fast_config()
    })
    .await;
    let sid = polling_session(&server).await;
    let q = format!("EIO=4&transport=polling&sid={sid}");
    let pending = tokio::spawn({
        let (addr, url) = (server.addr, server.url(&q));
        async move { http(addr, "GET", &url, b"", &[]).await }
    });
    tokio::task::yield_now().await;
    // Give the poll time to register: post the close only once a poll is pending is not
    // observable from outside, so a close before the poll registers answers it the same way.
    post(&server, &q, "1").await;
    let pending = pending.await.unwrap();
    // If the poll registered before the close it gets noop; otherwise the session is gone.
    assert!(
        pending.status == 400 || pending.text() == "6",
        "{pending:?}"
    );
    assert_eq!(get(&server, &q).await.status, 400);
}

#[tokio::test]
async fn a_cancelled_poll_closes_the_session() {
    let mut server = start(EngineConfig {
        ping_interval: Duration::from_secs(5),
        ..fast_config()
    })
    .await;
    let sid = polling_session(&server).await;
    let q = format!("EIO=4&transport=polling&sid={sid}");
    post(&server, &q, "40").await;
    let _ = get(&server, &q).await; // CONNECT reply + auth
    assert!(matches!(server.next_seen().await, Seen::Connect(..)));
    {
        use tokio::io::AsyncWriteExt;
        let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        let request = format!("GET {} HTTP/1.1\r\nHost: x\r\n\r\n", server.url(&q));
        stream.write_all(request.as_bytes()).await.unwrap();
        // Dropping the stream aborts the poll.
    }
    assert_eq!(
        server.next_disconnect().await,
        DisconnectReason::TransportClose
    );
    assert_eq!(get(&server, &q).await.status, 400);
}

#[tokio::test]
async fn polling_heartbeat_pings_and_times_out() {
    let server = start(fast_config()).await;
    let sid = polling_session(&server).await;
    let q = format!("EIO=4&transport=polling&sid={sid}");
    for _ in 0..3 {
        let poll = get(&server, &q).await;
        assert_eq!((poll.status, poll.text().as_str()), (200, "2"));
        assert_eq!(post(&server, &q, "3").await.status, 200);
    }
    // No pong: the server closes the session after pingTimeout.
    let poll = get(&server, &q).await;
    assert_eq!(poll.text(), "2");
    let closed = get(&server, &q).await;
    assert!(closed.status == 400 || closed.text() == "1", "{closed:?}");
}

#[tokio::test]
async fn websocket_handshake_has_no_upgrades_and_pings() {
    let server = start(fast_config()).await;
    let mut ws = ws_connect(&server, "EIO=4&transport=websocket").await;
    let open = ws_text(&mut ws).await;
    let open = json_of(&open, 1);
    assert_eq!(open["upgrades"], json!([]));
    assert_eq!(open["maxPayload"], 1_000_000);
    for _ in 0..3 {
        let message = tokio::time::timeout(WAIT, futures_util::StreamExt::next(&mut ws))
            .await
            .unwrap();
        assert_eq!(message.unwrap().unwrap(), Message::text("2"));
        ws_send(&mut ws, "3").await;
    }
    // Without pongs the server closes the connection.
    ws_closed(&mut ws).await;
}

#[tokio::test]
async fn socket_io_connects_to_namespaces_and_refuses_unknown_ones() {
    let server = start(fast_config()).await;
    let mut ws = ws_connect(&server, "EIO=4&transport=websocket").await;
    ws_text(&mut ws).await;
    ws_send(&mut ws, "40/custom,{\"token\":\"abc\"}").await;
    let connect = ws_text(&mut ws).await;
    assert!(connect.starts_with("40/custom,"));
    let sid = json_of(&connect, 10);
    assert!(sid["sid"].is_string());
    assert_eq!(sid.as_object().unwrap().len(), 1);
    assert_eq!(
        ws_text(&mut ws).await,
        "42/custom,[\"auth\",{\"token\":\"abc\"}]"
    );
    ws_send(&mut ws, "40/random").await;
    assert_eq!(
        ws_text(&mut ws).await,
        "44/random,{\"message\":\"Invalid namespace\"}"
    );
    ws_send(&mut ws, "40{\"refuse\":\"go away\"}").await;
    assert_eq!(ws_text(&mut ws).await, "44{\"message\":\"go away\"}");
}

#[tokio::test]
async fn disconnecting_a_namespace_keeps_the_connection() {
    let mut server = start(fast_config()).await;
    let mut ws = sio_ws(&server).await;
    ws_send(&mut ws, "40/custom").await;
    ws_text(&mut ws).await;
    ws_text(&mut ws).await;
    ws_send(&mut ws, "41/custom").await;
    ws_send(&mut ws, "42[\"message\",\"message to main namespace\"]").await;
    assert_eq!(
        ws_text(&mut ws).await,
        "42[\"message-back\",\"message to main namespace\"]"
    );
    let mut reasons = Vec::new();
    while reasons.is_empty() {
        if let Seen::Disconnect(nsp, reason) = server.next_seen().await {
            reasons.push((nsp, reason));
        }
    }
    assert_eq!(
        reasons,
        [(
            "/custom".to_owned(),
            DisconnectReason::ClientNamespaceDisconnect
        )]
    );
}

#[tokio::test]
async fn events_acks_and_binary_attachments_round_trip_over_websocket() {
    let server = start(fast_config()).await;
    let mut ws = sio_ws(&server).await;
    ws_send(&mut ws, "42[\"message\",1,\"2\",{\"3\":[true]}]").await;
    assert_eq!(
        ws_text(&mut ws).await,
        "42[\"message-back\",1,\"2\",{\"3\":[true]}]"
    );
    ws_send(
        &mut ws,
        "42456[\"message-with-ack\",1,\"2\",{\"3\":[false]}]",
    )
    .await;
    assert_eq!(ws_text(&mut ws).await, "43456[1,\"2\",{\"3\":[false]}]");

    ws_send(
        &mut ws,
        "452-[\"message\",{\"_placeholder\":true,\"num\":0},{\"_placeholder\":true,\"num\":1}]",
    )
    .await;
    ws.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    ws.send(Message::binary(vec![4, 5, 6])).await.unwrap();
    assert_eq!(
        ws_text(&mut ws).await,
        "452-[\"message-back\",{\"_placeholder\":true,\"num\":0},{\"_placeholder\":true,\"num\":1}]"
    );
    assert_eq!(ws_next(&mut ws).await, Message::binary(vec![1, 2, 3]));
    assert_eq!(ws_next(&mut ws).await, Message::binary(vec![4, 5, 6]));

    ws_send(&mut ws, "452-789[\"message-with-ack\",{\"_placeholder\":true,\"num\":0},{\"_placeholder\":true,\"num\":1}]").await;
    ws.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    ws.send(Message::binary(vec![4, 5, 6])).await.unwrap();
    assert_eq!(
        ws_text(&mut ws).await,
        "462-789[{\"_placeholder\":true,\"num\":0},{\"_placeholder\":true,\"num\":1}]"
    );
    assert_eq!(ws_next(&mut ws).await, Message::binary(vec![1, 2, 3]));
    assert_eq!(ws_next(&mut ws).await, Message::binary(vec![4, 5, 6]));
}

#[tokio::test]
async fn server_side_acks_reach_the_handler() {
    let server = start(fast_config()).await;
    let mut ws = sio_ws(&server).await;
    ws_send(&mut ws, "42[\"ask\",\"why\"]").await;
    let question = ws_text(&mut ws).await;
    assert_eq!(question, "420[\"question\",\"why\"]");
    ws_send(&mut ws, "430[\"because\"]").await;
    assert_eq!(
        ws_text(&mut ws).await,
        "42[\"answer\",\"Ok([String(\\\"because\\\")])\"]"
    );
}

#[tokio::test]
async fn malformed_socket_io_packets_close_the_connection() {
    let server = start(fast_config()).await;
    for bad in [
        "4abc",
        "42{}",
        "42abc[\"message-with-ack\",1]",
        "abc",
        "43[1]",
    ] {
        let mut ws = sio_ws(&server).await;
        ws_send(&mut ws, bad).await;
        ws_closed(&mut ws).await;
    }
    // Before any CONNECT, too.
    let mut ws = ws_connect(&server, "EIO=4&transport=websocket").await;
    ws_text(&mut ws).await;
    ws_send(&mut ws, "4abc").await;
    ws_closed(&mut ws).await;
}

#[tokio::test]
async fn a_connection_without_connect_is_closed_after_connect_timeout() {
    let config = EngineConfig {
        connect_timeout: Duration::from_millis(200),
        ping_interval: Duration::from_secs(10),
        ..fast_config()
    };
    let server = start(config).await;
    let mut ws = ws_connect(&server, "EIO=4&transport=websocket").await;
    ws_text(&mut ws).await;
    ws_closed(&mut ws).await;
}

#[tokio::test]
async fn upgrade_from_polling_to_websocket_loses_nothing() {
    let mut server = start(EngineConfig {
        ping_interval: Duration::from_secs(10),
        ..fast_config()
    })
    .await;
    let sid = polling_session(&server).await;
    let q = format!("EIO=4&transport=polling&sid={sid}");
    post(&server, &q, "40").await;
    assert!(get(&server, &q).await.text().starts_with("40"));
    assert!(matches!(server.next_seen().await, Seen::Connect(..)));

    let mut ws = ws_connect(&server, &format!("EIO=4&transport=websocket&sid={sid}")).await;
    ws_send(&mut ws, "2probe").await;
    assert_eq!(ws_text(&mut ws).await, "3probe");
    let poll = get(&server, &q).await;
    assert_eq!((poll.status, poll.text().as_str()), (200, "6"));
    // A message queued during the upgrade arrives on the WebSocket after `5`.
    server
        .io
        .of("/")
        .unwrap()
        .emit("during-upgrade", &[1])
        .unwrap();
    ws_send(&mut ws, "5").await;
    assert_eq!(ws_text(&mut ws).await, "42[\"during-upgrade\",1]");
    ws_send(&mut ws, "42[\"message\",\"hi\"]").await;
    assert_eq!(ws_text(&mut ws).await, "42[\"message-back\",\"hi\"]");
    assert_eq!(get(&server, &q).await.status, 400);
    // A second WebSocket for the same session is accepted and closed at once, as the
    // reference server does (official suite: "should ignore WebSocket connection with same
    // sid after upgrade"); the first one stays up.
    let mut second = ws_connect(&server, &format!("EIO=4&transport=websocket&sid={sid}")).await;
    assert_eq!(ws_closed(&mut second).await, Some(1008));
    ws_send(&mut ws, "42[\"message\",\"still here\"]").await;
    assert_eq!(
        ws_text(&mut ws).await,
        "42[\"message-back\",\"still here\"]"
    );
}

#[tokio::test]
async fn a_second_websocket_during_an_upgrade_is_closed_and_the_upgrade_completes() {
    let server = start(EngineConfig {
        ping_interval: Duration::from_secs(10),
        ..fast_config()
    })
    .await;
    let sid = polling_session(&server).await;
    let q = format!("EIO=4&transport=polling&sid={sid}");
    post(&server, &q, "40").await;
    assert!(get(&server, &q).await.text().starts_with("40"));
    let upgrade = format!("EIO=4&transport=websocket&sid={sid}");
    let mut ws = ws_connect(&server, &upgrade).await;
    ws_send(&mut ws, "2probe").await;
    assert_eq!(ws_text(&mut ws).await, "3probe");

    let mut second = ws_connect(&server, &upgrade).await;
    assert_eq!(ws_closed(&mut second).await, Some(1008));

    ws_send(&mut ws, "5").await;
    ws_send(&mut ws, "42[\"message\",\"hi\"]").await;
    assert_eq!(ws_text(&mut ws).await, "42[\"message-back\",\"hi\"]");
    // An unknown session is still refused at the handshake.
    let url = format!(
        "ws://{}{}",
        server.addr,
        server.url("EIO=4&transport=websocket&sid=nope")
    );
    assert!(tokio_tungstenite::connect_async(url).await.is_err());
}

#[tokio::test]
async fn oversized_payloads_close_the_connection() {
    let config = EngineConfig {
        max_payload: 1000,
        ..fast_config()
    };
    let server = start(config).await;
    let sid = polling_session(&server).await;
    let q = format!("EIO=4&transport=polling&sid={sid}");
    let big = format!("42[\"message\",\"{}\"]", "x".repeat(2000));
    assert_eq!(post(&server, &q, &big).await.status, 413);
    assert_eq!(get(&server, &q).await.status, 400);

    let mut ws = sio_ws(&server).await;
    ws_send(&mut ws, &big).await;
    assert_eq!(ws_closed(&mut ws).await, Some(1009));
}

#[tokio::test]
async fn one_large_frame_over_the_limit_gets_a_readable_1009() {
    // The server refuses the frame by its header while the client is still writing it; a
    // client that reads only once its write is done must still find the close frame, not a
    // reset (closing a socket with unread data sends one, and the close frame is lost).
    let config = EngineConfig {
        max_payload: 1000,
        ..fast_config()
    };
    let server = start(config).await;
    for size in [64 * 1024, 8 * 1024 * 1024] {
        let mut ws = sio_ws(&server).await;
        let big = format!("42[\"message\",\"{}\"]", "x".repeat(size));
        let sent = tokio::time::timeout(WAIT, ws.send(Message::text(big))).await;
        assert!(
            matches!(sent, Ok(Ok(()))),
            "{size} bytes: the write did not complete: {sent:?}"
        );
        assert_eq!(ws_closed(&mut ws).await, Some(1009), "{size} bytes");
    }
}

/// A server whose outbox holds 64 KiB, with heartbeats too slow to interfere.
fn small_outbox_config() -> EngineConfig {
    EngineConfig {
        max_outbound_bytes: 64 * 1024,
        ping_interval: Duration::from_secs(10),
        ping_timeout: Duration::from_secs(10),
        ..fast_config()
    }
}

#[tokio::test]
async fn a_slow_reader_on_websocket_reads_why_it_was_cut_off() {
    let mut server = start(small_outbox_config()).await;
    let mut ws = sio_ws(&server).await;
    assert!(matches!(server.next_seen().await, Seen::Connect(..)));
    // 25 MB asked for and not read: the socket buffers fill, the outbox overflows.
    ws_send(&mut ws, r#"42["flood",400,65536]"#).await;
    assert_eq!(
        server.next_disconnect().await,
        DisconnectReason::TransportError
    );
    // Reading now: what was on its way, then a close frame with a code and a reason.
    let close = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(_)) => continue,
                other => panic!("no close frame: {other:?}"),
            }
        }
    })
    .await
    .expect("close in time")
    .expect("a close frame with a code");
    assert_eq!(u16::from(close.code), 1008);
    assert!(
        close.reason.as_str().starts_with("slow reader"),
        "{:?}",
        close.reason
    );
}

#[tokio::test]
async fn a_slow_reader_on_polling_gets_a_final_close_packet_saying_why() {
    let mut server = start(small_outbox_config()).await;
    let sid = polling_session(&server).await;
    let q = format!("EIO=4&transport=polling&sid={sid}");
    post(&server, &q, "40").await;
    assert!(get(&server, &q).await.text().starts_with("40"));
    assert!(matches!(server.next_seen().await, Seen::Connect(..)));
    // Far more than the outbox holds, and no poll to take it.
    post(&server, &q, r#"42["flood",40,65536]"#).await;
    assert_eq!(
        server.next_disconnect().await,
        DisconnectReason::TransportError
    );
    let last = get(&server, &q).await;
    assert_eq!(last.status, 200);
    assert!(last.text().starts_with("1slow reader"), "{}", last.text());
    assert_eq!(get(&server, &q).await.status, 400);
}

#[tokio::test]
async fn invalid_utf8_text_frames_close_with_1007() {
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    let server = start(fast_config()).await;
    let mut ws = sio_ws(&server).await;
    let frame = Frame::message(vec![b'4', 0xff, 0xfe], OpCode::Data(Data::Text), true);
    ws.send(Message::Frame(frame)).await.unwrap();
    assert_eq!(ws_closed(&mut ws).await, Some(1007));
}

#[tokio::test]
async fn a_stalled_post_body_times_out_and_closes_the_session() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let config = EngineConfig {
        http_request_timeout: Duration::from_millis(200),
        ping_interval: Duration::from_secs(10),
        ..fast_config()
    };
    let server = start(config).await;
    let sid = polling_session(&server).await;
    let q = format!("EIO=4&transport=polling&sid={sid}");
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 100\r\n\r\n42[",
        server.url(&q)
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut raw))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(parse_response(&raw).status, 408);
    assert_eq!(get(&server, &q).await.status, 400);
}

#[tokio::test]
async fn a_poll_at_exactly_ping_interval_plus_timeout_finds_the_session_closed() {
    // The official suite's boundary: a client silent for pingInterval + pingTimeout (500 ms
    // here) must get 400, not the ping that was due at 300 ms.
    let server = start(fast_config()).await;
    for _ in 0..5 {
        let sid = polling_session(&server).await;
        let silent_until = tokio::time::Instant::now() + Duration::from_millis(500);
        tokio::time::sleep_until(silent_until).await;
        let poll = get(&server, &format!("EIO=4&transport=polling&sid={sid}")).await;
        assert_eq!(poll.status, 400, "{poll:?}");
    }
}
