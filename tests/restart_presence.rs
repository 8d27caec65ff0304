//! A restart is not a mass departure: users connected when the server stops (gracefully or
//! by kill -9) are still present when it starts again, so their clients reconnect without
//! anyone being told they left and came back; those who do not return within the restart
//! grace period are then announced as gone.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{Client, TestApp, start_binary, temp_db_path, test_config};

async fn join(addr: std::net::SocketAddr, name: &str) -> (Client, String) {
    let (client, session) = Client::connect_with_auth(addr, json!({"name": name}))
        .await
        .unwrap_or_else(|error| panic!("{name} refused: {error}"));
    let token = session["token"].as_str().expect("a token").to_owned();
    (client, token)
}

async fn reconnect(addr: std::net::SocketAddr, token: &str) -> Client {
    Client::connect_with_auth(addr, json!({"token": token}))
        .await
        .unwrap_or_else(|error| panic!("the token is refused: {error}"))
        .0
}

/// `room:members` of general as (name, online), sorted by name.
async fn general_members(client: &mut Client) -> Vec<(String, bool)> {
    let answer = client
        .request("room:members", json!({"room": "general"}))
        .await;
    let mut members: Vec<(String, bool)> = answer["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m: &Value| {
            (
                m["name"].as_str().expect("name").to_owned(),
                m["online"].as_bool().expect("online"),
            )
        })
        .collect();
    members.sort();
    members
}

/// The `presence` events `client` receives until `deadline` elapses.
async fn presence_within(client: &mut Client, deadline: Duration) -> Vec<Value> {
    let mut seen = Vec::new();
    let until = tokio::time::Instant::now() + deadline;
    while let Ok((event, args)) = tokio::time::timeout_at(until, client.next_event()).await {
        if event == "presence" {
            seen.push(args[0].clone());
        }
    }
    seen
}

/// After the restart at `addr`: ann is back first, sees bob and cy still online, bob comes
/// back unannounced, cy never does and is announced as gone after the restart grace.
async fn the_restart_is_seamless(addr: std::net::SocketAddr, tokens: &[String; 3]) {
    let mut ann = reconnect(addr, &tokens[0]).await;
    let ack = ann.request("presence:subscribe", json!({})).await;
    assert_eq!(ack["ok"], json!(true), "{ack}");
    assert_eq!(
        general_members(&mut ann).await,
        [
            ("ann".to_owned(), true),
            ("bob".to_owned(), true),
            ("cy".to_owned(), true)
        ],
        "everyone online at the stop is still listed online"
    );
    let _bob = reconnect(addr, &tokens[1]).await;
    // The restart grace is 1.5 s: well within it nothing is announced about bob or cy.
    assert_eq!(
        presence_within(&mut ann, Duration::from_millis(700)).await,
        Vec::<Value>::new(),
        "bob's return is not announced"
    );
    // Cy does not come back: gone once the restart grace is over, and only cy.
    assert_eq!(
        presence_within(&mut ann, Duration::from_millis(3_000)).await,
        [json!({"name": "cy", "online": false})]
    );
    assert_eq!(
        general_members(&mut ann).await,
        [
            ("ann".to_owned(), true),
            ("bob".to_owned(), true),
            ("cy".to_owned(), false)
        ]
    );
}

#[tokio::test]
async fn users_online_at_a_graceful_stop_are_still_present_after_the_restart() {
    let mut config = test_config();
    config.restart_grace_ms = 1_500;
    let app = TestApp::start_with(config.clone()).await;
    let (ann, ann_token) = join(app.addr, "ann").await;
    let (bob, bob_token) = join(app.addr, "bob").await;
    let (cy, cy_token) = join(app.addr, "cy").await;
    app.stop().await.expect("stop");
    drop((ann, bob, cy));

    let app = TestApp::start_with(config).await;
    the_restart_is_seamless(app.addr, &[ann_token, bob_token, cy_token]).await;
    app.stop().await.expect("stop");
}

#[tokio::test]
async fn users_online_when_the_server_is_killed_are_still_present_after_the_restart() {
    let db = temp_db_path();
    let args = ["--db", db.as_str(), "--restart-grace-ms", "1500"];
    let (server, addr) = start_binary(&args).await;
    let mut server = KillOnDrop(server);
    let (ann, ann_token) = join(addr, "ann").await;
    let (bob, bob_token) = join(addr, "bob").await;
    let (cy, cy_token) = join(addr, "cy").await;
    server.0.kill().expect("kill -9");
    let _ = server.0.wait();
    drop((ann, bob, cy));

    let (server, addr) = start_binary(&args).await;
    // Killed also when an assertion fails, so a failing run leaves no server behind.
    let _server = KillOnDrop(server);
    the_restart_is_seamless(addr, &[ann_token, bob_token, cy_token]).await;
}

/// A child process killed (and reaped) when dropped.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn a_user_who_left_before_a_graceful_stop_is_offline_after_the_restart() {
    let mut config = test_config();
    config.presence_grace_ms = 60_000;
    let app = TestApp::start_with(config.clone()).await;
    let (ann, ann_token) = join(app.addr, "ann").await;
    let (bob, _) = join(app.addr, "bob").await;
    // Bob's connection closes; his (long) grace period is still running at the stop.
    bob.hang_up().await;
    wait_until_only_ann_is_connected(&app).await;
    app.stop().await.expect("stop");
    drop(ann);

    let app = TestApp::start_with(config).await;
    let mut ann = reconnect(app.addr, &ann_token).await;
    assert_eq!(
        general_members(&mut ann).await,
        [("ann".to_owned(), true), ("bob".to_owned(), false)]
    );
    app.stop().await.expect("stop");
}

/// Polls `/metrics` until the server counts one open socket (ann's).
async fn wait_until_only_ann_is_connected(app: &TestApp) {
    for _ in 0..100 {
        let metrics = app.get("/metrics", &[]).await.text();
        if metrics
            .lines()
            .any(|line| line == "chinwag_socketio_connections 1")
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("bob's connection was never seen closing");
}
