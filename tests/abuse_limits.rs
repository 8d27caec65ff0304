//! Limits that hold against a hostile or careless client, over the wire: room quotas per
//! user and server, a refused request leaves no trace, names held only by clients that got
//! their token, new users per address, NUL characters, resends over the rate, and the
//! environment's switches.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use sqlx::Connection;
use support::{Client, TestApp, test_config};

async fn join(app: &TestApp, name: &str) -> (Client, String) {
    let (client, session) = Client::connect_with_auth(app.addr, json!({"name": name}))
        .await
        .unwrap_or_else(|error| panic!("{name} refused: {error}"));
    let token = session["token"].as_str().expect("a token").to_owned();
    (client, token)
}

async fn tab(app: &TestApp, token: &str) -> Client {
    Client::connect_with_auth(app.addr, json!({"token": token}))
        .await
        .unwrap_or_else(|error| panic!("token refused: {error}"))
        .0
}

fn code(answer: &Value) -> &str {
    answer["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("expected an error, got {answer}"))
}

/// Rows of `sql` (one text column) in the app's database (the SQLite file, or the
/// PostgreSQL schema of the PostgreSQL leg), read behind its back.
async fn db_texts(db: &str, sql: &str) -> Vec<String> {
    if db.starts_with("postgres") {
        let mut connection = sqlx::PgConnection::connect(db)
            .await
            .expect("connect to PostgreSQL");
        let rows: Vec<(String,)> = sqlx::query_as(sql)
            .fetch_all(&mut connection)
            .await
            .expect("query PostgreSQL");
        let _ = connection.close().await;
        return rows.into_iter().map(|(text,)| text).collect();
    }
    let mut connection = sqlx::SqliteConnection::connect(&format!("sqlite://{db}?mode=ro"))
        .await
        .expect("open the SQLite file");
    let rows: Vec<(String,)> = sqlx::query_as(sql)
        .fetch_all(&mut connection)
        .await
        .expect("query the SQLite file");
    let _ = connection.close().await;
    rows.into_iter().map(|(text,)| text).collect()
}

#[tokio::test]
async fn one_user_with_many_sockets_creates_at_most_its_quota_and_others_still_can() {
    let mut config = test_config();
    config.max_rooms_per_user = 3;
    let app = TestApp::start_with(config).await;
    let (ann, token) = join(&app, "ann").await;
    // Four sockets of one user: the quota is the user's, not each connection's.
    let mut sockets = vec![ann, tab(&app, &token).await, tab(&app, &token).await];
    sockets.push(tab(&app, &token).await);
    let mut created = 0;
    let mut refused = Vec::new();
    for index in 0..8 {
        let socket = &mut sockets[index % 4];
        let answer = socket
            .request("room:create", json!({"room": format!("spam-{index}")}))
            .await;
        if answer["ok"] == json!(true) {
            created += 1;
        } else {
            refused.push(code(&answer).to_owned());
        }
    }
    assert_eq!(created, 3, "refused: {refused:?}");
    assert!(
        refused.iter().all(|code| code == "limit_reached"),
        "{refused:?}"
    );
    // The quota is per user: someone else creates rooms as before.
    let (mut bob, _) = join(&app, "bob").await;
    let answer = bob.request("room:create", json!({"room": "bobs"})).await;
    assert_eq!(answer["ok"], json!(true), "{answer}");
}

#[tokio::test]
async fn a_refused_room_creation_stores_no_room_and_no_membership() {
    let mut config = test_config();
    // `general` and one more.
    config.max_rooms = 2;
    let db = config.db.clone();
    let app = TestApp::start_with(config).await;
    let (mut ann, _) = join(&app, "ann").await;
    let (mut bob, _) = join(&app, "bob").await;
    let first = ann.request("room:create", json!({"room": "one"})).await;
    assert_eq!(first["ok"], json!(true), "{first}");
    let over = ann.request("room:create", json!({"room": "two"})).await;
    assert_eq!(code(&over), "limit_reached", "not retryable: {over}");
    // Someone else's room, by name: refused, and bob is not made a member of ann's room.
    let taken = bob.request("room:create", json!({"room": "ONE"})).await;
    assert_eq!(code(&taken), "room_exists", "{taken}");

    let rooms = db_texts(&db, "SELECT name FROM rooms ORDER BY name").await;
    assert!(!rooms.contains(&"two".to_owned()), "{rooms:?}");
    let members = db_texts(
        &db,
        "SELECT u.name || ':' || m.room FROM room_members m JOIN users u ON u.user_id = m.user_id \
         ORDER BY 1",
    )
    .await;
    assert_eq!(members, ["ann:one"]);
    let listed = bob.request("room:list", json!({})).await;
    let names: Vec<&str> = listed["rooms"]
        .as_array()
        .expect("rooms")
        .iter()
        .filter_map(|room| room["name"].as_str())
        .collect();
    assert_eq!(names, ["general", "one"]);
}

#[tokio::test]
async fn two_users_creating_one_room_at_once_leave_one_creator_and_one_membership() {
    let config = test_config();
    let db = config.db.clone();
    let app = TestApp::start_with(config).await;
    let mut racers = Vec::new();
    for index in 0..6 {
        racers.push(join(&app, &format!("racer{index}")).await.0);
    }
    let answers = futures_util::future::join_all(
        racers
            .iter_mut()
            .map(|racer| racer.request("room:create", json!({"room": "contested"}))),
    )
    .await;
    let winners = answers.iter().filter(|a| a["ok"] == json!(true)).count();
    assert_eq!(winners, 1, "{answers:?}");
    for answer in answers.iter().filter(|a| a["ok"] != json!(true)) {
        assert_eq!(code(answer), "room_exists");
    }
    let members = db_texts(
        &db,
        "SELECT user_id FROM room_members WHERE room = 'contested'",
    )
    .await;
    assert_eq!(members.len(), 1, "{members:?}");
}

#[tokio::test]
async fn room_list_pages_with_a_cursor() {
    let app = TestApp::start().await;
    let (mut ann, _) = join(&app, "ann").await;
    for room in ["a1", "b2", "c3", "d4"] {
        let answer = ann.request("room:create", json!({"room": room})).await;
        assert_eq!(answer["ok"], json!(true), "{answer}");
    }
    let mut cursor = Value::Null;
    let mut pages = Vec::new();
    loop {
        let page = ann
            .request("room:list", json!({"cursor": cursor, "limit": 2}))
            .await;
        assert_eq!(page["ok"], json!(true), "{page}");
        let names: Vec<String> = page["rooms"]
            .as_array()
            .expect("rooms")
            .iter()
            .map(|room| room["name"].as_str().expect("name").to_owned())
            .collect();
        assert!(names.len() <= 2, "{page}");
        pages.push(names);
        if page["more"] == json!(false) {
            assert_eq!(page["cursor"], Value::Null);
            break;
        }
        cursor = page["cursor"].clone();
        assert!(pages.len() < 10, "paging never ends");
    }
    assert_eq!(pages, [vec!["a1", "b2"], vec!["c3", "d4"], vec!["general"]]);
    let bad = ann
        .request("room:list", json!({"cursor": "<b>", "limit": 2}))
        .await;
    assert_eq!(code(&bad), "invalid_argument");
}

#[tokio::test]
async fn a_connection_reset_while_it_is_being_connected_does_not_keep_the_name() {
    let app = TestApp::start().await;
    // The CONNECT arrives (data before the close), and the connection is gone while the
    // server stores the new user: the client can never learn its token.
    for _ in 0..3 {
        let mut squatter = Client::open(app.addr).await;
        squatter.send_raw(r#"40{"name":"squatter"}"#).await;
        squatter.drop_abruptly();
    }
    // Wait until the server is done with them: their new users were stored meanwhile.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match Client::connect_with_auth(app.addr, json!({"name": "squatter"})).await {
            Ok((_, session)) => {
                assert_eq!(session["user"]["name"], json!("squatter"));
                break;
            }
            Err(error) => {
                assert_eq!(error["data"]["code"], json!("name_taken"), "{error}");
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the name stayed taken: {error}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[tokio::test]
async fn a_client_that_got_its_token_keeps_its_name_when_its_connection_drops_at_once() {
    let mut config = test_config();
    config.presence_grace_ms = 100;
    let app = TestApp::start_with(config).await;
    let (mut watcher, _) = join(&app, "watcher").await;
    let subscribed = watcher.request("presence:subscribe", json!({})).await;
    assert_eq!(subscribed["ok"], json!(true), "{subscribed}");
    let (ann, token) = join(&app, "ann").await;
    ann.drop_abruptly();
    loop {
        let (event, args) = watcher.next_event().await;
        if event == "presence" && args[0] == json!({"name": "ann", "online": false}) {
            break;
        }
    }
    let taken = Client::connect_with_auth(app.addr, json!({"name": "ann"})).await;
    assert_eq!(
        taken.err().map(|e| e["data"]["code"].clone()),
        Some(json!("name_taken"))
    );
    tab(&app, &token).await;
}

#[tokio::test]
async fn new_users_from_one_address_are_bounded_per_minute() {
    let mut config = test_config();
    config.max_new_users_per_ip = 2;
    let app = TestApp::start_with(config).await;
    let (_ann, token) = join(&app, "ann").await;
    let _bob = join(&app, "bob").await;
    let refused = Client::connect_with_auth(app.addr, json!({"name": "carol"})).await;
    let error = refused
        .err()
        .expect("a third new user within the minute is refused");
    assert_eq!(error["data"]["code"], json!("rate_limited"), "{error}");
    // Returning with a token is not a new user.
    tab(&app, &token).await;
}

#[tokio::test]
async fn a_nul_character_is_an_invalid_message_in_both_protocols() {
    let app = TestApp::start().await;
    let (mut ann, _) = join(&app, "ann").await;
    for text in ["\u{0}", "before\u{0}after"] {
        let answer = ann
            .request("message:send", json!({"room": "general", "text": text}))
            .await;
        assert_eq!(code(&answer), "invalid_message", "{answer}");
    }
    let (mut bob, _) = join(&app, "bob").await;
    let dm = ann
        .request("dm:send", json!({"to": "bob", "text": "x\u{0}"}))
        .await;
    assert_eq!(code(&dm), "invalid_message", "{dm}");
    let id = ann
        .request(
            "message:send",
            json!({"room": "general", "text": "ok", "clientId": "c\u{0}"}),
        )
        .await;
    assert_eq!(code(&id), "invalid_argument", "{id}");

    let mut tutorial = app.client().await;
    tutorial.join_as("tut").await;
    tutorial.emit("sendChat", json!(["a\u{0}b"])).await;
    tutorial
        .expect(
            "updateChat",
            json!(["Server", "a message cannot contain the NUL character"]),
        )
        .await;
    // Nothing was stored or delivered: the next message is the first.
    let first = bob
        .request("message:send", json!({"room": "general", "text": "first"}))
        .await;
    assert_eq!(first["seq"], json!(1), "{first}");
}

#[tokio::test]
async fn a_resend_over_the_rate_gets_its_original_ack() {
    let mut config = test_config();
    config.max_messages_per_second = 1; // bursts of 2
    let app = TestApp::start_with(config).await;
    let (mut ann, _) = join(&app, "ann").await;
    let original = ann
        .request(
            "message:send",
            json!({"room": "general", "text": "hello", "clientId": "c-1"}),
        )
        .await;
    assert_eq!(original["ok"], json!(true), "{original}");
    let mut limited = None;
    for index in 0..5 {
        let answer = ann
            .request(
                "message:send",
                json!({"room": "general", "text": "more", "clientId": format!("m-{index}")}),
            )
            .await;
        if answer["ok"] != json!(true) {
            limited = Some(answer);
            break;
        }
    }
    let limited = limited.expect("the rate is reached");
    assert_eq!(code(&limited), "rate_limited");
    // Still over the rate: the resend of a stored message is answered as the first time.
    let resent = ann
        .request(
            "message:send",
            json!({"room": "general", "text": "hello", "clientId": "c-1"}),
        )
        .await;
    assert_eq!(resent, original);
    // A message never stored is still refused while over the rate.
    let unknown = ann
        .request(
            "message:send",
            json!({"room": "general", "text": "new", "clientId": "never-sent"}),
        )
        .await;
    assert_eq!(code(&unknown), "rate_limited", "{unknown}");
}

/// Start the binary with one environment variable set; returns it and its address, or the
/// exit status if it did not start.
async fn start_with_env(
    key: &str,
    value: &str,
) -> Result<(std::process::Child, std::net::SocketAddr), std::process::ExitStatus> {
    let db = support::temp_db_path();
    support::try_start_binary(&["--db", &db], &[(key, value)]).await
}

#[tokio::test]
async fn boolean_environment_variables_accept_one_zero_yes_no_true_false() {
    for (value, on) in [
        ("1", true),
        ("yes", true),
        ("true", true),
        ("0", false),
        ("no", false),
        ("false", false),
    ] {
        let (mut child, addr) = start_with_env("CHINWAG_CONNECTION_STATE_RECOVERY", value)
            .await
            .unwrap_or_else(|status| panic!("refused to start with {value:?}: {status}"));
        let mut client = Client::open(addr).await;
        client.send_raw("40").await;
        let reply = client.next_packet().await;
        let _ = child.kill();
        let _ = child.wait();
        // With recovery on, the CONNECT reply carries a private session id.
        assert_eq!(reply.contains("\"pid\""), on, "{value:?}: {reply}");
    }
    let refused = start_with_env("CHINWAG_CONNECTION_STATE_RECOVERY", "maybe").await;
    assert!(refused.is_err(), "an unclear value is refused");
}
