//! Cluster mode: several chinwag nodes on one PostgreSQL schema and one Redis key prefix,
//! clients on different nodes. Needs PostgreSQL (`CHINWAG_TEST_POSTGRES_URL`) and Redis
//! (`CHINWAG_TEST_REDIS_URL`); fails when either is missing.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use chinwag::Config;
use support::{Client, TestApp, fresh_postgres_schema, redis_url};

/// Far above a bus hop on loopback (well under a millisecond), far below the 2 s a node
/// used to wait for a message stored elsewhere.
const QUICKLY: Duration = Duration::from_millis(1_000);

/// One cluster: `n` nodes sharing a fresh schema and a fresh key prefix.
async fn cluster(n: usize) -> Vec<TestApp> {
    let db = fresh_postgres_schema();
    let prefix = format!("test{:016x}", rand::random::<u64>());
    let mut nodes = Vec::new();
    for _ in 0..n {
        let mut config = Config::defaults();
        config.db = db.clone();
        config.redis_url = Some(redis_url());
        config.redis_prefix = prefix.clone();
        // The latency measurement sends as fast as it can.
        config.max_messages_per_second = 0;
        nodes.push(TestApp::start_with(config).await);
    }
    nodes
}

async fn join(node: &TestApp, name: &str) -> Client {
    Client::connect_with_auth(node.addr, json!({"name": name}))
        .await
        .unwrap_or_else(|error| panic!("{name} connects: {error}"))
        .0
}

/// Send to `general`; returns the acknowledged sequence.
async fn send(client: &mut Client, text: &str) -> i64 {
    let ack = client
        .request("message:send", json!({"room": "general", "text": text}))
        .await;
    ack["seq"]
        .as_i64()
        .unwrap_or_else(|| panic!("acknowledged: {ack}"))
}

/// The next `message:new`, skipping other events.
async fn next_message(client: &mut Client) -> Value {
    loop {
        let (event, mut args) = client.next_event().await;
        if event == "message:new" {
            return args.remove(0);
        }
    }
}

fn seq(message: &Value) -> i64 {
    message["seq"].as_i64().unwrap_or(-1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_sent_on_one_node_reaches_clients_on_the_others_once_in_order_and_quickly() {
    let nodes = cluster(3).await;
    let mut ann = join(&nodes[0], "ann").await;
    let mut bob = join(&nodes[1], "bob").await;
    let mut cat = join(&nodes[2], "cat").await;
    // Taking turns: every message reaches the two other nodes' clients quickly.
    for round in 0..5 {
        for sender in 0..3 {
            let text = format!("round {round} from {sender}");
            let clients = [&mut ann, &mut bob, &mut cat];
            let [a, b, c] = clients;
            let (from, others): (&mut Client, [&mut Client; 2]) = match sender {
                0 => (a, [b, c]),
                1 => (b, [a, c]),
                _ => (c, [a, b]),
            };
            let sent = Instant::now();
            let seq_sent = send(from, &text).await;
            assert_eq!(seq(&next_message(from).await), seq_sent, "own copy");
            for other in others {
                let got = next_message(other).await;
                assert_eq!((seq(&got), got["text"].as_str()), (seq_sent, Some(&*text)));
                assert!(
                    sent.elapsed() < QUICKLY,
                    "delivered across nodes in {:?}",
                    sent.elapsed()
                );
            }
        }
    }
    // Two nodes at once: cat, on a third, gets every message once, in sequence order,
    // without waiting for gaps.
    let burst = 20;
    let (first, second) = tokio::join!(
        async {
            let mut seqs = Vec::new();
            for i in 0..burst {
                seqs.push(send(&mut ann, &format!("ann {i}")).await);
            }
            seqs
        },
        async {
            let mut seqs = Vec::new();
            for i in 0..burst {
                seqs.push(send(&mut bob, &format!("bob {i}")).await);
            }
            seqs
        }
    );
    let acked = Instant::now();
    let mut expected: Vec<i64> = first.into_iter().chain(second).collect();
    expected.sort_unstable();
    let mut received = Vec::new();
    while received.len() < expected.len() {
        received.push(seq(&next_message(&mut cat).await));
    }
    assert!(
        acked.elapsed() < QUICKLY,
        "the rest arrived {:?} after the last ack",
        acked.elapsed()
    );
    assert_eq!(received, expected, "once each, in sequence order");
    assert_eq!(
        expected,
        (16..16 + 2 * burst).collect::<Vec<i64>>(),
        "gapless"
    );
    for node in nodes {
        node.stop().await.expect("stop");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_on_another_node_returns_exactly_what_was_written_there() {
    let nodes = cluster(2).await;
    let mut ann = join(&nodes[0], "ann").await;
    let mut bob = join(&nodes[1], "bob").await;
    // Bob's node has read `general` (its tail starts), then Ann writes on hers.
    let since = send(&mut bob, "before").await;
    let mut written = Vec::new();
    for i in 0..5 {
        written.push(send(&mut ann, &format!("missed {i}")).await);
    }
    let answer = bob
        .request("sync", json!({"rooms": {"general": since}}))
        .await;
    let got: Vec<i64> = answer["rooms"]["general"]
        .as_array()
        .unwrap_or_else(|| panic!("a sync answer: {answer}"))
        .iter()
        .map(seq)
        .collect();
    assert_eq!(got, written);
    assert_eq!(answer["more"], json!(false));
    // And from scratch on a client that was never on Bob's node before.
    let mut cat = join(&nodes[1], "cat").await;
    let answer = cat.request("sync", json!({"rooms": {"general": 0}})).await;
    assert_eq!(
        answer["rooms"]["general"].as_array().map(Vec::len),
        Some(6),
        "{answer}"
    );
    for node in nodes {
        node.stop().await.expect("stop");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_created_on_one_node_is_joinable_on_another_and_cannot_be_created_twice() {
    let nodes = cluster(3).await;
    let mut ann = join(&nodes[0], "ann").await;
    let mut bob = join(&nodes[1], "bob").await;
    let mut cat = join(&nodes[2], "cat").await;
    let created = ann.request("room:create", json!({"room": "rust"})).await;
    assert_eq!(created, json!({"ok": true, "room": "rust"}));
    let joined = bob.request("room:join", json!({"room": "rust"})).await;
    assert_eq!(joined["room"], json!("rust"), "{joined}");
    let again = cat.request("room:create", json!({"room": "rust"})).await;
    assert_eq!(again["error"]["code"], json!("room_exists"), "{again}");
    let again = ann.request("room:create", json!({"room": "RUST"})).await;
    assert_eq!(again["error"]["code"], json!("room_exists"), "{again}");
    // Ann, on the node that created it, hears of Bob's join, and lists him.
    loop {
        let (event, args) = ann.next_event().await;
        if event == "room:member" && args[0]["name"] == "bob" {
            assert_eq!(
                args[0],
                json!({"room": "rust", "name": "bob", "joined": true})
            );
            break;
        }
    }
    let members = ann.request("room:members", json!({"room": "rust"})).await;
    assert_eq!(members["total"], json!(2), "{members}");
    // Cat's node learnt the room too: its list counts both members (soon: the events
    // travel to every node at once, not necessarily in the same time).
    let asked = Instant::now();
    loop {
        let list = cat.request("room:list", json!({})).await;
        let members = list["rooms"]
            .as_array()
            .and_then(|rooms| rooms.iter().find(|room| room["name"] == "rust"))
            .map(|rust| rust["members"].clone());
        if members == Some(json!(2)) {
            break;
        }
        assert!(asked.elapsed() < QUICKLY, "rust on the third node: {list}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for node in nodes {
        node.stop().await.expect("stop");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_reports_the_database_and_redis_apart() {
    let nodes = cluster(1).await;
    let ready = nodes[0].get("/readyz", &[]).await;
    assert_eq!(ready.status, 200);
    let body: Value = serde_json::from_str(&ready.text()).unwrap_or_default();
    assert_eq!(
        body,
        json!({"status": "ready", "database": "ok", "redis": "ok"})
    );
    let single = TestApp::start().await;
    let ready = single.get("/readyz", &[]).await;
    assert_eq!(ready.status, 200);
    let body: Value = serde_json::from_str(&ready.text()).unwrap_or_default();
    assert_eq!(body, json!({"status": "ready", "database": "ok"}));
    single.stop().await.expect("stop");
    for node in nodes {
        node.stop().await.expect("stop");
    }
}

/// The time from `message:send` until a client on the sender's node and one on another
/// node have the `message:new`, for 300 messages sent one after another; returns both,
/// sorted.
async fn delivery_latency(nodes: &[TestApp]) -> (Vec<Duration>, Vec<Duration>) {
    let mut sender = join(&nodes[0], "sender").await;
    let mut near = join(&nodes[0], "near").await;
    let mut far = join(&nodes[1], "far").await;
    let (mut same, mut across) = (Vec::new(), Vec::new());
    for i in 0..300 {
        let sent = Instant::now();
        sender
            .emit(
                "message:send",
                json!([{"room": "general", "text": format!("{i}")}]),
            )
            .await;
        // Whichever comes first is read first; the other has been waiting meanwhile.
        tokio::join!(
            async {
                next_message(&mut near).await;
                same.push(sent.elapsed());
            },
            async {
                next_message(&mut far).await;
                across.push(sent.elapsed());
            }
        );
    }
    same.sort_unstable();
    across.sort_unstable();
    (same, across)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_across_nodes_costs_about_one_bus_hop() {
    let nodes = cluster(2).await;
    let (same, across) = delivery_latency(&nodes).await;
    let pct = |times: &[Duration], p: usize| times[(times.len() * p / 100).min(times.len() - 1)];
    println!(
        "delivery latency, 300 messages: same node p50 {:?} p99 {:?}; other node p50 {:?} p99 {:?}",
        pct(&same, 50),
        pct(&same, 99),
        pct(&across, 50),
        pct(&across, 99)
    );
    assert!(
        pct(&across, 99) < QUICKLY,
        "p99 across nodes {:?}",
        pct(&across, 99)
    );
    for node in nodes {
        node.stop().await.expect("stop");
    }
}

/// Store a message in `general` behind every node's back, as a node whose bus event was
/// lost would have: no node hears of it.
async fn store_unannounced(db: &str, text: &str) -> i64 {
    use chinwag::domain::{Draft, MessageBody, Place, RoomName, UserId, UserName};
    let mut config = Config::defaults();
    config.db = db.to_owned();
    let history = chinwag::open_history(&config)
        .await
        .expect("open the store");
    let draft = Draft {
        author: UserId::new("ghost-id"),
        author_name: UserName::parse("ghost").expect("a name"),
        place: Place::Room(RoomName::general()),
        body: MessageBody::parse(text, 100).expect("a body"),
    };
    let (message, _) = history.append(draft, None, 1_000).await.expect("stored");
    history.close().await;
    message.seq
}

/// Ann on `sender`, Bob on `receiver`; a message Bob's node never hears of is read from the
/// store as soon as the next one shows the gap.
async fn check_gap_repair(sender: &TestApp, receiver: &TestApp, db: &str) {
    let mut ann = join(sender, "ann").await;
    let mut bob = join(receiver, "bob").await;
    let first = send(&mut ann, "one").await;
    assert_eq!(seq(&next_message(&mut bob).await), first);
    let lost = store_unannounced(db, "two").await;
    assert_eq!(lost, first + 1);
    let sent = Instant::now();
    let third = send(&mut ann, "three").await;
    let got = next_message(&mut bob).await;
    assert_eq!((seq(&got), got["text"].clone()), (lost, json!("two")));
    assert_eq!(seq(&next_message(&mut bob).await), third);
    assert!(
        sent.elapsed() < QUICKLY,
        "the gap took {:?} to repair",
        sent.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_the_bus_never_brought_is_read_from_the_store_in_a_fraction_of_a_second() {
    let db = fresh_postgres_schema();
    let prefix = format!("test{:016x}", rand::random::<u64>());
    let mut nodes = Vec::new();
    for _ in 0..2 {
        let mut config = Config::defaults();
        config.db = db.clone();
        config.redis_url = Some(redis_url());
        config.redis_prefix = prefix.clone();
        nodes.push(TestApp::start_with(config).await);
    }
    check_gap_repair(&nodes[0], &nodes[1], &db).await;
    // Operators see it: the receiver counted the repair, the sender what it published.
    let receiver = metric_values(&nodes[1]).await;
    assert!(receiver["chinwag_gap_repairs_total"] >= 1, "{receiver:?}");
    assert!(
        receiver["chinwag_gap_repaired_messages_total"] >= 1,
        "{receiver:?}"
    );
    assert_eq!(receiver["chinwag_cluster_bus_connected"], 1, "{receiver:?}");
    let sender = metric_values(&nodes[0]).await;
    assert!(
        sender[r#"chinwag_cluster_bus_events_total{outcome="published"}"#] >= 2,
        "{sender:?}"
    );
    assert!(
        receiver[r#"chinwag_cluster_bus_events_total{outcome="received"}"#] >= 2,
        "{receiver:?}"
    );
    for node in nodes {
        node.stop().await.expect("stop");
    }
}

/// A node's `/metrics` samples, by series (name and labels), as integers.
async fn metric_values(node: &TestApp) -> std::collections::HashMap<String, u64> {
    let metrics = node.get("/metrics", &[]).await;
    assert_eq!(metrics.status, 200);
    metrics
        .text()
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse::<f64>().ok()? as u64))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_repairs_a_gap_from_the_store_too() {
    let db = fresh_postgres_schema();
    let mut config = Config::defaults();
    config.db = db.clone();
    let node = TestApp::start_with(config).await;
    check_gap_repair(&node, &node, &db).await;
    node.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_message_reaches_its_recipient_on_another_node() {
    let nodes = cluster(2).await;
    let mut ann = join(&nodes[0], "ann").await;
    let mut bob = join(&nodes[1], "bob").await;
    let ack = ann
        .request("dm:send", json!({"to": "bob", "text": "psst"}))
        .await;
    assert_eq!(ack["seq"], json!(1), "{ack}");
    let received = loop {
        let (event, mut args) = bob.next_event().await;
        if event == "dm:new" {
            break args.remove(0);
        }
    };
    assert_eq!(
        (&received["from"], &received["with"], &received["text"]),
        (&json!("ann"), &json!("ann"), &json!("psst"))
    );
    let answer = bob.request("sync", json!({"direct": {"ann": 0}})).await;
    assert_eq!(
        answer["direct"]["ann"].as_array().map(Vec::len),
        Some(1),
        "{answer}"
    );
    for node in nodes {
        node.stop().await.expect("stop");
    }
}

/// A Redis of this test's own (the shared one must not be stopped), on a free port.
struct OwnRedis {
    port: u16,
    process: std::process::Child,
}

impl OwnRedis {
    fn start_on(port: u16) -> Self {
        let process = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server is needed for this test");
        Self { port, process }
    }

    async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let redis = Self::start_on(port);
        redis.wait_until_up().await;
        redis
    }

    async fn wait_until_up(&self) {
        let started = Instant::now();
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_err()
        {
            assert!(started.elapsed() < Duration::from_secs(10), "redis starts");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn stop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn readiness(node: &TestApp) -> (u16, Value) {
    let ready = node.get("/readyz", &[]).await;
    (
        ready.status,
        serde_json::from_str(&ready.text()).unwrap_or_default(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_messages_are_still_stored_and_delivered_and_the_bus_resumes_when_it_is_back()
{
    let mut redis = OwnRedis::start().await;
    let db = fresh_postgres_schema();
    let mut nodes = Vec::new();
    for _ in 0..2 {
        let mut config = Config::defaults();
        config.db = db.clone();
        config.redis_url = Some(redis.url());
        nodes.push(TestApp::start_with(config).await);
    }
    let mut ann = join(&nodes[0], "ann").await;
    let mut bob = join(&nodes[1], "bob").await;
    let one = send(&mut ann, "one").await;
    assert_eq!(seq(&next_message(&mut bob).await), one);

    redis.stop();
    let (status, body) = readiness(&nodes[0]).await;
    assert_eq!(
        (status, body),
        (
            503,
            json!({"status": "unready", "database": "ok", "redis": "unavailable"})
        )
    );
    // Stored and acknowledged, delivered on its own node; the other node reads it from the
    // store (it polls while its bus is lost).
    let two = send(&mut ann, "two").await;
    assert_eq!(seq(&next_message(&mut ann).await), one);
    assert_eq!(seq(&next_message(&mut ann).await), two);
    assert_eq!(seq(&next_message(&mut bob).await), two);
    let three = send(&mut bob, "three").await;
    assert_eq!(seq(&next_message(&mut bob).await), three);
    assert_eq!(seq(&next_message(&mut ann).await), three);

    let back = OwnRedis::start_on(redis.port);
    back.wait_until_up().await;
    let started = Instant::now();
    for node in &nodes {
        while readiness(node).await.0 != 200 {
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "ready again once Redis is back"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Ready means subscribed again: live delivery is back.
    for text in ["four", "five"] {
        let sent = Instant::now();
        let sequence = send(&mut ann, text).await;
        assert_eq!(seq(&next_message(&mut bob).await), sequence);
        assert!(sent.elapsed() < QUICKLY, "{text} took {:?}", sent.elapsed());
    }
    for node in nodes {
        node.stop().await.expect("stop");
    }
}

#[tokio::test]
async fn redis_without_postgresql_is_refused_at_startup() {
    // Refused before the file would be opened: it is never created.
    let db = std::env::temp_dir()
        .join(format!("chinwag-refused-{:016x}.db", rand::random::<u64>()))
        .to_string_lossy()
        .into_owned();
    let refused = support::try_start_binary(&["--db", &db, "--redis-url", &redis_url()], &[]).await;
    match refused {
        Ok((mut child, _)) => {
            let _ = child.kill();
            panic!("chinwag started in cluster mode on {db}");
        }
        Err(status) => assert!(!status.success()),
    }
    assert!(!std::path::Path::new(&db).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_starts_keeps_the_tutorial_names_the_others_hold() {
    let db = fresh_postgres_schema();
    let mut config = Config::defaults();
    config.db = db;
    config.redis_url = Some(redis_url());
    config.redis_prefix = format!("test{:016x}", rand::random::<u64>());
    let a = TestApp::start_with(config.clone()).await;
    let mut tina = a.client().await;
    tina.join_as("tina").await;
    // B starts now: it frees the names its own last run's tutorial users held, not A's.
    let b = TestApp::start_with(config).await;
    let mut imposter = b.client().await;
    imposter.emit("addUser", json!(["Tina"])).await;
    let (event, args) = imposter.next_event().await;
    assert_eq!(event, "updateChat");
    assert!(
        args[1].as_str().is_some_and(|text| text.contains("taken")),
        "{args:?}"
    );
    a.stop().await.expect("stop a");
    b.stop().await.expect("stop b");
}
