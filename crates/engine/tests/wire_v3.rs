//! Engine.IO v3 + Socket.IO v4 (socket.io-client 2.x) on the wire.

mod common;

use std::time::Duration;

use common::*;
use engine::EngineConfig;
use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

fn slow_pings() -> EngineConfig {
    EngineConfig {
        ping_interval: Duration::from_secs(10),
        ..fast_config()
    }
}

/// Split a v3 text payload into packets (lengths in UTF-16 units).
fn v3_packets(body: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = body;
    while let Some((len, after)) = rest.split_once(':') {
        let units: usize = len
            .parse()
            .unwrap_or_else(|_| panic!("not a v3 payload: {body:?}"));
        let mut end = 0;
        let mut counted = 0;
        for (i, c) in after.char_indices() {
            if counted == units {
                break;
            }
            counted += c.len_utf16();
            end = i + c.len_utf8();
        }
        out.push(after[..end].to_owned());
        rest = &after[end..];
    }
    out
}

async fn v3_session(server: &TestServer, extra: &str) -> (String, String) {
    let response = get(server, &format!("EIO=3&transport=polling{extra}")).await;
    assert_eq!(response.status, 200);
    let packets = v3_packets(&response.text());
    let open = json_of(&packets[0], 1);
    assert!(open.get("maxPayload").is_none());
    assert_eq!(open["upgrades"], json!(["websocket"]));
    let sid = open["sid"].as_str().unwrap().to_owned();
    (
        sid.clone(),
        format!("EIO=3&transport=polling&sid={sid}{extra}"),
    )
}

#[tokio::test]
async fn v3_polling_connects_the_default_namespace_implicitly_and_echoes() {
    let mut server = start(slow_pings()).await;
    let (_, q) = v3_session(&server, "&name=ann").await;
    let mut seen = Vec::new();
    while seen.len() < 2 {
        seen.extend(v3_packets(&get(&server, &q).await.text()));
    }
    assert_eq!(seen, ["40", "42[\"auth\",{}]"]);
    assert_eq!(
        server.next_seen().await,
        Seen::Connect("/".into(), json!({}))
    );
    // Unicode lengths count UTF-16 units.
    let event = "42[\"message\",\"h€llo 😀\"]";
    let body = format!("{}:{event}", event.encode_utf16().count());
    assert_eq!(post(&server, &q, &body).await.status, 200);
    assert_eq!(
        v3_packets(&get(&server, &q).await.text()),
        ["42[\"message-back\",\"h€llo 😀\"]"]
    );
}

#[tokio::test]
async fn v3_clients_ping_and_the_server_pongs() {
    let server = start(slow_pings()).await;
    let (_, q) = v3_session(&server, "").await;
    let _ = get(&server, &q).await; // 40
    post(&server, &q, "6:2probe").await;
    let mut packets = v3_packets(&get(&server, &q).await.text());
    packets.retain(|p| !p.starts_with("42"));
    assert_eq!(packets, ["3probe"]);
}

#[tokio::test]
async fn v3_without_pings_times_out_after_interval_plus_timeout() {
    let config = EngineConfig {
        ping_interval: Duration::from_millis(200),
        ping_timeout: Duration::from_millis(100),
        ..fast_config()
    };
    let mut server = start(config).await;
    let (_, q) = v3_session(&server, "").await;
    let _ = get(&server, &q).await;
    assert_eq!(
        server.next_disconnect().await,
        engine::DisconnectReason::PingTimeout
    );
    assert_eq!(get(&server, &q).await.status, 400);
}

#[tokio::test]
async fn v3_namespaces_take_a_query_and_refusals_are_plain_strings() {
    let mut server = start(slow_pings()).await;
    let (_, q) = v3_session(&server, "").await;
    let _ = get(&server, &q).await;
    assert!(matches!(server.next_seen().await, Seen::Connect(..)));
    let packet = "40/custom?token=abc,";
    post(&server, &q, &format!("{}:{packet}", packet.len())).await;
    assert_eq!(
        server.next_seen().await,
        Seen::Connect("/custom".into(), json!({}))
    );
    let mut packets = Vec::new();
    while packets.len() < 2 {
        packets.extend(v3_packets(&get(&server, &q).await.text()));
    }
    assert_eq!(packets, ["40/custom,", "42/custom,[\"auth\",{}]"]);
    post(&server, &q, "10:40/random,").await;
    assert_eq!(
        v3_packets(&get(&server, &q).await.text()),
        ["44/random,\"Invalid namespace\""]
    );
}

#[tokio::test]
async fn v3_binary_travels_as_base64_with_b64_and_as_binary_payload_without() {
    let server = start(slow_pings()).await;
    let (_, q) = v3_session(&server, "&b64=1").await;
    let _ = get(&server, &q).await;
    let header = "51-[\"message\",{\"_placeholder\":true,\"num\":0}]";
    post(
        &server,
        &q,
        &format!("{}:4{header}6:b4AQID", header.len() + 1),
    )
    .await;
    let packets = v3_packets(&get(&server, &q).await.text());
    assert_eq!(
        packets,
        [
            "451-[\"message-back\",{\"_placeholder\":true,\"num\":0}]",
            "b4AQID"
        ]
    );

    // A client that supports binary gets the v3 binary payload format.
    let (_, q) = v3_session(&server, "").await;
    let _ = get(&server, &q).await;
    let mut body = vec![0u8];
    let text = format!("4{header}");
    body.extend(text.len().to_string().bytes().map(|d| d - b'0'));
    body.push(0xFF);
    body.extend_from_slice(text.as_bytes());
    body.extend_from_slice(&[1, 4, 0xFF, 4, 1, 2, 3]);
    let response = http(
        server.addr,
        "POST",
        &server.url(&q),
        &body,
        &[("Content-Type", "application/octet-stream")],
    )
    .await;
    assert_eq!(response.status, 200);
    let response = get(&server, &q).await;
    assert_eq!(
        response.header("content-type"),
        Some("application/octet-stream")
    );
    let reply = "451-[\"message-back\",{\"_placeholder\":true,\"num\":0}]";
    let mut expected = vec![0u8];
    expected.extend(reply.len().to_string().bytes().map(|d| d - b'0'));
    expected.push(0xFF);
    expected.extend_from_slice(reply.as_bytes());
    expected.extend_from_slice(&[1, 4, 0xFF, 4, 1, 2, 3]);
    assert_eq!(response.body, expected);
}

#[tokio::test]
async fn v3_websocket_prefixes_binary_frames_with_4_and_pongs_pings() {
    let server = start(slow_pings()).await;
    let mut ws = ws_connect(&server, "EIO=3&transport=websocket").await;
    let open = json_of(&ws_text(&mut ws).await, 1);
    assert!(open.get("maxPayload").is_none());
    assert_eq!(ws_text(&mut ws).await, "40");
    assert_eq!(ws_text(&mut ws).await, "42[\"auth\",{}]");
    ws_send(&mut ws, "2").await;
    assert_eq!(ws_text(&mut ws).await, "3");
    ws_send(
        &mut ws,
        "451-[\"message\",{\"_placeholder\":true,\"num\":0}]",
    )
    .await;
    ws.send(Message::binary(vec![4, 9, 8])).await.unwrap();
    assert_eq!(
        ws_text(&mut ws).await,
        "451-[\"message-back\",{\"_placeholder\":true,\"num\":0}]"
    );
    assert_eq!(ws_next(&mut ws).await, Message::binary(vec![4, 9, 8]));
}

#[tokio::test]
async fn v3_upgrade_from_polling_to_websocket() {
    let server = start(slow_pings()).await;
    let (sid, q) = v3_session(&server, "").await;
    let mut packets = Vec::new();
    while packets.len() < 2 {
        packets.extend(v3_packets(&get(&server, &q).await.text()));
    }
    assert_eq!(packets[0], "40");
    let mut ws = ws_connect(&server, &format!("EIO=3&transport=websocket&sid={sid}")).await;
    ws_send(&mut ws, "2probe").await;
    assert_eq!(ws_text(&mut ws).await, "3probe");
    assert_eq!(v3_packets(&get(&server, &q).await.text()), ["6"]);
    ws_send(&mut ws, "5").await;
    ws_send(&mut ws, "42[\"message\",1]").await;
    assert_eq!(ws_text(&mut ws).await, "42[\"message-back\",1]");
}
