//! The full protocol (PROTOCOL.md section 2) over the wire: identity, rooms, durable
//! messages with acks, history, catch-up, direct messages, presence and typing.

mod support;

use serde_json::{Value, json};
use support::{Client, TestApp, test_config};

async fn join(app: &TestApp, name: &str) -> (Client, String) {
    let (client, session) = Client::connect_with_auth(app.addr, json!({"name": name}))
        .await
        .unwrap_or_else(|error| panic!("{name} refused: {error}"));
    assert_eq!(session["user"]["name"], json!(name));
    assert_eq!(session["rooms"], json!(["general"]));
    let token = session["token"].as_str().expect("a token").to_owned();
    (client, token)
}

/// Ask for every user's presence (`presence:subscribe`).
async fn subscribe_presence(client: &mut Client) {
    let ack = client.request("presence:subscribe", json!({})).await;
    assert_eq!(ack["ok"], json!(true), "{ack}");
}

/// Skip events until one named `event` arrives; return its first argument.
async fn next_named(client: &mut Client, event: &str) -> Value {
    loop {
        let (name, mut args) = client.next_event().await;
        if name == event {
            return args.remove(0);
        }
    }
}

fn code(answer: &Value) -> &str {
    answer["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("expected an error, got {answer}"))
}

#[tokio::test]
async fn a_name_at_connect_gives_a_token_that_reclaims_the_same_user() {
    let app = TestApp::start().await;
    let (_ann, token) = join(&app, "ann").await;
    let (_tab, session) = Client::connect_with_auth(app.addr, json!({"token": token}))
        .await
        .expect("the token is accepted");
    assert_eq!(session["user"]["name"], json!("ann"));
    assert_eq!(session["token"], json!(token));

    let refused = Client::connect_with_auth(app.addr, json!({"token": "not-a-token"})).await;
    assert_eq!(
        refused.err().map(|e| e["data"]["code"].clone()),
        Some(json!("invalid_token"))
    );
    let taken = Client::connect_with_auth(app.addr, json!({"name": "ANN"})).await;
    assert_eq!(
        taken.err().map(|e| e["data"]["code"].clone()),
        Some(json!("name_taken"))
    );
    let invalid = Client::connect_with_auth(app.addr, json!({"name": "<b>"})).await;
    assert_eq!(
        invalid.err().map(|e| e["data"]["code"].clone()),
        Some(json!("invalid_name"))
    );
}

#[tokio::test]
async fn a_message_is_acknowledged_with_its_sequence_then_broadcast_to_the_room() {
    let app = TestApp::start().await;
    let (mut ann, _) = join(&app, "ann").await;
    let (mut bob, _) = join(&app, "bob").await;
    for seq in 1..=3 {
        let text = format!("<b>hello</b> {seq}");
        let ack = ann
            .request("message:send", json!({"room": "general", "text": text}))
            .await;
        assert_eq!(ack["ok"], json!(true), "{ack}");
        assert_eq!(ack["seq"], json!(seq));
        let message = next_named(&mut bob, "message:new").await;
        assert_eq!(message["id"], ack["id"]);
        assert_eq!(
            (message["room"].clone(), message["seq"].clone()),
            (json!("general"), json!(seq))
        );
        assert_eq!(
            (message["from"].clone(), message["text"].clone()),
            (json!("ann"), json!(text))
        );
        assert_eq!(
            next_named(&mut ann, "message:new").await["seq"],
            json!(seq),
            "the sender too"
        );
    }
}

#[tokio::test]
async fn a_resend_with_the_same_client_id_is_not_stored_or_broadcast_twice() {
    let app = TestApp::start().await;
    let (mut ann, _) = join(&app, "ann").await;
    let (mut bob, _) = join(&app, "bob").await;
    let send = json!({"room": "general", "text": "once", "clientId": "c-1"});
    let first = ann.request("message:send", send.clone()).await;
    let again = ann.request("message:send", send).await;
    assert_eq!(
        (first["id"].clone(), first["seq"].clone()),
        (again["id"].clone(), again["seq"].clone())
    );
    let next = ann
        .request("message:send", json!({"room": "general", "text": "twice"}))
        .await;
    assert_eq!(next["seq"], json!(2));
    assert_eq!(
        next_named(&mut bob, "message:new").await["text"],
        json!("once")
    );
    assert_eq!(
        next_named(&mut bob, "message:new").await["text"],
        json!("twice"),
        "no duplicate"
    );
    let history = ann
        .request("message:history", json!({"room": "general"}))
        .await;
    assert_eq!(history["messages"].as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn tutorial_and_full_clients_see_each_others_messages() {
    let app = TestApp::start().await;
    let mut tutorial = app.client().await;
    tutorial.join_as("tut").await;
    let (mut full, _) = join(&app, "full").await;
    tutorial
        .expect("updateChat", json!(["Server", "full has connected"]))
        .await;
    tutorial
        .expect("updateUsers", json!([{"tut": "tut", "full": "full"}]))
        .await;

    tutorial
        .emit("sendChat", json!(["from the tutorial"]))
        .await;
    tutorial
        .expect("updateChat", json!(["tut", "from the tutorial"]))
        .await;
    let message = next_named(&mut full, "message:new").await;
    assert_eq!(
        (message["from"].clone(), message["text"].clone()),
        (json!("tut"), json!("from the tutorial"))
    );

    let ack = full
        .request(
            "message:send",
            json!({"room": "general", "text": "from the app"}),
        )
        .await;
    assert_eq!(ack["seq"], json!(2));
    tutorial
        .expect("updateChat", json!(["full", "from the app"]))
        .await;
}

#[tokio::test]
async fn rooms_are_created_joined_listed_and_messages_stay_in_their_room() {
    let app = TestApp::start().await;
    let (mut ann, _) = join(&app, "ann").await;
    let (mut bob, _) = join(&app, "bob").await;
    let (mut cy, _) = join(&app, "cy").await;
    assert_eq!(
        ann.request("room:create", json!({"room": "rust"})).await["ok"],
        json!(true)
    );
    assert_eq!(
        code(&bob.request("room:create", json!({"room": "rust"})).await),
        "room_exists"
    );
    assert_eq!(
        code(&bob.request("room:create", json!({"room": "a b"})).await),
        "invalid_room"
    );
    assert_eq!(
        code(
            &bob.request("message:send", json!({"room": "rust", "text": "hi"}))
                .await
        ),
        "not_in_room"
    );

    let created = next_named(&mut ann, "room:member").await;
    assert_eq!(
        created,
        json!({"room": "rust", "name": "ann", "joined": true})
    );
    let joined = bob.request("room:join", json!({"room": "rust"})).await;
    assert_eq!(
        joined["members"],
        json!([{"name": "ann", "online": true}, {"name": "bob", "online": true}])
    );
    let notice = next_named(&mut ann, "room:member").await;
    assert_eq!(
        notice,
        json!({"room": "rust", "name": "bob", "joined": true})
    );

    let listed = cy.request("room:list", json!({})).await;
    assert_eq!(
        listed["rooms"],
        json!([{"name": "general", "members": 3, "online": 3}, {"name": "rust", "members": 2, "online": 2}])
    );
    bob.request("message:send", json!({"room": "rust", "text": "rusty"}))
        .await;
    assert_eq!(
        next_named(&mut ann, "message:new").await["room"],
        json!("rust")
    );
    // cy is not in #rust: the next message cy sees is the one in #general.
    ann.request(
        "message:send",
        json!({"room": "general", "text": "everyone"}),
    )
    .await;
    assert_eq!(
        next_named(&mut cy, "message:new").await["text"],
        json!("everyone")
    );

    assert_eq!(
        bob.request("room:leave", json!({"room": "rust"})).await["ok"],
        json!(true)
    );
    assert_eq!(
        code(&bob.request("room:leave", json!({"room": "general"})).await),
        "invalid_room"
    );
    assert_eq!(
        code(&bob.request("room:join", json!({"room": "nope"})).await),
        "unknown_room"
    );
}

#[tokio::test]
async fn history_pages_backwards_and_join_since_returns_what_was_missed() {
    let app = TestApp::start().await;
    let (mut ann, _) = join(&app, "ann").await;
    for index in 1..=30 {
        ann.request(
            "message:send",
            json!({"room": "general", "text": format!("m{index}")}),
        )
        .await;
    }
    let latest = ann
        .request("message:history", json!({"room": "general", "limit": 10}))
        .await;
    let seqs = |page: &Value| -> Vec<i64> {
        page["messages"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["seq"].as_i64())
            .collect()
    };
    assert_eq!(seqs(&latest), (21..=30).collect::<Vec<_>>());
    assert_eq!(latest["more"], json!(true));
    let older = ann
        .request(
            "message:history",
            json!({"room": "general", "before": 21, "limit": 10}),
        )
        .await;
    assert_eq!(seqs(&older), (11..=20).collect::<Vec<_>>());
    let since = ann
        .request("room:join", json!({"room": "general", "since": 25}))
        .await;
    assert_eq!(seqs(&since), (26..=30).collect::<Vec<_>>());
    assert_eq!(since["more"], json!(false));
}

#[tokio::test]
async fn a_client_that_reconnects_catches_up_exactly_what_it_missed_even_after_a_restart() {
    let mut config = test_config();
    config.presence_grace_ms = 100;
    config.max_messages_per_second = 0; // ann sends 1,000 messages as fast as acks come
    let app = TestApp::start_with(config.clone()).await;
    let (mut ann, ann_token) = join(&app, "ann").await;
    let (mut bob, bob_token) = join(&app, "bob").await;
    let seen = bob
        .request("message:send", json!({"room": "general", "text": "seen"}))
        .await["seq"]
        .as_i64()
        .expect("seq");
    bob.drop_abruptly();
    for index in 0..1_000 {
        ann.request(
            "message:send",
            json!({"room": "general", "text": format!("missed {index}")}),
        )
        .await;
    }
    let catch_up = |answer: &Value| -> Vec<String> {
        answer["rooms"]["general"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["text"].as_str().map(str::to_owned))
            .collect()
    };
    let expected: Vec<String> = (0..1_000).map(|index| format!("missed {index}")).collect();
    let (mut bob, _) = Client::connect_with_auth(app.addr, json!({"token": bob_token.clone()}))
        .await
        .expect("bob is back");
    let answer = bob
        .request("sync", json!({"rooms": {"general": seen}}))
        .await;
    assert_eq!(catch_up(&answer), expected);
    assert_eq!(answer["more"], json!(false));

    // After a restart on the same history file, the token and the history are still there.
    drop(bob);
    drop(ann);
    app.stop().await.expect("clean stop");
    let app = TestApp::start_with(config).await;
    let (mut bob, _) = Client::connect_with_auth(app.addr, json!({"token": bob_token}))
        .await
        .expect("the session survives a restart");
    let answer = bob
        .request("sync", json!({"rooms": {"general": seen}}))
        .await;
    assert_eq!(catch_up(&answer), expected);
    let (_ann, _) = Client::connect_with_auth(app.addr, json!({"token": ann_token}))
        .await
        .expect("ann too");
}

#[tokio::test]
async fn presence_reaches_subscribers_and_room_mates_not_all_of_general() {
    // Everyone is in general: announcing every arrival to everyone costs O(users²). A socket
    // hears the presence of the users it shares another room with, or of all if it asked.
    let mut config = test_config();
    config.presence_grace_ms = 100;
    let app = TestApp::start_with(config).await;
    let (mut ann, _) = join(&app, "ann").await;
    let (mut bob, _) = join(&app, "bob").await;
    let (mut watcher, _) = join(&app, "watcher").await;
    subscribe_presence(&mut watcher).await;
    assert_eq!(
        ann.request("room:create", json!({"room": "rust"})).await["ok"],
        json!(true)
    );
    let (mut cy, _) = join(&app, "cy").await;
    assert_eq!(
        cy.request("room:join", json!({"room": "rust"})).await["ok"],
        json!(true)
    );
    assert_eq!(
        next_named(&mut watcher, "presence").await,
        json!({"name": "cy", "online": true})
    );
    cy.drop_abruptly();
    // The subscriber and ann (in rust with cy) hear that cy left; bob (only in general)
    // hears nothing: the next thing he gets is ann's message.
    assert_eq!(
        next_named(&mut watcher, "presence").await,
        json!({"name": "cy", "online": false})
    );
    assert_eq!(
        next_named(&mut ann, "presence").await,
        json!({"name": "cy", "online": false})
    );
    let sent = ann
        .request(
            "message:send",
            json!({"room": "general", "text": "barrier"}),
        )
        .await;
    assert_eq!(sent["ok"], json!(true), "{sent}");
    loop {
        let (event, args) = bob.next_event().await;
        assert_ne!(
            event, "presence",
            "bob shares no room but general: {args:?}"
        );
        if event == "message:new" && args[0]["text"] == json!("barrier") {
            break;
        }
    }
    // Unsubscribed, the watcher is back to its room mates only.
    let ack = watcher.request("presence:unsubscribe", json!({})).await;
    assert_eq!(ack["ok"], json!(true), "{ack}");
    let (_dee, _) = join(&app, "dee").await;
    let sent = ann
        .request(
            "message:send",
            json!({"room": "general", "text": "barrier 2"}),
        )
        .await;
    assert_eq!(sent["ok"], json!(true), "{sent}");
    loop {
        let (event, args) = watcher.next_event().await;
        assert_ne!(event, "presence", "unsubscribed: {args:?}");
        if event == "message:new" && args[0]["text"] == json!("barrier 2") {
            break;
        }
    }
}

#[tokio::test]
async fn a_user_with_two_tabs_stays_online_until_the_last_one_closes() {
    let mut config = test_config();
    config.presence_grace_ms = 200;
    let app = TestApp::start_with(config).await;
    let (mut watcher, _) = join(&app, "watcher").await;
    subscribe_presence(&mut watcher).await;
    let (tab1, token) = join(&app, "ann").await;
    assert_eq!(
        next_named(&mut watcher, "presence").await,
        json!({"name": "ann", "online": true})
    );
    let (tab2, _) = Client::connect_with_auth(app.addr, json!({"token": token}))
        .await
        .expect("tab 2");

    tab1.drop_abruptly();
    // Nothing about ann while tab 2 is open: the next presence news is about cy.
    let (_cy, _) = join(&app, "cy").await;
    assert_eq!(
        next_named(&mut watcher, "presence").await,
        json!({"name": "cy", "online": true})
    );

    tab2.drop_abruptly();
    assert_eq!(
        next_named(&mut watcher, "presence").await,
        json!({"name": "ann", "online": false})
    );
}

#[tokio::test]
async fn direct_messages_reach_both_users_and_have_their_own_history() {
    let app = TestApp::start().await;
    let (mut ann, _) = join(&app, "ann").await;
    let (mut bob, _) = join(&app, "bob").await;
    let ack = ann
        .request("dm:send", json!({"to": "BOB", "text": "psst"}))
        .await;
    assert_eq!(ack["seq"], json!(1), "{ack}");
    let received = next_named(&mut bob, "dm:new").await;
    assert_eq!(
        (received["from"].clone(), received["with"].clone()),
        (json!("ann"), json!("ann"))
    );
    let echoed = next_named(&mut ann, "dm:new").await;
    assert_eq!(echoed["with"], json!("bob"));
    let history = bob.request("dm:history", json!({"with": "ann"})).await;
    assert_eq!(history["messages"][0]["text"], json!("psst"));
    assert_eq!(
        code(
            &ann.request("dm:send", json!({"to": "nobody", "text": "?"}))
                .await
        ),
        "unknown_user"
    );
    let caught_up = ann
        .request("sync", json!({"direct": {"bob": 0, "nobody": 0}}))
        .await;
    assert_eq!(
        caught_up["direct"]["bob"][0]["text"],
        json!("psst"),
        "{caught_up}"
    );
    assert_eq!(caught_up["direct"]["bob"][0]["with"], json!("bob"));
    assert_eq!(caught_up["unknown"], json!(["nobody"]));
}

#[tokio::test]
async fn typing_reaches_the_others_in_the_room() {
    let app = TestApp::start().await;
    let (mut ann, _) = join(&app, "ann").await;
    let (mut bob, _) = join(&app, "bob").await;
    ann.emit("typing", json!([{"room": "general", "typing": true}]))
        .await;
    assert_eq!(
        next_named(&mut bob, "typing").await,
        json!({"room": "general", "name": "ann", "typing": true})
    );
}

#[tokio::test]
async fn malformed_requests_get_a_coded_error() {
    let app = TestApp::start().await;
    let (mut ann, _) = join(&app, "ann").await;
    for payload in [
        json!("general"),
        json!(42),
        json!([]),
        json!({"room": 1, "text": "x"}),
    ] {
        assert_eq!(
            code(&ann.request("message:send", payload).await),
            "invalid_argument"
        );
    }
    let long = "x".repeat(4_001);
    assert_eq!(
        code(
            &ann.request("message:send", json!({"room": "general", "text": long}))
                .await
        ),
        "message_too_long"
    );
    assert_eq!(
        code(
            &ann.request("message:send", json!({"room": "general", "text": ""}))
                .await
        ),
        "invalid_message"
    );
    assert_eq!(
        code(
            &ann.request("message:send", json!({"room": "nope", "text": "x"}))
                .await
        ),
        "unknown_room"
    );
    assert_eq!(
        code(&ann.request("no:such-event", json!({})).await),
        "invalid_argument"
    );
    let limit = json!({"room": "general", "limit": "ten"});
    assert_eq!(
        code(&ann.request("message:history", limit).await),
        "invalid_argument"
    );

    let mut tutorial = app.client().await;
    assert_eq!(
        code(&tutorial.request("room:list", json!({})).await),
        "name_required"
    );
}

#[tokio::test]
async fn a_connection_sending_too_fast_is_told_to_slow_down() {
    let mut config = test_config();
    config.max_messages_per_second = 1; // bursts of 2
    config.no_history = true; // no disk time between messages: the refill stays below one
    let app = TestApp::start_with(config).await;
    let (mut ann, _) = join(&app, "ann").await;
    let send = json!({"room": "general", "text": "hi"});
    assert_eq!(
        ann.request("message:send", send.clone()).await["ok"],
        json!(true)
    );
    assert_eq!(
        ann.request("message:send", send.clone()).await["ok"],
        json!(true)
    );
    assert_eq!(
        code(&ann.request("message:send", send).await),
        "rate_limited"
    );

    let mut tutorial = app.client().await;
    tutorial.join_as("tut").await;
    for _ in 0..3 {
        tutorial.emit("sendChat", json!(["spam"])).await;
    }
    let mut reasons = Vec::new();
    while reasons.len() < 3 {
        let (_, args) = tutorial.next_event().await;
        reasons.push(args[1].clone());
    }
    assert!(
        reasons.contains(&json!("you are sending too fast, please slow down")),
        "{reasons:?}"
    );
}

#[tokio::test]
async fn a_connection_that_drops_while_connecting_is_not_left_online() {
    let mut config = test_config();
    config.presence_grace_ms = 200;
    let app = TestApp::start_with(config).await;
    let (mut watcher, _) = join(&app, "watcher").await;
    subscribe_presence(&mut watcher).await;
    // Drop the TCP connection right after the CONNECT: the server may still be storing the
    // session (on_connect) when it notices. Either way the ghost must not stay online. (Its
    // name stays held only if it got as far as a session it could have received; one that
    // closed while connecting is forgotten with its session.)
    let mut ghost = Client::open(app.addr).await;
    ghost.send_raw(r#"40{"name":"ghost"}"#).await;
    ghost.drop_abruptly();
    // The server announces the ghost once it has registered it ...
    loop {
        let (event, args) = watcher.next_event().await;
        if event == "presence" && args[0] == json!({"name": "ghost", "online": true}) {
            break;
        }
    }
    // ... and must then notice that it is gone.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let members = watcher
            .request("room:members", json!({"room": "general"}))
            .await;
        let ghost_online = members["members"]
            .as_array()
            .expect("members")
            .iter()
            .any(|member| member["name"] == json!("ghost") && member["online"] == json!(true));
        if !ghost_online {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the ghost stayed online: {members}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_senders_messages_arrive_in_sequence_order_without_gaps() {
    let mut config = test_config();
    config.max_messages_per_second = 0;
    let app = TestApp::start_with(config).await;
    let (mut reader, _) = join(&app, "reader").await;
    let mut senders = Vec::new();
    for index in 0..8 {
        let (client, _) = join(&app, &format!("sender{index}")).await;
        senders.push(client);
    }
    let tasks: Vec<_> = senders
        .into_iter()
        .map(|mut client| {
            tokio::spawn(async move {
                for seq in 0..50 {
                    let send = json!({"room": "general", "text": format!("m{seq}")});
                    // Pipelined: no waiting for acks, so stores complete in batches.
                    client.emit("message:send", json!([send])).await;
                }
                client
            })
        })
        .collect();
    let mut seqs = Vec::new();
    while seqs.len() < 400 {
        let message = next_named(&mut reader, "message:new").await;
        seqs.push(message["seq"].as_i64().expect("seq"));
    }
    assert_eq!(seqs, (1..=400).collect::<Vec<_>>());
    for task in tasks {
        drop(task.await.expect("sender"));
    }
}

#[tokio::test]
async fn a_socket_io_2_client_names_itself_in_the_query_string() {
    let app = TestApp::start().await;
    let query = "EIO=3&transport=websocket&name=old%20timer";
    let mut old = Client::open_with_query(app.addr, query).await;
    // Socket.IO v4 (2.x clients): the server connects them to `/` on its own.
    assert_eq!(old.next_packet().await, "40");
    let (event, args) = old.next_event().await;
    assert_eq!(event, "session");
    assert_eq!(args[0]["user"]["name"], json!("old timer"));
    let ack = old
        .request("message:send", json!({"room": "general", "text": "hi"}))
        .await;
    assert_eq!(ack["ok"], json!(true), "{ack}");
}

#[tokio::test]
async fn a_direct_message_to_someone_away_is_caught_up_when_they_return() {
    let mut config = test_config();
    config.presence_grace_ms = 100;
    let app = TestApp::start_with(config).await;
    let (mut ann, _) = join(&app, "ann").await;
    subscribe_presence(&mut ann).await;
    let (bob, bob_token) = join(&app, "bob").await;
    bob.drop_abruptly();
    loop {
        let presence = next_named(&mut ann, "presence").await;
        if presence == json!({"name": "bob", "online": false}) {
            break;
        }
    }
    let ack = ann
        .request(
            "dm:send",
            json!({"to": "bob", "text": "while you were out"}),
        )
        .await;
    assert_eq!(ack["ok"], json!(true), "{ack}");

    let (mut bob, _) = Client::connect_with_auth(app.addr, json!({"token": bob_token}))
        .await
        .expect("bob is back");
    let caught_up = bob.request("sync", json!({"direct": {"ann": 0}})).await;
    assert_eq!(
        caught_up["direct"]["ann"][0]["text"],
        json!("while you were out"),
        "{caught_up}"
    );
    assert_eq!(caught_up["direct"]["ann"][0]["with"], json!("ann"));
}

#[tokio::test]
async fn a_member_who_was_away_is_listed_offline_and_returns_to_its_rooms() {
    let mut config = test_config();
    config.presence_grace_ms = 100;
    let app = TestApp::start_with(config).await;
    let (mut ann, _) = join(&app, "ann").await;
    let (mut bob, bob_token) = join(&app, "bob").await;
    assert_eq!(
        ann.request("room:create", json!({"room": "rust"})).await["ok"],
        json!(true)
    );
    assert_eq!(
        bob.request("room:join", json!({"room": "rust"})).await["ok"],
        json!(true)
    );
    bob.drop_abruptly();
    loop {
        if next_named(&mut ann, "presence").await == json!({"name": "bob", "online": false}) {
            break;
        }
    }
    let members = ann.request("room:members", json!({"room": "rust"})).await;
    assert_eq!(
        members["members"],
        json!([{"name": "ann", "online": true}, {"name": "bob", "online": false}])
    );
    let (_bob, session) = Client::connect_with_auth(app.addr, json!({"token": bob_token}))
        .await
        .expect("bob is back");
    assert_eq!(session["rooms"], json!(["general", "rust"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_larger_than_a_connections_output_bound_arrive_cut_short_and_page_on() {
    let mut config = test_config();
    config.max_messages_per_second = 0;
    config.relaxed_durability = true;
    let app = TestApp::start_with(config).await;
    let (mut ann, _) = join(&app, "ann").await;
    // 300 messages of 4,000 characters: about 1.2 MB, more than a connection may queue.
    let text = "x".repeat(4_000);
    for _ in 0..300 {
        let ack = ann
            .request("message:send", json!({"room": "general", "text": text}))
            .await;
        assert_eq!(ack["ok"], json!(true), "{ack}");
    }
    let (mut bob, _) = join(&app, "bob").await;

    let page = bob
        .request("message:history", json!({"room": "general", "limit": 300}))
        .await;
    let newest = page["messages"]
        .as_array()
        .expect("a page, not a disconnect");
    assert!(!newest.is_empty() && newest.len() < 300, "{}", newest.len());
    assert_eq!(newest.last().map(|m| m["seq"].clone()), Some(json!(300)));
    assert_eq!(page["more"], json!(true));

    // `sync` from 0 pages on until it has everything, in order, without gaps.
    let mut seen = 0;
    loop {
        let answer = bob
            .request("sync", json!({"rooms": {"general": seen}}))
            .await;
        assert_eq!(answer["ok"], json!(true), "{answer}");
        for message in answer["rooms"]["general"].as_array().expect("messages") {
            seen += 1;
            assert_eq!(message["seq"], json!(seen));
        }
        if answer["more"] != json!(true) {
            break;
        }
    }
    assert_eq!(seen, 300);
}

#[tokio::test]
async fn a_direct_message_to_a_tutorial_user_is_refused_not_lost() {
    let app = TestApp::start().await;
    let mut tutorial = app.client().await;
    tutorial.join_as("tut").await;
    let (mut ann, _) = join(&app, "ann").await;
    let refused = ann
        .request("dm:send", json!({"to": "tut", "text": "hello?"}))
        .await;
    assert_eq!(code(&refused), "not_supported");
    let refused = tutorial
        .request("room:create", json!({"room": "elsewhere"}))
        .await;
    assert_eq!(code(&refused), "not_supported");
}

#[tokio::test]
async fn a_name_that_is_not_text_and_add_user_on_a_session_get_clear_answers() {
    let app = TestApp::start().await;
    let refused = Client::connect_with_auth(app.addr, json!({"name": 42})).await;
    assert_eq!(
        refused.err().map(|e| e["data"].clone()),
        Some(json!({"code": "invalid_argument", "message": "a name must be text"}))
    );
    let (mut ann, _) = join(&app, "ann").await;
    ann.emit("addUser", json!(["bob"])).await;
    let reason = loop {
        let (event, args) = ann.next_event().await;
        if event == "updateChat" {
            break args[1].clone();
        }
    };
    assert_eq!(reason, json!("you are already in the chat as ann"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_sent_back_to_back_are_acked_stored_and_delivered_in_order() {
    let mut config = test_config();
    config.max_messages_per_second = 0;
    let app = TestApp::start_with(config).await;
    let (mut ann, _) = join(&app, "ann").await;
    let (mut bob, _) = join(&app, "bob").await;
    const COUNT: u64 = 200;
    // All sent before any ack is read: the server pipelines them.
    for id in 0..COUNT {
        let packet = json!(["message:send", {"room": "general", "text": format!("m{id}")}]);
        ann.send_raw(&format!("42{id}{packet}")).await;
    }
    let mut acked = 0;
    while acked < COUNT {
        let packet = ann.next_packet().await;
        let Some(rest) = packet.strip_prefix("43") else {
            continue;
        };
        let expected = format!("{acked}[");
        assert!(
            rest.starts_with(&expected),
            "ack {acked} expected, got {packet}"
        );
        let args: Value = serde_json::from_str(&rest[expected.len() - 1..]).expect("ack");
        assert_eq!(args[0]["seq"], json!(acked + 1), "{packet}");
        acked += 1;
    }
    for seq in 1..=COUNT {
        let message = next_named(&mut bob, "message:new").await;
        assert_eq!(message["seq"], json!(seq));
        assert_eq!(message["text"], json!(format!("m{}", seq - 1)));
    }
    let history = bob
        .request("message:history", json!({"room": "general", "limit": 1000}))
        .await;
    assert_eq!(
        history["messages"].as_array().map(Vec::len),
        Some(COUNT as usize)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tutorial_users_last_messages_come_before_its_departure() {
    let mut config = test_config();
    config.max_messages_per_second = 0;
    let app = TestApp::start_with(config).await;
    let mut watcher = app.client().await;
    watcher.join_as("watcher").await;
    let mut talker = app.client().await;
    talker.join_as("talker").await;
    for index in 0..50 {
        talker.emit("sendChat", json!([format!("t{index}")])).await;
    }
    // No goodbye, but no reset either: a reset lets the kernel discard bytes the server had
    // not read yet, which no server can deliver.
    talker.hang_up().await;
    let mut said = Vec::new();
    loop {
        let (event, args) = watcher.next_event().await;
        if event != "updateChat" {
            continue;
        }
        if args == [json!("Server"), json!("talker has disconnected.")] {
            break;
        }
        if args[0] == json!("talker") {
            said.push(args[1].as_str().expect("text").to_owned());
        }
    }
    let expected: Vec<String> = (0..50).map(|index| format!("t{index}")).collect();
    assert_eq!(
        said, expected,
        "every message, in order, before the departure"
    );
}
