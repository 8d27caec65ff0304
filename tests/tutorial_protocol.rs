//! The tutorial protocol over the wire: a real chinwag on port 0, raw Socket.IO v5 frames.

mod support;

use serde_json::json;
use support::{Client, TestApp};

#[tokio::test]
async fn a_newcomer_is_greeted_the_others_are_told_and_everyone_gets_the_list() {
    let app = TestApp::start().await;
    let mut ann = app.client().await;
    ann.emit("addUser", json!(["ann"])).await;
    ann.expect("updateChat", json!(["Server", "you have connected"]))
        .await;
    ann.expect("updateUsers", json!([{"ann": "ann"}])).await;

    let mut bob = app.client().await;
    bob.emit("addUser", json!(["bob"])).await;
    bob.expect("updateChat", json!(["Server", "you have connected"]))
        .await;
    bob.expect("updateUsers", json!([{"ann": "ann", "bob": "bob"}]))
        .await;
    ann.expect("updateChat", json!(["Server", "bob has connected"]))
        .await;
    ann.expect("updateUsers", json!([{"ann": "ann", "bob": "bob"}]))
        .await;
}

#[tokio::test]
async fn a_message_reaches_everyone_including_the_sender_byte_for_byte() {
    let app = TestApp::start().await;
    let mut ann = app.client().await;
    ann.join_as("ann").await;
    let mut bob = app.client().await;
    bob.join_as("bob").await;
    ann.next_event().await; // "bob has connected"
    ann.next_event().await; // the new list

    for text in [
        "<img src=x onerror=alert(1)>",
        "&lt;not decoded&gt; \"quotes\" \\backslash\\ \u{2028} 😀 naïve",
        "   spaces kept   ",
    ] {
        bob.emit("sendChat", json!([text])).await;
        ann.expect("updateChat", json!(["bob", text])).await;
        bob.expect("updateChat", json!(["bob", text])).await;
    }
}

#[tokio::test]
async fn the_raw_frame_of_a_relayed_message_carries_the_markup_unescaped() {
    let app = TestApp::start().await;
    let mut ann = app.client().await;
    ann.join_as("ann").await;
    ann.send_raw(r#"42["sendChat","<img src=x onerror=alert(1)>"]"#)
        .await;
    assert_eq!(
        ann.next_packet().await,
        r#"42["updateChat","ann","<img src=x onerror=alert(1)>"]"#
    );
}

#[tokio::test]
async fn lowercase_and_camel_case_clients_chat_together_each_in_its_own_spelling() {
    let app = TestApp::start().await;
    let mut camel = app.client().await;
    camel.join_as("camel").await;

    let mut lower = app.client().await;
    lower.emit("adduser", json!(["lower"])).await;
    lower
        .expect("updatechat", json!(["Server", "you have connected"]))
        .await;
    lower
        .expect("updateusers", json!([{"camel": "camel", "lower": "lower"}]))
        .await;
    camel
        .expect("updateChat", json!(["Server", "lower has connected"]))
        .await;
    camel
        .expect("updateUsers", json!([{"camel": "camel", "lower": "lower"}]))
        .await;

    lower.emit("sendchat", json!(["hi from lower"])).await;
    lower
        .expect("updatechat", json!(["lower", "hi from lower"]))
        .await;
    camel
        .expect("updateChat", json!(["lower", "hi from lower"]))
        .await;

    // Either send spelling is accepted from anyone; answers keep the addUser spelling.
    camel.emit("sendchat", json!(["mixed"])).await;
    camel.expect("updateChat", json!(["camel", "mixed"])).await;
    lower.expect("updatechat", json!(["camel", "mixed"])).await;
    lower.emit("sendChat", json!(["mixed too"])).await;
    lower
        .expect("updatechat", json!(["lower", "mixed too"]))
        .await;
    camel
        .expect("updateChat", json!(["lower", "mixed too"]))
        .await;
}

#[tokio::test]
async fn a_taken_name_is_refused_in_any_case_and_the_list_stays_right() {
    let app = TestApp::start().await;
    let mut ann = app.client().await;
    ann.join_as("Ann").await;
    let mut impostor = app.client().await;
    impostor.emit("adduser", json!(["aNN"])).await;
    impostor
        .expect(
            "updatechat",
            json!([
                "Server",
                "the name aNN is already taken, please choose another"
            ]),
        )
        .await;

    // The impostor is not a member: it cannot speak and nobody heard of it.
    impostor.emit("sendChat", json!(["hello?"])).await;
    impostor
        .expect(
            "updateChat",
            json!(["Server", "choose a name before sending messages"]),
        )
        .await;
    impostor.emit("adduser", json!(["bea"])).await;
    impostor
        .expect("updatechat", json!(["Server", "you have connected"]))
        .await;
    impostor
        .expect("updateusers", json!([{"Ann": "Ann", "bea": "bea"}]))
        .await;
    ann.expect("updateChat", json!(["Server", "bea has connected"]))
        .await;
    ann.expect("updateUsers", json!([{"Ann": "Ann", "bea": "bea"}]))
        .await;
}

#[tokio::test]
async fn sending_before_adding_gets_an_error_only_for_that_socket() {
    let app = TestApp::start().await;
    let mut ann = app.client().await;
    ann.join_as("ann").await;
    let mut anonymous = app.client().await;
    anonymous.emit("sendchat", json!(["undefined?"])).await;
    anonymous
        .expect(
            "updatechat",
            json!(["Server", "choose a name before sending messages"]),
        )
        .await;

    // Nothing reached ann: the next thing she hears is her own message.
    ann.emit("sendChat", json!(["barrier"])).await;
    ann.expect("updateChat", json!(["ann", "barrier"])).await;
}

#[tokio::test]
async fn invalid_and_reserved_names_are_refused_with_a_reason() {
    let app = TestApp::start().await;
    let mut client = app.client().await;
    let cases = [
        (
            json!(["<b>x</b>"]),
            "a name may contain only letters, digits, spaces and _ - .",
        ),
        (json!(["   "]), "a name must have 1 to 32 characters"),
        (
            json!(["x".repeat(33)]),
            "a name must have 1 to 32 characters",
        ),
        (json!(["sErVeR"]), "the name Server is reserved"),
    ];
    for (args, reason) in cases {
        client.emit("addUser", args).await;
        client.expect("updateChat", json!(["Server", reason])).await;
    }
    client.join_as("  Zoë Ω-7.x_y  ").await;
}

#[tokio::test]
async fn adding_oneself_again_is_a_no_op_and_taking_another_name_is_refused() {
    let app = TestApp::start().await;
    let mut ann = app.client().await;
    ann.join_as("ann").await;
    let mut bob = app.client().await;
    bob.join_as("bob").await;
    ann.next_event().await;
    ann.next_event().await;

    ann.emit("addUser", json!(["ann"])).await;
    ann.emit("addUser", json!(["anna"])).await;
    ann.expect(
        "updateChat",
        json!(["Server", "you are already in the chat as ann"]),
    )
    .await;

    // bob heard nothing of either attempt: his next event is ann's message.
    ann.emit("sendChat", json!(["still ann"])).await;
    ann.expect("updateChat", json!(["ann", "still ann"])).await;
    bob.expect("updateChat", json!(["ann", "still ann"])).await;
}

#[tokio::test]
async fn arguments_of_the_wrong_type_get_an_error_and_break_nothing() {
    let app = TestApp::start().await;
    let mut ann = app.client().await;
    ann.join_as("ann").await;
    let mut mallory = app.client().await;

    for frame in [
        r#"42["addUser",{"toString":"x"}]"#,
        r#"42["addUser",["ann"]]"#,
        r#"42["addUser",42]"#,
        r#"42["addUser",null]"#,
        r#"42["addUser"]"#,
        r#"42["adduser",true]"#,
    ] {
        mallory.send_raw(frame).await;
        let (event, args) = mallory.next_event().await;
        assert_eq!(event.to_lowercase(), "updatechat", "after {frame}");
        assert_eq!(
            args,
            [json!("Server"), json!("a name must be text")],
            "after {frame}"
        );
    }
    mallory.join_as("mallory").await;
    for frame in [
        r#"42["sendChat",{"toString":"x"}]"#,
        r#"42["sendChat",["hi"]]"#,
        r#"42["sendChat",7]"#,
        r#"42["sendChat"]"#,
    ] {
        mallory.send_raw(frame).await;
        mallory
            .expect("updateChat", json!(["Server", "a message must be text"]))
            .await;
    }
    mallory.emit("sendChat", json!(["x".repeat(4_001)])).await;
    mallory
        .expect(
            "updateChat",
            json!(["Server", "a message can have at most 4000 characters"]),
        )
        .await;
    mallory.emit("sendChat", json!([""])).await;
    mallory
        .expect("updateChat", json!(["Server", "a message cannot be empty"]))
        .await;

    // The server still works for everyone, and ann saw only mallory's arrival.
    ann.expect("updateChat", json!(["Server", "mallory has connected"]))
        .await;
    ann.next_event().await;
    mallory.emit("sendChat", json!(["x".repeat(4_000)])).await;
    ann.expect("updateChat", json!(["mallory", "x".repeat(4_000)]))
        .await;
}

#[tokio::test]
async fn unknown_events_are_ignored() {
    let app = TestApp::start().await;
    let mut ann = app.client().await;
    ann.send_raw(r#"42["constructor",{}]"#).await;
    ann.send_raw(r#"42["__proto__"]"#).await;
    ann.join_as("ann").await;
}

#[tokio::test]
async fn a_dropped_connection_is_announced_with_the_new_list() {
    let app = TestApp::start().await;
    let mut ann = app.client().await;
    ann.join_as("ann").await;
    let mut bob = app.client().await;
    bob.join_as("bob").await;
    ann.next_event().await;
    ann.next_event().await;

    bob.drop_abruptly();
    ann.expect("updateChat", json!(["Server", "bob has disconnected."]))
        .await;
    ann.expect("updateUsers", json!([{"ann": "ann"}])).await;

    // The name is free again.
    let mut bob_again = app.client().await;
    bob_again.join_as("BOB").await;
}

#[tokio::test]
async fn a_clean_disconnect_is_announced_and_an_unnamed_one_is_not() {
    let app = TestApp::start().await;
    let mut ann = app.client().await;
    ann.join_as("ann").await;
    let mut lurker = app.client().await;
    let mut bob = app.client().await;
    bob.join_as("bob").await;
    ann.next_event().await;
    ann.next_event().await;

    lurker.send_raw("41").await;
    bob.send_raw("41").await;
    ann.expect("updateChat", json!(["Server", "bob has disconnected."]))
        .await;
    ann.expect("updateUsers", json!([{"ann": "ann"}])).await;
}

#[tokio::test]
async fn many_clients_receive_every_message_in_order() {
    let app = TestApp::start().await;
    let mut clients = Vec::new();
    for index in 0..20 {
        let mut client = app.client().await;
        client.join_as(&format!("user{index}")).await;
        clients.push(client);
    }
    // Everyone but the last saw later arrivals; read past them with a barrier message.
    let mut sender = Client::connect(app.addr).await;
    sender.join_as("sender").await;
    for index in 0..100 {
        sender
            .emit("sendChat", json!([format!("message {index}")]))
            .await;
    }
    for client in &mut clients {
        let mut next = 0;
        while next < 100 {
            let (event, args) = client.next_event().await;
            if event == "updateChat" && args.first() == Some(&json!("sender")) {
                assert_eq!(args[1], json!(format!("message {next}")));
                next += 1;
            }
        }
    }
}

/// Names are claimed in the store too (for nodes sharing it); a name is still free the moment
/// its user's departure is announced, before the store has released it.
#[tokio::test]
async fn a_name_is_free_again_the_moment_its_user_is_announced_gone() {
    let app = TestApp::start().await;
    let mut ann = app.client().await;
    ann.join_as("ann").await;
    for round in 0..20 {
        let mut bob = app.client().await;
        bob.join_as(if round % 2 == 0 { "bob" } else { "BOB" })
            .await;
        ann.next_event().await;
        ann.next_event().await;
        bob.send_raw("41").await;
        ann.expect(
            "updateChat",
            json!([
                "Server",
                format!(
                    "{} has disconnected.",
                    if round % 2 == 0 { "bob" } else { "BOB" }
                )
            ]),
        )
        .await;
        ann.expect("updateUsers", json!([{"ann": "ann"}])).await;
    }
}
