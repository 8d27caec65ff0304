//! What an application relies on: per-socket ordering, disconnect after events, rooms,
//! broadcasts, volatile emits, backpressure, server-side disconnect, shutdown, recovery.

mod common;

use std::time::Duration;

use common::*;
use engine::{DisconnectReason, EngineConfig};
use serde_json::json;

#[tokio::test]
async fn a_slow_handler_does_not_let_later_events_overtake_it() {
    let server = start(fast_config()).await;
    let mut ws = sio_ws(&server).await;
    ws_send(&mut ws, "42[\"slow\",150,0]").await;
    for i in 1..20 {
        ws_send(&mut ws, &format!("42[\"slow\",0,{i}]")).await;
    }
    for i in 0..20 {
        assert_eq!(
            ws_text(&mut ws).await,
            format!("42[\"slow-done\",{},{i}]", if i == 0 { 150 } else { 0 })
        );
    }
}

#[tokio::test]
async fn on_disconnect_runs_after_every_earlier_event() {
    let mut server = start(fast_config()).await;
    let mut ws = sio_ws(&server).await;
    ws_send(&mut ws, "42[\"slow\",100,\"first\"]").await;
    for i in 0..5 {
        ws_send(&mut ws, &format!("42[\"note\",{i}]")).await;
    }
    ws.close(None).await.unwrap();
    assert_eq!(
        server.next_disconnect().await,
        DisconnectReason::TransportClose
    );
    let log = server.log.lock().unwrap().clone();
    let names: Vec<String> = log
        .iter()
        .filter_map(|s| match s {
            Seen::Event(_, name, _) => Some(name.clone()),
            Seen::Disconnect(..) => Some("disconnect".into()),
            Seen::Connect(..) => None,
        })
        .collect();
    assert_eq!(
        names,
        ["slow", "note", "note", "note", "note", "note", "disconnect"]
    );
}

#[tokio::test]
async fn room_broadcasts_reach_members_only_and_skip_the_sender() {
    let server = start(fast_config()).await;
    let mut a = sio_ws(&server).await;
    let mut b = sio_ws(&server).await;
    let mut c = sio_ws(&server).await;
    ws_send(&mut a, "42[\"join\",\"r\"]").await;
    ws_send(&mut b, "42[\"join\",\"r\"]").await;
    // The join is done once b's next event is handled: use an echo as a barrier.
    ws_send(&mut b, "42[\"message\",\"sync\"]").await;
    assert_eq!(ws_text(&mut b).await, "42[\"message-back\",\"sync\"]");
    ws_send(&mut a, "42[\"message\",\"sync\"]").await;
    assert_eq!(ws_text(&mut a).await, "42[\"message-back\",\"sync\"]");

    ws_send(&mut a, "42[\"to\",\"r\",\"hello room\"]").await;
    ws_send(&mut a, "42[\"all\",\"marker\"]").await;
    assert_eq!(ws_text(&mut b).await, "42[\"room-message\",\"hello room\"]");
    assert_eq!(ws_text(&mut b).await, "42[\"all-message\",\"marker\"]");
    assert_eq!(ws_text(&mut c).await, "42[\"all-message\",\"marker\"]");
    // The sender got neither.
    ws_send(&mut a, "42[\"message\",\"end\"]").await;
    assert_eq!(ws_text(&mut a).await, "42[\"message-back\",\"end\"]");
}

#[tokio::test]
async fn server_broadcasts_target_rooms_and_exceptions() {
    let server = start(fast_config()).await;
    let mut a = sio_ws(&server).await;
    let mut b = sio_ws(&server).await;
    ws_send(&mut a, "42[\"join\",\"r\"]").await;
    ws_send(&mut a, "42[\"message\",\"sync\"]").await;
    ws_text(&mut a).await;
    let io = server.io.clone();
    io.of("/")
        .unwrap()
        .to("r")
        .emit("news", &["for r"])
        .unwrap();
    io.of("/")
        .unwrap()
        .except("r")
        .emit("news", &["not r"])
        .unwrap();
    io.of("/")
        .unwrap()
        .emit_binary(
            "blob",
            &[json!({"_placeholder":true,"num":0})],
            vec![vec![7u8].into()],
        )
        .unwrap();
    assert_eq!(ws_text(&mut a).await, "42[\"news\",\"for r\"]");
    assert_eq!(ws_text(&mut b).await, "42[\"news\",\"not r\"]");
    for ws in [&mut a, &mut b] {
        assert_eq!(
            ws_text(ws).await,
            "451-[\"blob\",{\"_placeholder\":true,\"num\":0}]"
        );
        assert_eq!(
            ws_next(ws).await,
            tokio_tungstenite::tungstenite::Message::binary(vec![7])
        );
    }
    assert!(io.of("/nope").is_none());
}

#[tokio::test]
async fn a_slow_reader_is_disconnected_with_transport_error_not_silently_dropped() {
    let config = EngineConfig {
        max_outbound_bytes: 64 * 1024,
        ping_interval: Duration::from_secs(30),
        ..fast_config()
    };
    let mut server = start(config).await;
    let _reader_that_never_reads = sio_ws(&server).await;
    assert!(matches!(server.next_seen().await, Seen::Connect(..)));
    let payload = bytes::Bytes::from(vec![1u8; 16 * 1024]);
    let placeholder = json!({"_placeholder": true, "num": 0});
    // Far more than the socket buffers and the outbox together (bounded: 64 MiB at most).
    for _ in 0..4096 {
        let op = server.io.of("/").unwrap();
        if op
            .emit_binary("flood", &[&placeholder], vec![payload.clone()])
            .is_err()
        {
            break;
        }
        if server.io.connection_count() == 0 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(
        server.next_disconnect().await,
        DisconnectReason::TransportError
    );
}

#[tokio::test]
async fn volatile_broadcasts_are_dropped_for_a_busy_client_instead_of_disconnecting_it() {
    let config = EngineConfig {
        max_outbound_bytes: 16 * 1024,
        ping_interval: Duration::from_secs(30),
        ..fast_config()
    };
    let server = start(config).await;
    let mut ws = sio_ws(&server).await;
    let payload = "y".repeat(1024);
    for _ in 0..2000 {
        server
            .io
            .of("/")
            .unwrap()
            .volatile()
            .emit("typing", &[&payload])
            .unwrap();
    }
    // Still connected: a normal emit after the burst arrives.
    server.io.of("/").unwrap().emit("after", &[1]).unwrap();
    loop {
        let text = ws_text(&mut ws).await;
        if text == "42[\"after\",1]" {
            break;
        }
        assert!(text.starts_with("42[\"typing\""));
    }
    assert_eq!(server.io.connection_count(), 1);
}

#[tokio::test]
async fn server_side_disconnect_tells_the_client_and_the_handler() {
    let mut server = start(fast_config()).await;
    let mut ws = sio_ws(&server).await;
    ws_send(&mut ws, "42[\"bye\"]").await;
    assert_eq!(ws_text(&mut ws).await, "41");
    assert_eq!(
        server.next_disconnect().await,
        DisconnectReason::ServerNamespaceDisconnect
    );
    // The connection stays open: the client may connect again.
    ws_send(&mut ws, "40").await;
    assert!(ws_text(&mut ws).await.starts_with("40{"));
}

#[tokio::test]
async fn shutdown_disconnects_everyone_and_waits_for_their_handlers() {
    let mut server = start(fast_config()).await;
    let mut ws = sio_ws(&server).await;
    let sid = polling_session(&server).await;
    post(&server, &format!("EIO=4&transport=polling&sid={sid}"), "40").await;
    assert_eq!(server.io.connection_count(), 2);
    server.io.shutdown().await;
    assert_eq!(server.io.connection_count(), 0);
    let mut reasons = Vec::new();
    while let Ok(seen) = server.seen.try_recv() {
        if let Seen::Disconnect(_, reason) = seen {
            reasons.push(reason);
        }
    }
    assert_eq!(reasons, [DisconnectReason::ServerShuttingDown; 2]);
    ws_closed(&mut ws).await;
    assert_eq!(get(&server, "EIO=4&transport=polling").await.status, 503);
}

#[tokio::test]
async fn recovery_gives_back_the_same_pid_and_socket_id() {
    let config = EngineConfig {
        connection_state_recovery: true,
        ..fast_config()
    };
    let mut server = start(config).await;
    let mut ws = ws_connect(&server, "EIO=4&transport=websocket").await;
    ws_text(&mut ws).await;
    ws_send(&mut ws, "40").await;
    let first = json_of(&ws_text(&mut ws).await, 2);
    let (sid, pid) = (
        first["sid"].as_str().unwrap().to_owned(),
        first["pid"].as_str().unwrap().to_owned(),
    );
    ws.close(None).await.unwrap();
    server.next_disconnect().await;

    let mut again = ws_connect(&server, "EIO=4&transport=websocket").await;
    ws_text(&mut again).await;
    ws_send(
        &mut again,
        &format!("40{{\"pid\":\"{pid}\",\"offset\":\"17\"}}"),
    )
    .await;
    let reply = json_of(&ws_text(&mut again).await, 2);
    assert_eq!(reply["pid"], json!(pid));
    assert_eq!(reply["sid"], json!(sid));
    assert_eq!(
        json_of(&ws_text(&mut again).await, 2),
        json!(["auth", {"pid": pid, "offset": "17"}])
    );

    // Another pid maps to another socket id.
    let mut other = ws_connect(&server, "EIO=4&transport=websocket").await;
    ws_text(&mut other).await;
    ws_send(&mut other, "40{\"pid\":\"madeup\",\"offset\":\"1\"}").await;
    let reply = json_of(&ws_text(&mut other).await, 2);
    assert_ne!(reply["sid"], json!(sid));
}

#[tokio::test]
async fn a_pid_without_a_session_gets_a_fresh_pid_which_later_gives_back_its_socket_id() {
    let config = EngineConfig {
        connection_state_recovery: true,
        ..fast_config()
    };
    let mut server = start(config).await;
    let mut ws = ws_connect(&server, "EIO=4&transport=websocket").await;
    ws_text(&mut ws).await;
    // `gone…`: the handler's `may_restore` finds nothing to restore.
    ws_send(&mut ws, "40{\"pid\":\"goneAAAA\",\"offset\":\"1\"}").await;
    let first = json_of(&ws_text(&mut ws).await, 2);
    let (sid, pid) = (first["sid"].clone(), first["pid"].clone());
    assert!(pid.is_string() && pid != json!("goneAAAA"), "{first}");
    ws.close(None).await.unwrap();
    server.next_disconnect().await;

    // The pid it was given is the one its socket id belongs to.
    let mut again = ws_connect(&server, "EIO=4&transport=websocket").await;
    ws_text(&mut again).await;
    ws_send(
        &mut again,
        &format!("40{}", json!({"pid": pid, "offset": "1"})),
    )
    .await;
    let reply = json_of(&ws_text(&mut again).await, 2);
    assert_eq!(reply["pid"], pid);
    assert_eq!(reply["sid"], sid);
}

#[tokio::test]
async fn pings_keep_flowing_while_a_slow_on_connect_decides() {
    let server = start(fast_config()).await;
    let mut ws = ws_connect(&server, "EIO=4&transport=websocket").await;
    ws_text(&mut ws).await;
    ws_send(&mut ws, "40{\"delay\":1000}").await;
    // Answer pings until the CONNECT reply arrives (after 1 s, i.e. several ping periods).
    let reply = loop {
        let message = tokio::time::timeout(WAIT, futures_util::StreamExt::next(&mut ws))
            .await
            .unwrap();
        let text = match message {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))) => t.as_str().to_owned(),
            other => panic!("connection ended: {other:?}"),
        };
        if text == "2" {
            ws_send(&mut ws, "3").await;
        } else {
            break text;
        }
    };
    assert!(reply.starts_with("40{\"sid\""), "{reply}");
}

#[tokio::test]
async fn a_polling_flood_of_packets_disconnects_the_client() {
    let mut server = start(EngineConfig {
        ping_interval: Duration::from_secs(10),
        ..fast_config()
    })
    .await;
    let sid = polling_session(&server).await;
    let q = format!("EIO=4&transport=polling&sid={sid}");
    post(&server, &q, "40{\"delay\":300}").await;
    let flood = vec!["42[\"note\"]"; 3000].join("\x1e");
    assert_eq!(post(&server, &q, &flood).await.status, 400);
    assert_eq!(server.next_disconnect().await, DisconnectReason::ParseError);
}

#[tokio::test]
async fn disconnect_during_on_connect_sends_connect_then_disconnect() {
    let mut server = start(fast_config()).await;
    let mut ws = ws_connect(&server, "EIO=4&transport=websocket").await;
    ws_text(&mut ws).await;
    ws_send(&mut ws, "40{\"bye\":true}").await;
    assert!(ws_text(&mut ws).await.starts_with("40{\"sid\""));
    assert_eq!(ws_text(&mut ws).await, "41");
    assert_eq!(
        server.next_disconnect().await,
        DisconnectReason::ServerNamespaceDisconnect
    );
}

#[tokio::test]
async fn a_socket_id_is_a_room_of_one() {
    let server = start(fast_config()).await;
    let mut a = ws_connect(&server, "EIO=4&transport=websocket").await;
    ws_text(&mut a).await;
    ws_send(&mut a, "40").await;
    let sid = json_of(&ws_text(&mut a).await, 2)["sid"]
        .as_str()
        .unwrap()
        .to_owned();
    ws_text(&mut a).await; // auth
    let mut b = sio_ws(&server).await;
    server
        .io
        .of("/")
        .unwrap()
        .to(&sid)
        .emit("direct", &[1])
        .unwrap();
    server
        .io
        .of("/")
        .unwrap()
        .except(&sid)
        .emit("others", &[2])
        .unwrap();
    assert_eq!(ws_text(&mut a).await, "42[\"direct\",1]");
    assert_eq!(ws_text(&mut b).await, "42[\"others\",2]");
}

#[tokio::test]
async fn a_client_that_stops_reading_is_disconnected_even_without_more_traffic() {
    // The outbox bound is never reached (one burst, then silence): the write timeout acts.
    let config = EngineConfig {
        max_outbound_bytes: 64 << 20,
        ..fast_config()
    };
    let mut server = start(config).await;
    let _never_reads = sio_ws(&server).await;
    assert!(matches!(server.next_seen().await, Seen::Connect(..)));
    // 32 MiB, more than loopback socket buffers hold, as one shared binary attachment.
    let payload = bytes::Bytes::from(vec![7u8; 64 * 1024]);
    let placeholder = json!({"_placeholder": true, "num": 0});
    for _ in 0..512 {
        let op = server.io.of("/").unwrap();
        op.emit_binary("burst", &[&placeholder], vec![payload.clone()])
            .unwrap();
    }
    assert_eq!(
        server.next_disconnect().await,
        DisconnectReason::TransportError
    );
}

#[tokio::test]
async fn an_owned_emitter_reaches_the_socket_after_its_handler_returned() {
    let server = start(fast_config()).await;
    let mut ws = sio_ws(&server).await;
    ws_send(&mut ws, "42[\"later\"]").await;
    assert_eq!(ws_text(&mut ws).await, "42[\"later-done\"]");
}

#[tokio::test]
async fn a_large_ack_into_an_empty_outbox_arrives_even_beyond_the_outbound_bound() {
    // A 2 MiB ack to a reader with a 1 MiB bound: one big frame is not a slow reader.
    let config = EngineConfig {
        max_outbound_bytes: 1 << 20,
        max_payload: 4 << 20,
        // No ping may sit in the outbox when the ack is queued (on a loaded machine the test
        // outlasts a short interval): the ack must be the one frame in an empty outbox.
        ping_interval: Duration::from_secs(30),
        ..fast_config()
    };
    let mut server = start(config).await;
    let mut ws = sio_ws(&server).await;
    assert!(matches!(server.next_seen().await, Seen::Connect(..)));
    let big = "z".repeat(2 << 20);
    ws_send(&mut ws, &format!("421[\"message-with-ack\",\"{big}\"]")).await;
    let reply = loop {
        let text = ws_text(&mut ws).await;
        if text.starts_with("431") {
            break text;
        }
    };
    assert_eq!(reply.len(), "431[\"\"]".len() + big.len());
    assert_eq!(server.io.connection_count(), 1);
}

#[tokio::test]
async fn a_string_cut_inside_an_emoji_is_delivered_with_a_replacement_character() {
    // What socket.io-client sends for `"hello 😀".slice(0, 7)`: a lone high surrogate.
    let mut server = start(fast_config()).await;
    let mut ws = sio_ws(&server).await;
    assert!(matches!(server.next_seen().await, Seen::Connect(..)));
    ws_send(
        &mut ws,
        r#"421["message-with-ack",{"text":"hello \ud83d"},"\ud83d\ude00"]"#,
    )
    .await;
    assert_eq!(
        server.next_seen().await,
        Seen::Event(
            "/".into(),
            "message-with-ack".into(),
            vec![json!({"text": "hello \u{fffd}"}), json!("😀")]
        )
    );
    let ack = ws_text(&mut ws).await;
    assert_eq!(json_of(&ack, 3), json!([{"text": "hello \u{fffd}"}, "😀"]));
    assert_eq!(server.io.connection_count(), 1);
}
