//! Two chinwag nodes on one store (a SQLite file, or a PostgreSQL schema on the PostgreSQL
//! leg): what the store decides for both. Names are unique across the nodes, for full-protocol
//! and tutorial users alike; a room created on one node exists on the other.

mod support;

use serde_json::{Value, json};
use support::{Client, TestApp, temp_db_path, test_config};

/// Two apps sharing one fresh database.
async fn two_nodes() -> (TestApp, TestApp) {
    let mut config = test_config();
    config.db = temp_db_path();
    let a = TestApp::start_with(config.clone()).await;
    let b = TestApp::start_with(config).await;
    (a, b)
}

fn code(reply: &Value) -> &str {
    reply["error"]["code"]
        .as_str()
        .or_else(|| reply["data"]["code"].as_str())
        .unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_connects_with_one_name_on_two_nodes_give_it_to_exactly_one() {
    let (a, b) = two_nodes().await;
    for round in 0..5 {
        let name = format!("ann{round}");
        let attempts = (0..6).map(|i| {
            let addr = if i % 2 == 0 { a.addr } else { b.addr };
            let auth = json!({"name": name});
            tokio::spawn(async move { Client::connect_with_auth(addr, auth).await })
        });
        let mut won = Vec::new();
        for attempt in attempts {
            match attempt.await.expect("connect task") {
                Ok((client, _)) => won.push(client),
                Err(refusal) => assert_eq!(code(&refusal), "name_taken", "{refusal}"),
            }
        }
        assert_eq!(
            won.len(),
            1,
            "round {round}: exactly one connect gets {name}"
        );
    }
    a.stop().await.expect("stop a");
    b.stop().await.expect("stop b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tutorial_name_on_one_node_is_taken_on_the_other_until_its_user_leaves() {
    let (a, b) = two_nodes().await;
    let mut ann = a.client().await;
    ann.join_as("Ann").await;
    let mut imposter = b.client().await;
    imposter.emit("addUser", json!(["ann"])).await;
    let (event, args) = imposter.next_event().await;
    assert_eq!(event, "updateChat");
    assert_eq!(args[0], "Server");
    assert!(
        args[1].as_str().is_some_and(|text| text.contains("taken")),
        "{args:?}"
    );
    // A full-protocol user on the other node cannot have it either.
    let refused = Client::connect_with_auth(b.addr, json!({"name": "ANN"}))
        .await
        .map(|_| ())
        .expect_err("taken");
    assert_eq!(code(&refused), "name_taken");
    // Once Ann leaves, her name is free on the other node.
    ann.hang_up().await;
    let mut tries = 0;
    loop {
        let mut next = b.client().await;
        next.emit("addUser", json!(["Ann"])).await;
        let (_, args) = next.next_event().await;
        if args[1] == "you have connected" {
            break;
        }
        tries += 1;
        assert!(tries < 40, "the name was not released: {args:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    a.stop().await.expect("stop a");
    b.stop().await.expect("stop b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_created_on_one_node_exists_on_the_other() {
    let (a, b) = two_nodes().await;
    let (mut ann, _) = Client::connect_with_auth(a.addr, json!({"name": "ann"}))
        .await
        .expect("ann");
    let (mut bob, _) = Client::connect_with_auth(b.addr, json!({"name": "bob"}))
        .await
        .expect("bob");
    let created = ann.request("room:create", json!({"room": "rust"})).await;
    assert_eq!(created["ok"], true, "{created}");
    let again = bob.request("room:create", json!({"room": "rust"})).await;
    assert_eq!(code(&again), "room_exists", "{again}");
    let joined = bob.request("room:join", json!({"room": "rust"})).await;
    assert_eq!(joined["ok"], true, "{joined}");
    let unknown = bob.request("room:join", json!({"room": "nowhere"})).await;
    assert_eq!(code(&unknown), "unknown_room", "{unknown}");
    // Known there by now: created, then joined, on b.
    let history = bob
        .request("message:history", json!({"room": "rust"}))
        .await;
    assert_eq!(history["ok"], true, "{history}");
    a.stop().await.expect("stop a");
    b.stop().await.expect("stop b");
}
