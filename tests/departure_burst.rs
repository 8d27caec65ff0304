//! A burst of departures (a network blip drops every user at once) must not stop the server:
//! a tutorial watcher gets every leaver's notice and then one final user list, not one list
//! per departure (which cost O(departures × users) under the community lock), and
//! `/healthz` keeps answering meanwhile.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use support::{Client, TestApp, http_get, test_config};
use tokio::sync::Semaphore;

/// Full-protocol users that connect, then all drop at once.
const USERS: usize = 1_500;

/// Most user lists the watcher may get while the departures are announced: the sweep may
/// split them over a few ticks, but never one list per leaver.
const MAX_LISTS: usize = 10;

/// Generous: a loaded 2-core machine answers `/healthz` far sooner unless the server stalls.
const HEALTHZ_BOUND: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_departures_sends_one_final_list_and_does_not_stall_the_server() {
    let mut config = test_config();
    config.presence_grace_ms = 300;
    config.max_connections_per_ip = 10_000;
    config.max_new_users_per_ip = 0;
    config.relaxed_durability = true;
    let app = TestApp::start_with(config).await;
    let addr = app.addr;

    let gate = Arc::new(Semaphore::new(64));
    let mut joining = Vec::with_capacity(USERS);
    for index in 0..USERS {
        let gate = Arc::clone(&gate);
        joining.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await.expect("the gate stays open");
            let name = format!("burst{index}");
            match Client::connect_with_auth(addr, json!({ "name": name })).await {
                Ok((client, _session)) => client,
                Err(error) => panic!("{name} refused: {error}"),
            }
        }));
    }
    let mut users = Vec::with_capacity(USERS);
    for joined in joining {
        users.push(joined.await.expect("a user connects"));
    }

    let mut watcher = app.client().await;
    watcher.join_as("watcher").await;
    // The watcher joins once everyone is in: 1,500 arrivals would each send it a growing user
    // list (O(N²) bytes), and on a loaded machine it could fall behind and be disconnected as
    // a slow reader, which is the outbox bound working, not what this test is about. It
    // returns once every leaver was announced and the list holds only itself again.
    let watching = tokio::spawn(async move {
        let mut farewells = 0;
        let mut lists_after_first_farewell = 0;
        loop {
            let (event, args) = watcher.next_event().await;
            match event.as_str() {
                "updateChat" => {
                    let text = args.get(1).and_then(|text| text.as_str()).unwrap_or("");
                    if text.ends_with(" has disconnected.") {
                        farewells += 1;
                    }
                }
                "updateUsers" if farewells > 0 => {
                    lists_after_first_farewell += 1;
                    if args == [json!({"watcher": "watcher"})] {
                        return (farewells, lists_after_first_farewell);
                    }
                }
                _ => {}
            }
        }
    });

    // Everyone drops at once; probe the server while the departures are announced.
    for user in users {
        user.drop_abruptly();
    }
    let probing = tokio::spawn(async move {
        let mut worst = Duration::ZERO;
        for _ in 0..30 {
            let started = Instant::now();
            let health = tokio::time::timeout(HEALTHZ_BOUND * 2, http_get(addr, "/healthz", &[]))
                .await
                .expect("/healthz answers at all");
            assert_eq!(health.status, 200);
            worst = worst.max(started.elapsed());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        worst
    });

    let (farewells, lists) = tokio::time::timeout(Duration::from_secs(60), watching)
        .await
        .expect("every departure is announced within a minute")
        .expect("the watcher reads every event");
    assert_eq!(farewells, USERS, "every leaver is announced");
    assert!(
        lists <= MAX_LISTS,
        "{lists} user lists for {USERS} departures: expected one per batch"
    );
    let worst = probing.await.expect("the probe runs");
    assert!(
        worst < HEALTHZ_BOUND,
        "/healthz took {worst:?} while the departures were announced"
    );
}
