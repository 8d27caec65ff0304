//! Durability: every acknowledged message survives `kill -9` of the server, with its
//! sequence, and nothing is stored twice.

mod support;

use serde_json::{Value, json};
use support::{Client, start_binary, temp_db_path};

#[tokio::test]
async fn every_acknowledged_message_survives_kill_9_with_its_sequence_and_no_duplicate() {
    let db = temp_db_path();
    let (mut server, addr) = start_binary(&["--db", &db, "--max-messages-per-second", "0"]).await;
    let (mut ann, session) = Client::connect_with_auth(addr, json!({"name": "ann"}))
        .await
        .expect("ann connects");
    let token = session["token"].as_str().expect("token").to_owned();

    let mut acked = Vec::new();
    for index in 0..200 {
        let text = format!("durable {index}");
        let send = json!({"room": "general", "text": text, "clientId": format!("c{index}")});
        let ack = ann.request("message:send", send).await;
        assert_eq!(ack["ok"], json!(true), "{ack}");
        acked.push((ack["seq"].as_i64().expect("seq"), text));
    }
    // More in flight, unacknowledged, when the server dies: they may or may not be stored.
    for index in 200..220 {
        let send = json!({"room": "general", "text": format!("durable {index}")});
        ann.emit("message:send", json!([send])).await;
    }
    server.kill().expect("kill -9");
    let _ = server.wait();

    let (mut server, addr) = start_binary(&["--db", &db, "--max-messages-per-second", "0"]).await;
    let (mut ann, _) = Client::connect_with_auth(addr, json!({"token": token}))
        .await
        .expect("the session survived");
    // A resend of an acknowledged message after the crash is recognised.
    let resend = json!({"room": "general", "text": "durable 7", "clientId": "c7"});
    let ack = ann.request("message:send", resend).await;
    assert_eq!(ack["seq"].as_i64(), Some(acked[7].0), "{ack}");

    let answer = ann.request("sync", json!({"rooms": {"general": 0}})).await;
    let stored: Vec<(i64, String)> = answer["rooms"]["general"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m: &Value| {
            (
                m["seq"].as_i64().unwrap_or(-1),
                m["text"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        stored[..acked.len()],
        acked[..],
        "every acked message, in order, with its seq"
    );
    let seqs: Vec<i64> = stored.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(
        seqs,
        (1..=stored.len() as i64).collect::<Vec<_>>(),
        "gapless, no duplicate"
    );
    let _ = server.kill();
    let _ = server.wait();
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{db}{suffix}"));
    }
}
