//! A measurement, not a check (ignored by default): acknowledged messages per second with
//! durable history versus without. Each client sends in a room of its own, so the number
//! is about storing, not fan-out. Loopback only; bounded in count.
//!
//! `cargo test --release -p chinwag --test throughput -- --ignored --nocapture`

mod support;

use std::time::Instant;

use serde_json::json;
use support::{Client, TestApp, test_config};

const CLIENTS: usize = 64;
const MESSAGES_PER_CLIENT: usize = 200;

/// `pipelined`: each client sends all its messages, then reads the acks (as a fire-and-forget
/// client does); otherwise it waits for each ack before the next send.
async fn acked_per_second(no_history: bool, pipelined: bool) -> f64 {
    let mut config = test_config();
    config.no_history = no_history;
    config.max_messages_per_second = 0;
    let app = TestApp::start_with(config).await;
    let mut clients = Vec::new();
    for index in 0..CLIENTS {
        let (mut client, _) =
            Client::connect_with_auth(app.addr, json!({"name": format!("u{index}")}))
                .await
                .expect("connect");
        let created = client
            .request("room:create", json!({"room": format!("r{index}")}))
            .await;
        assert_eq!(created["ok"], json!(true), "{created}");
        clients.push(client);
    }
    let started = Instant::now();
    let senders = clients.into_iter().enumerate().map(|(index, mut client)| {
        tokio::spawn(async move {
            if pipelined {
                for seq in 0..MESSAGES_PER_CLIENT {
                    let send = json!(["message:send", {"room": format!("r{index}"), "text": format!("m{seq}")}]);
                    client.send_raw(&format!("42{seq}{send}")).await;
                }
                let mut acked = 0;
                while acked < MESSAGES_PER_CLIENT {
                    if client.next_packet().await.starts_with("43") {
                        acked += 1;
                    }
                }
                return;
            }
            for seq in 0..MESSAGES_PER_CLIENT {
                let send = json!({"room": format!("r{index}"), "text": format!("m{seq}")});
                let ack = client.request("message:send", send).await;
                assert_eq!(ack["ok"], json!(true), "{ack}");
            }
        })
    });
    for sender in senders.collect::<Vec<_>>() {
        sender.await.expect("sender");
    }
    let elapsed = started.elapsed().as_secs_f64();
    let _ = app.stop().await;
    (CLIENTS * MESSAGES_PER_CLIENT) as f64 / elapsed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run with --ignored --nocapture, preferably --release"]
async fn measure_acknowledged_messages_per_second_with_and_without_history() {
    let durable = acked_per_second(false, false).await;
    let memory = acked_per_second(true, false).await;
    println!(
        "acked messages/s, {CLIENTS} clients x {MESSAGES_PER_CLIENT} sequential sends: \
         durable history {durable:.0}/s, history off {memory:.0}/s"
    );
    let durable = acked_per_second(false, true).await;
    let memory = acked_per_second(true, true).await;
    println!(
        "acked messages/s, {CLIENTS} clients x {MESSAGES_PER_CLIENT} sends without waiting: \
         durable history {durable:.0}/s, history off {memory:.0}/s"
    );
}
