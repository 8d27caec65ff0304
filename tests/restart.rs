//! Users and room memberships outlive the server process: after a restart on the same
//! history, a user reconnecting with its token is back in all its rooms, away members are
//! listed offline, direct messages reach users who are away, and a name stays with its user
//! while that user's session is valid.

mod support;

use serde_json::{Value, json};
use support::{Client, TestApp, test_config};

async fn join(app: &TestApp, name: &str) -> (Client, String) {
    let (client, session) = Client::connect_with_auth(app.addr, json!({"name": name}))
        .await
        .unwrap_or_else(|error| panic!("{name} refused: {error}"));
    let token = session["token"].as_str().expect("a token").to_owned();
    (client, token)
}

async fn reconnect(app: &TestApp, token: &str) -> (Client, Value) {
    Client::connect_with_auth(app.addr, json!({"token": token}))
        .await
        .unwrap_or_else(|error| panic!("the token is refused: {error}"))
}

async fn ok(client: &mut Client, event: &str, payload: Value) -> Value {
    let answer = client.request(event, payload).await;
    assert_eq!(answer["ok"], json!(true), "{event}: {answer}");
    answer
}

/// A room's members as (name, online), by name.
fn member_list(answer: &Value) -> Vec<(String, bool)> {
    let mut members: Vec<(String, bool)> = answer["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|member| {
            (
                member["name"].as_str().expect("name").to_owned(),
                member["online"].as_bool().expect("online"),
            )
        })
        .collect();
    members.sort();
    members
}

#[tokio::test]
async fn after_a_restart_a_user_is_back_in_its_rooms_and_away_members_are_listed() {
    let mut config = test_config();
    config.presence_grace_ms = 100;
    let app = TestApp::start_with(config.clone()).await;
    let (mut ann, ann_token) = join(&app, "ann").await;
    let (mut bob, bob_token) = join(&app, "bob").await;
    ok(&mut ann, "room:create", json!({"room": "dev"})).await;
    ok(&mut ann, "room:create", json!({"room": "ops"})).await;
    ok(&mut ann, "room:create", json!({"room": "left"})).await;
    ok(&mut ann, "room:leave", json!({"room": "left"})).await;
    ok(&mut bob, "room:join", json!({"room": "dev"})).await;
    // Bob leaves before the restart; ann is still online when the server stops.
    drop(bob);
    loop {
        let (event, args) = ann.next_event().await;
        if event == "presence" && args[0] == json!({"name": "bob", "online": false}) {
            break;
        }
    }
    drop(ann);
    app.stop().await.expect("stop");

    let app = TestApp::start_with(config).await;
    let (mut ann, session) = reconnect(&app, &ann_token).await;
    assert_eq!(session["user"]["name"], json!("ann"));
    assert_eq!(
        session["rooms"],
        json!(["dev", "general", "ops"]),
        "all its rooms, not the one it left"
    );
    // Bob has not come back: a member, offline.
    let members = ok(&mut ann, "room:members", json!({"room": "dev"})).await;
    assert_eq!(
        member_list(&members),
        [("ann".to_owned(), true), ("bob".to_owned(), false)]
    );
    let rooms = ok(&mut ann, "room:list", json!({})).await;
    let dev = rooms["rooms"]
        .as_array()
        .expect("rooms")
        .iter()
        .find(|room| room["name"] == json!("dev"))
        .cloned()
        .expect("dev is listed");
    assert_eq!(
        (dev["members"].clone(), dev["online"].clone()),
        (json!(2), json!(1))
    );

    // Ann may post in her rooms at once, and bob gets his rooms back too.
    ok(
        &mut ann,
        "message:send",
        json!({"room": "ops", "text": "still here"}),
    )
    .await;
    let (_bob, session) = reconnect(&app, &bob_token).await;
    assert_eq!(session["rooms"], json!(["dev", "general"]));
    app.stop().await.expect("stop");
}

#[tokio::test]
async fn after_a_restart_a_direct_message_reaches_a_user_who_is_away() {
    let config = test_config();
    let app = TestApp::start_with(config.clone()).await;
    let (ann, _) = join(&app, "ann").await;
    let (bob, bob_token) = join(&app, "bob").await;
    drop((ann, bob));
    app.stop().await.expect("stop");

    let app = TestApp::start_with(config).await;
    let (mut ann, _) = join(&app, "ann2").await;
    let sent = ok(
        &mut ann,
        "dm:send",
        json!({"to": "BOB", "text": "while you were out"}),
    )
    .await;
    let unknown = ann
        .request("dm:send", json!({"to": "nobody", "text": "?"}))
        .await;
    assert_eq!(unknown["error"]["code"], json!("unknown_user"), "{unknown}");
    let synced = ok(&mut ann, "sync", json!({"direct": {"bob": 0, "nobody": 0}})).await;
    assert_eq!(synced["unknown"], json!(["nobody"]), "{synced}");
    assert_eq!(
        synced["direct"]["bob"][0]["text"],
        json!("while you were out")
    );

    // Bob comes back and catches up on it.
    let (mut bob, _) = reconnect(&app, &bob_token).await;
    let caught_up = ok(&mut bob, "sync", json!({"direct": {"ann2": 0}})).await;
    let messages = caught_up["direct"]["ann2"].as_array().expect("messages");
    assert_eq!(messages.len(), 1, "{caught_up}");
    assert_eq!(messages[0]["seq"], sent["seq"]);
    assert_eq!(messages[0]["from"], json!("ann2"));
    app.stop().await.expect("stop");
}

#[tokio::test]
async fn a_name_stays_with_its_away_user_also_across_a_restart() {
    let mut config = test_config();
    config.presence_grace_ms = 100;
    let app = TestApp::start_with(config.clone()).await;
    let (ann, ann_token) = join(&app, "ann").await;
    let (mut watcher, _) = join(&app, "watcher").await;
    ok(&mut watcher, "presence:subscribe", json!({})).await;
    drop(ann);
    // Wait until ann is announced as gone: she is away, no longer present.
    loop {
        let (event, args) = watcher.next_event().await;
        if event == "presence" && args[0] == json!({"name": "ann", "online": false}) {
            break;
        }
    }
    let taken = |result: Result<(Client, Value), Value>| {
        result.err().map(|error| error["data"]["code"].clone())
    };
    assert_eq!(
        taken(Client::connect_with_auth(app.addr, json!({"name": "ANN"})).await),
        Some(json!("name_taken"))
    );
    // A tutorial client cannot take it either.
    let mut tutorial = app.client().await;
    tutorial.emit("addUser", json!(["Ann"])).await;
    let (event, args) = tutorial.next_event().await;
    assert_eq!(event, "updateChat");
    assert_eq!(args[0], json!("Server"));
    assert!(
        args[1].as_str().is_some_and(|text| text.contains("taken")),
        "{args:?}"
    );
    drop((watcher, tutorial));
    app.stop().await.expect("stop");

    let app = TestApp::start_with(config).await;
    assert_eq!(
        taken(Client::connect_with_auth(app.addr, json!({"name": "ann"})).await),
        Some(json!("name_taken")),
        "still hers after a restart"
    );
    let (_ann, session) = reconnect(&app, &ann_token).await;
    assert_eq!(
        session["user"]["name"],
        json!("ann"),
        "her token reclaims it"
    );
    app.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_lists_are_capped_with_online_members_first_and_a_total() {
    let config = test_config();
    {
        // 600 users with valid sessions, from an earlier run, who had left.
        let store =
            chinwag::store::open_store(&config.db, chinwag::store::Durability::ProcessCrash)
                .await
                .expect("open the store");
        let saves = (0..600).map(|i| {
            store.save_user(chinwag::store::UserRecord {
                user_id: format!("id-{i}"),
                name: format!("user{i}"),
                name_key: format!("user{i}"),
                expires_at_ms: i64::MAX,
                online: false,
                node: "local".to_owned(),
            })
        });
        for saved in futures_util::future::join_all(saves).await {
            saved.expect("save a user");
        }
        store.close().await;
    }
    let app = TestApp::start_with(config).await;
    let (mut ann, _) = join(&app, "ann").await;
    let listed = ok(&mut ann, "room:members", json!({"room": "general"})).await;
    assert_eq!(listed["total"], json!(601));
    let members = listed["members"].as_array().expect("members");
    assert_eq!(members.len(), 500);
    assert_eq!(
        members[0],
        json!({"name": "ann", "online": true}),
        "online first"
    );
    let joined = ok(&mut ann, "room:join", json!({"room": "general"})).await;
    assert_eq!(joined["memberCount"], json!(601));
    assert_eq!(joined["members"].as_array().map(Vec::len), Some(500));
    app.stop().await.expect("stop");
}
