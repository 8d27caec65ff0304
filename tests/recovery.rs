//! Socket.IO connection-state recovery backed by durable history: a client that comes back
//! with its `pid` and last offset resumes and receives exactly the room messages it missed,
//! also after a server restart.

mod support;

use serde_json::{Value, json};
use support::{Client, TestApp, test_config};

/// Connect with a raw CONNECT payload; returns the client and the CONNECT reply's JSON.
async fn connect(app: &TestApp, auth: Value) -> (Client, Value) {
    let mut client = Client::open(app.addr).await;
    client.send_raw(&format!("40{auth}")).await;
    let reply = client.next_packet().await;
    let body = reply
        .strip_prefix("40")
        .unwrap_or_else(|| panic!("not a CONNECT reply: {reply}"));
    (
        client,
        serde_json::from_str(body).expect("CONNECT reply JSON"),
    )
}

/// The next `message:new`: its text and its offset (the last argument).
async fn next_message(client: &mut Client) -> (String, String) {
    loop {
        let (event, args) = client.next_event().await;
        if event == "message:new" {
            let text = args[0]["text"].as_str().expect("text").to_owned();
            let offset = args
                .last()
                .and_then(Value::as_str)
                .expect("an offset")
                .to_owned();
            return (text, offset);
        }
    }
}

async fn subscribe_presence(client: &mut Client) {
    let ack = client.request("presence:subscribe", json!({})).await;
    assert_eq!(ack["ok"], json!(true), "{ack}");
}

/// Wait until `watcher` (subscribed to presence) hears that `name` is gone.
async fn wait_offline(watcher: &mut Client, name: &str) {
    loop {
        let (event, args) = watcher.next_event().await;
        if event == "presence" && args[0] == json!({"name": name, "online": false}) {
            return;
        }
    }
}

/// Bob (watching presence) joins and says "one"; Ann hears it, then her connection drops
/// and Bob sees her go. Returns Bob and the offset of what Ann heard last.
async fn ann_hears_one_then_drops(app: &TestApp, mut ann: Client) -> (Client, String) {
    let (mut bob, _) = Client::connect_with_auth(app.addr, json!({"name": "bob"}))
        .await
        .expect("bob");
    subscribe_presence(&mut bob).await;
    say(&mut bob, "one").await;
    let (_, offset) = next_message(&mut ann).await;
    ann.drop_abruptly();
    wait_offline(&mut bob, "ann").await;
    (bob, offset)
}

async fn say(client: &mut Client, text: &str) {
    let ack = client
        .request("message:send", json!({"room": "general", "text": text}))
        .await;
    assert_eq!(ack["ok"], json!(true), "{ack}");
}

#[tokio::test]
async fn a_returning_client_resumes_with_exactly_what_it_missed_even_after_a_restart() {
    let mut config = test_config();
    config.connection_state_recovery = true;
    config.presence_grace_ms = 100;
    config.max_messages_per_second = 0;
    let app = TestApp::start_with(config.clone()).await;

    let (mut ann, reply) = connect(&app, json!({"name": "ann"})).await;
    let pid = reply["pid"]
        .as_str()
        .expect("a pid with recovery on")
        .to_owned();
    let (mut bob, _) = Client::connect_with_auth(app.addr, json!({"name": "bob"}))
        .await
        .expect("bob");
    subscribe_presence(&mut bob).await;
    for text in ["one", "two"] {
        say(&mut bob, text).await;
    }
    let mut offset = String::new();
    for expected in ["one", "two"] {
        let (text, last) = next_message(&mut ann).await;
        assert_eq!(text, expected);
        offset = last;
    }

    ann.drop_abruptly();
    wait_offline(&mut bob, "ann").await;
    for text in ["three", "four", "five"] {
        say(&mut bob, text).await;
    }
    let (mut ann, reply) =
        connect(&app, json!({"name": "ann", "pid": pid, "offset": offset})).await;
    assert_eq!(
        reply["pid"],
        json!(pid),
        "the same pid: the client reports `recovered`"
    );
    for expected in ["three", "four", "five"] {
        let (text, replayed) = next_message(&mut ann).await;
        assert_eq!(text, expected);
        assert!(
            replayed.starts_with(|c: char| c.is_ascii_digit()),
            "{replayed}"
        );
    }
    say(&mut bob, "six").await;
    let (text, six) = next_message(&mut ann).await;
    assert_eq!(text, "six", "then live messages, nothing twice");
    offset = six;

    // Across a restart: ann leaves, bob says more, the server restarts on the same history.
    ann.drop_abruptly();
    wait_offline(&mut bob, "ann").await;
    say(&mut bob, "seven").await;
    drop(bob);
    app.stop().await.expect("clean stop");
    let app = TestApp::start_with(config).await;
    let (mut ann, reply) = connect(&app, json!({"pid": pid, "offset": offset})).await;
    assert_eq!(reply["pid"], json!(pid), "recovered across the restart");
    assert_eq!(next_message(&mut ann).await.0, "seven");
}

#[tokio::test]
async fn an_unknown_pid_gets_a_fresh_session() {
    let mut config = test_config();
    config.connection_state_recovery = true;
    let app = TestApp::start_with(config).await;
    let (mut ann, reply) = connect(
        &app,
        json!({"name": "ann", "pid": "AAAAAAAAAAAAAAAAAAAAAA", "offset": "1:0:general"}),
    )
    .await;
    assert_ne!(
        reply["pid"],
        json!("AAAAAAAAAAAAAAAAAAAAAA"),
        "not recovered"
    );
    let (event, _) = ann.next_event().await;
    assert_eq!(event, "session", "a normal connect instead");
}

#[tokio::test]
async fn a_client_given_a_fresh_session_instead_resumes_it_later_with_that_pid_and_socket_id() {
    let mut config = test_config();
    config.connection_state_recovery = true;
    config.presence_grace_ms = 100;
    config.max_messages_per_second = 0;
    let app = TestApp::start_with(config).await;
    // A pid nothing is recorded under: not resumed, a session of its own instead.
    let unknown = "AAAAAAAAAAAAAAAAAAAAAA";
    let (mut ann, reply) = connect(
        &app,
        json!({"name": "ann", "pid": unknown, "offset": "1:0:general"}),
    )
    .await;
    let (pid, sid) = (reply["pid"].clone(), reply["sid"].clone());
    assert!(
        pid.is_string() && pid != json!(unknown),
        "not recovered: {reply}"
    );
    let (event, session) = ann.next_event().await;
    assert_eq!(event, "session");
    let token = session[0]["token"].clone();
    let (mut bob, offset) = ann_hears_one_then_drops(&app, ann).await;
    say(&mut bob, "two").await;
    // As socket.io-client does: the pid and the socket id are the ones the server replied.
    let (mut ann, reply) =
        connect(&app, json!({"token": token, "pid": pid, "offset": offset})).await;
    assert_eq!(
        reply["pid"], pid,
        "recovered with the pid it was given: {reply}"
    );
    assert_eq!(reply["sid"], sid, "with the socket id it had");
    assert_eq!(next_message(&mut ann).await.0, "two");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_much_to_replay_falls_back_to_a_normal_connect_instead_of_a_disconnect() {
    let mut config = test_config();
    config.connection_state_recovery = true;
    config.presence_grace_ms = 100;
    config.max_messages_per_second = 0;
    config.relaxed_durability = true;
    let app = TestApp::start_with(config).await;
    let (mut ann, reply) = connect(&app, json!({"name": "ann"})).await;
    let pid = reply["pid"].as_str().expect("a pid").to_owned();
    let (_, session) = ann.next_event().await;
    let token = session[0]["token"].as_str().expect("a token").to_owned();
    let (mut bob, offset) = ann_hears_one_then_drops(&app, ann).await;
    // About 1.2 MB missed: more than a connection may queue at once.
    let text = "y".repeat(4_000);
    for _ in 0..300 {
        say(&mut bob, &text).await;
    }

    let (mut ann, reply) =
        connect(&app, json!({"token": token, "pid": pid, "offset": offset})).await;
    assert_ne!(reply["pid"], json!(pid), "not recovered");
    let (event, args) = ann.next_event().await;
    assert_eq!(event, "session", "a normal connect: {args:?}");
    let answer = ann.request("sync", json!({"rooms": {"general": 1}})).await;
    assert_eq!(answer["ok"], json!(true), "{answer}");
    assert_eq!(answer["more"], json!(true));
    assert_eq!(answer["rooms"]["general"][0]["seq"], json!(2));
}
