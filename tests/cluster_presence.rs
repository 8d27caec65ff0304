//! Presence across the nodes of a cluster: chinwag binaries on one fresh PostgreSQL schema
//! and one Redis key prefix per test. A user is online while any node has it; it goes
//! offline once, when the last node lets it go (after the grace period), also when that
//! node dies; a node restarting does not depart the users another node has. And
//! connection-state recovery across nodes: a client of a dead node resumes on another with
//! its socket id and in all its rooms (also those joined after it connected), but not while
//! its socket still lives elsewhere.
//!
//! Needs PostgreSQL (`CHINWAG_TEST_POSTGRES_URL`, default 127.0.0.1:5432) and Redis
//! (`CHINWAG_TEST_REDIS_URL`, default `redis://127.0.0.1:6379/0`): without them these tests
//! fail. Short heartbeat, expiry and grace settings keep them quick; the waits are
//! generous multiples of those, never tight.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use support::{Client, fresh_postgres_schema, try_start_binary};

/// The presence grace period of the test nodes.
const GRACE_MS: u64 = 800;
/// Heartbeat refresh and expiry of the test nodes.
const HEARTBEAT_MS: u64 = 200;
const NODE_TTL_MS: u64 = 1_000;

fn redis_url() -> String {
    std::env::var("CHINWAG_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379/0".to_owned())
}

/// One cluster of this test: its database and key prefix.
struct Cluster {
    db: String,
    prefix: String,
}

impl Cluster {
    fn new() -> Self {
        Self {
            db: fresh_postgres_schema(),
            prefix: format!("test-presence-{:016x}", rand::random::<u64>()),
        }
    }

    /// Start a node; it must come up (Redis and PostgreSQL are required).
    async fn node(&self) -> Node {
        self.node_with(&[]).await
    }

    /// A node with more flags.
    async fn node_with(&self, extra: &[&str]) -> Node {
        let grace = GRACE_MS.to_string();
        let heartbeat = HEARTBEAT_MS.to_string();
        let ttl = NODE_TTL_MS.to_string();
        let redis = redis_url();
        let args = [
            "--db",
            self.db.as_str(),
            "--redis-url",
            redis.as_str(),
            "--redis-prefix",
            self.prefix.as_str(),
            "--presence-grace-ms",
            grace.as_str(),
            "--restart-grace-ms",
            grace.as_str(),
            "--presence-heartbeat-ms",
            heartbeat.as_str(),
            "--presence-node-ttl-ms",
            ttl.as_str(),
        ];
        let args = [&args[..], extra].concat();
        let (child, addr) = try_start_binary(&args, &[]).await.unwrap_or_else(|status| {
            panic!("a cluster node exited ({status}): are PostgreSQL and Redis ({redis}) up?")
        });
        Node { child, addr }
    }
}

/// A running node, killed (and reaped) when dropped.
struct Node {
    child: std::process::Child,
    addr: SocketAddr,
}

impl Node {
    /// `kill -9`: no goodbye, its heartbeat simply stops.
    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, and wait for the graceful exit.
    async fn stop(mut self) {
        let pid = self.child.id().to_string();
        let status = std::process::Command::new("kill")
            .args(["-TERM", pid.as_str()])
            .status()
            .expect("send SIGTERM");
        assert!(status.success());
        let child = &mut self.child;
        let exited = tokio::time::timeout(Duration::from_secs(15), async {
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    return status;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .expect("the node stops within 15 s");
        assert!(exited.success(), "graceful stop: {exited}");
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A new user `name` on `addr`: its client and token.
async fn join(addr: SocketAddr, name: &str) -> (Client, String) {
    let (client, session) = Client::connect_with_auth(addr, json!({"name": name}))
        .await
        .unwrap_or_else(|error| panic!("{name} refused: {error}"));
    let token = session["token"].as_str().expect("a token").to_owned();
    (client, token)
}

/// Another tab of the user of `token`, on `addr`.
async fn tab(addr: SocketAddr, token: &str) -> Client {
    Client::connect_with_auth(addr, json!({"token": token}))
        .await
        .unwrap_or_else(|error| panic!("the token is refused: {error}"))
        .0
}

/// A client on `addr` that hears everyone's presence.
async fn watcher(addr: SocketAddr, name: &str) -> Client {
    let (mut client, _) = join(addr, name).await;
    let ack = client.request("presence:subscribe", json!({})).await;
    assert_eq!(ack["ok"], json!(true), "{ack}");
    client
}

/// The `presence` events `client` receives until `deadline` elapses.
async fn presence_within(client: &mut Client, deadline: Duration) -> Vec<Value> {
    let mut seen = Vec::new();
    let until = tokio::time::Instant::now() + deadline;
    while tokio::time::Instant::now() < until {
        // In steps shorter than the client's own patience with a silent connection.
        let step = until.min(tokio::time::Instant::now() + Duration::from_secs(2));
        if let Ok((event, args)) = tokio::time::timeout_at(step, client.next_event()).await
            && event == "presence"
        {
            seen.push(args[0].clone());
        }
    }
    seen
}

/// The presence events about `name` among `events`.
fn about(events: &[Value], name: &str) -> Vec<Value> {
    events
        .iter()
        .filter(|event| event["name"] == json!(name))
        .cloned()
        .collect()
}

/// Long enough for a grace period to end and its departure to be decided and announced
/// (a sweep every 500 ms, a Redis question, the next sweep), with a wide margin.
fn departure_time() -> Duration {
    Duration::from_millis(GRACE_MS * 3 + 2_000)
}

#[tokio::test]
async fn a_user_with_tabs_on_two_nodes_stays_online_while_one_is_open_and_leaves_once() {
    let cluster = Cluster::new();
    let a = cluster.node().await;
    let b = cluster.node().await;
    let mut on_a = watcher(a.addr, "watcher-a").await;
    let mut on_b = watcher(b.addr, "watcher-b").await;

    let (ann_a, token) = join(a.addr, "ann").await;
    let ann_b = tab(b.addr, &token).await;
    let seen_a = presence_within(&mut on_a, Duration::from_millis(300)).await;
    let seen_b = presence_within(&mut on_b, Duration::from_millis(300)).await;
    let arrived = [json!({"name": "ann", "online": true})];
    assert_eq!(about(&seen_a, "ann"), arrived);
    assert_eq!(
        about(&seen_b, "ann"),
        arrived,
        "B hears A's announcement once; her tab on B is no second arrival"
    );

    // The tab on A closes: ann is still online on B, so nobody hears she left.
    ann_a.hang_up().await;
    let seen_a = presence_within(&mut on_a, departure_time()).await;
    let seen_b = presence_within(&mut on_b, Duration::from_millis(100)).await;
    assert_eq!(
        about(&seen_a, "ann"),
        Vec::<Value>::new(),
        "on A: {seen_a:?}"
    );
    assert_eq!(
        about(&seen_b, "ann"),
        Vec::<Value>::new(),
        "on B: {seen_b:?}"
    );

    // Her last tab closes: offline, once, after the grace period.
    ann_b.hang_up().await;
    let seen_b = presence_within(&mut on_b, departure_time()).await;
    assert_eq!(
        about(&seen_b, "ann"),
        [json!({"name": "ann", "online": false})],
        "on B"
    );
    let seen_a = presence_within(&mut on_a, Duration::from_millis(300)).await;
    assert_eq!(
        about(&seen_a, "ann"),
        [json!({"name": "ann", "online": false})],
        "on A, through the bus"
    );
}

#[tokio::test]
async fn the_users_of_a_killed_node_go_offline_once_on_the_others() {
    let cluster = Cluster::new();
    let a = cluster.node().await;
    let b = cluster.node().await;
    let mut on_b = watcher(b.addr, "watcher").await;
    let (ann, _) = join(a.addr, "ann").await;
    // Bob has a tab on each node: the one on B keeps him online.
    let (bob_a, bob_token) = join(a.addr, "bob").await;
    let _bob_b = tab(b.addr, &bob_token).await;
    let _ = presence_within(&mut on_b, Duration::from_millis(300)).await;

    a.kill();
    let killed = std::time::Instant::now();
    drop((ann, bob_a));
    // Within heartbeat expiry + grace (+ sweeps), generously.
    let patience = Duration::from_millis(NODE_TTL_MS + GRACE_MS * 3 + 3_000);
    let gone = first_presence(&mut on_b, "ann", patience).await;
    eprintln!("killed node: ann offline on B after {:?}", killed.elapsed());
    let mut seen = vec![gone];
    seen.extend(presence_within(&mut on_b, Duration::from_millis(GRACE_MS * 2 + 1_000)).await);
    assert_eq!(
        about(&seen, "ann"),
        [json!({"name": "ann", "online": false})]
    );
    assert_eq!(about(&seen, "bob"), Vec::<Value>::new(), "bob is on B");
}

#[tokio::test]
async fn a_restarting_node_does_not_depart_the_users_another_node_has() {
    let cluster = Cluster::new();
    let a = cluster.node().await;
    let b = cluster.node().await;
    let mut on_b = watcher(b.addr, "watcher-b").await;
    // Ann is on B only; cy on A only (and does not come back after A's restart).
    let (_ann, _) = join(b.addr, "ann").await;
    let (cy, _) = join(a.addr, "cy").await;
    let _ = presence_within(&mut on_b, Duration::from_millis(300)).await;

    a.stop().await;
    drop(cy);
    let a = cluster.node().await;
    let mut on_a = watcher(a.addr, "watcher-a").await;
    // Past A's restart grace, its heartbeat expiry and the grace after it.
    let patience = Duration::from_millis(NODE_TTL_MS + GRACE_MS * 3 + 3_000);
    let seen_a = presence_within(&mut on_a, patience).await;
    let seen_b = presence_within(&mut on_b, Duration::from_millis(100)).await;
    assert_eq!(
        about(&seen_a, "ann"),
        Vec::<Value>::new(),
        "on A: {seen_a:?}"
    );
    assert_eq!(
        about(&seen_b, "ann"),
        Vec::<Value>::new(),
        "on B: {seen_b:?}"
    );
    // Cy, whom only the old A had, is gone: once (A's new watcher may have come too late
    // to hear it).
    let cy_gone = [json!({"name": "cy", "online": false})];
    assert_eq!(about(&seen_b, "cy"), cy_gone, "on B");
    assert!(about(&seen_a, "cy").len() <= 1, "on A: {seen_a:?}");
    drop(b);
}

/// Connect with a raw CONNECT payload; returns the client and the CONNECT reply's JSON.
async fn connect_raw(addr: SocketAddr, auth: Value) -> (Client, Value) {
    let mut client = Client::open(addr).await;
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

/// Say `text` in general and wait for its `message:new`: its offset (the last argument).
async fn say(client: &mut Client, text: &str) -> String {
    say_in(client, "general", text).await
}

/// Say `text` in `room` and wait for its `message:new`: its offset.
async fn say_in(client: &mut Client, room: &str, text: &str) -> String {
    let ack = client
        .request("message:send", json!({"room": room, "text": text}))
        .await;
    assert_eq!(ack["ok"], json!(true), "{ack}");
    hear(client, text).await
}

/// Wait for the `message:new` of `text`: its offset (the last argument).
async fn hear(client: &mut Client, text: &str) -> String {
    loop {
        let (event, args) = client.next_event().await;
        if event == "message:new" && args[0]["text"] == json!(text) {
            return args
                .last()
                .and_then(Value::as_str)
                .expect("an offset")
                .to_owned();
        }
    }
}

#[tokio::test]
async fn a_client_of_a_dead_node_resumes_on_another_with_its_socket_id_but_not_while_it_lives() {
    let cluster = Cluster::new();
    let recovery = ["--connection-state-recovery"];
    let a = cluster.node_with(&recovery).await;
    let b = cluster.node_with(&recovery).await;
    let c = cluster.node_with(&recovery).await;
    let (mut cy, _) = join(c.addr, "cy").await;
    let (mut ann, reply) = connect_raw(a.addr, json!({"name": "ann"})).await;
    let (sid, pid) = (reply["sid"].clone(), reply["pid"].clone());
    assert!(pid.is_string(), "a pid with recovery on: {reply}");
    let offset = say(&mut ann, "one").await;

    // Her socket still lives on A: not resumed on B (a fresh pid says so), and not given
    // the live socket's id either.
    let (other, reply) = connect_raw(b.addr, json!({"pid": pid, "offset": offset})).await;
    assert_ne!(
        reply["pid"], pid,
        "not recovered while connected on A: {reply}"
    );
    assert_ne!(reply["sid"], sid, "a socket id of its own: {reply}");
    drop(other);

    // A dies; what she missed is said on B; she resumes there, as the same socket.
    let mut watcher = watcher(b.addr, "watcher").await;
    a.kill();
    drop(ann);
    let (mut bob, _) = join(b.addr, "bob").await;
    say(&mut bob, "two").await;
    let (mut ann, reply) = connect_raw(b.addr, json!({"pid": pid, "offset": offset})).await;
    assert_eq!(reply["pid"], pid, "recovered on B: {reply}");
    assert_eq!(reply["sid"], sid, "with the socket id it had on A");
    say(&mut cy, "three").await;
    let mut heard = Vec::new();
    while heard.len() < 2 {
        let (event, args) = ann.next_event().await;
        if event == "message:new" {
            heard.push(args[0]["text"].clone());
        }
    }
    assert_eq!(
        heard,
        [json!("two"), json!("three")],
        "exactly what she missed, then what is said on C (through the bus)"
    );
    // Back before the dead node's grace ended: never announced gone.
    let seen = presence_within(&mut watcher, departure_time()).await;
    assert_eq!(about(&seen, "ann"), Vec::<Value>::new(), "{seen:?}");
    drop((b, c));
}

#[tokio::test]
async fn a_client_of_a_dead_node_resumes_on_another_in_the_rooms_it_joined_after_connecting() {
    let cluster = Cluster::new();
    let recovery = ["--connection-state-recovery"];
    let a = cluster.node_with(&recovery).await;
    let b = cluster.node_with(&recovery).await;
    let (mut bob, _) = join(b.addr, "bob").await;
    let ack = bob.request("room:create", json!({"room": "crash"})).await;
    assert_eq!(ack["ok"], json!(true), "{ack}");
    // Ann joins the room after connecting, so her recovery record (saved at connect) lacks
    // it; A then dies without saving it again.
    let (mut ann, reply) = connect_raw(a.addr, json!({"name": "ann"})).await;
    let pid = reply["pid"].clone();
    let ack = ann.request("room:join", json!({"room": "crash"})).await;
    assert_eq!(ack["ok"], json!(true), "{ack}");
    say_in(&mut bob, "crash", "before").await;
    let offset = hear(&mut ann, "before").await;
    a.kill();
    drop(ann);
    say_in(&mut bob, "crash", "missed 1").await;
    say_in(&mut bob, "crash", "missed 2").await;

    let (mut ann, reply) = connect_raw(b.addr, json!({"pid": pid, "offset": offset})).await;
    assert_eq!(reply["pid"], pid, "recovered on B: {reply}");
    say_in(&mut bob, "crash", "after").await;
    let mut heard = Vec::new();
    while heard.last() != Some(&json!("after")) {
        let (event, args) = ann.next_event().await;
        if event == "message:new" {
            assert_eq!(args[0]["room"], json!("crash"), "{args:?}");
            heard.push(args[0]["text"].clone());
        }
    }
    assert_eq!(
        heard,
        [json!("missed 1"), json!("missed 2"), json!("after")],
        "what she missed in the room, then what is said there live"
    );
    // Still a member: she may speak there, and bob hears her.
    say_in(&mut ann, "crash", "back").await;
    hear(&mut bob, "back").await;
    drop(b);
}

/// Wait (up to `patience`) for the first `presence` event about `name`.
async fn first_presence(client: &mut Client, name: &str, patience: Duration) -> Value {
    let until = tokio::time::Instant::now() + patience;
    loop {
        let seen = presence_within(client, Duration::from_millis(100)).await;
        if let Some(event) = about(&seen, name).into_iter().next() {
            return event;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "no presence of {name} within {patience:?}"
        );
    }
}

#[tokio::test]
async fn the_users_of_a_frozen_node_go_offline_once_its_heartbeat_expires_and_come_back_with_it() {
    let cluster = Cluster::new();
    let a = cluster.node().await;
    let b = cluster.node().await;
    let mut on_b = watcher(b.addr, "watcher").await;
    let (_ann, _) = join(a.addr, "ann").await;
    let _ = presence_within(&mut on_b, Duration::from_millis(300)).await;

    // Stopped, not killed: its connections stay open, only its heartbeat stops.
    let pid = a.child.id().to_string();
    let status = std::process::Command::new("kill")
        .args(["-STOP", pid.as_str()])
        .status()
        .expect("send SIGSTOP");
    assert!(status.success());
    let frozen = std::time::Instant::now();
    let patience = Duration::from_millis(NODE_TTL_MS + GRACE_MS * 3 + 3_000);
    let gone = first_presence(&mut on_b, "ann", patience).await;
    let after = frozen.elapsed();
    eprintln!("frozen node: ann offline on B after {after:?}");
    assert_eq!(gone, json!({"name": "ann", "online": false}));
    assert!(
        after >= Duration::from_millis(NODE_TTL_MS / 2),
        "not before its heartbeat could expire: {after:?}"
    );
    let more = presence_within(&mut on_b, Duration::from_millis(GRACE_MS * 2 + 1_000)).await;
    assert_eq!(about(&more, "ann"), Vec::<Value>::new(), "once");

    // The node wakes up with Ann still connected: she is announced back, once.
    let status = std::process::Command::new("kill")
        .args(["-CONT", pid.as_str()])
        .status()
        .expect("send SIGCONT");
    assert!(status.success());
    let back = first_presence(&mut on_b, "ann", Duration::from_millis(NODE_TTL_MS * 5)).await;
    assert_eq!(back, json!({"name": "ann", "online": true}));
    let more = presence_within(&mut on_b, Duration::from_millis(HEARTBEAT_MS * 5)).await;
    assert_eq!(about(&more, "ann"), Vec::<Value>::new(), "back once");
    drop(a); // killed
}

#[tokio::test]
async fn a_node_started_later_lists_who_is_online_on_the_others() {
    let cluster = Cluster::new();
    let a = cluster.node().await;
    let (mut ann, _) = join(a.addr, "ann").await;
    let ack = ann.request("room:create", json!({"room": "club"})).await;
    assert_eq!(ack["ok"], json!(true), "{ack}");
    let mut tina = Client::connect(a.addr).await;
    tina.join_as("tina").await;

    // B starts after them: it reads who is online from Redis, and lists them.
    let b = cluster.node().await;
    let (mut bob, _) = join(b.addr, "bob").await;
    let ack = bob.request("room:join", json!({"room": "club"})).await;
    assert_eq!(ack["ok"], json!(true), "{ack}");
    let members = bob.request("room:members", json!({"room": "club"})).await;
    assert_eq!(
        members["members"],
        json!([{"name": "ann", "online": true}, {"name": "bob", "online": true}]),
        "{members}"
    );
    let mut tom = Client::connect(b.addr).await;
    tom.emit("addUser", json!(["tom"])).await;
    tom.expect("updateChat", json!(["Server", "you have connected"]))
        .await;
    let (event, args) = tom.next_event().await;
    assert_eq!(event, "updateUsers");
    let mut listed: Vec<String> = args[0]
        .as_object()
        .map(|users| users.keys().cloned().collect())
        .unwrap_or_default();
    listed.sort();
    assert_eq!(listed, ["ann", "bob", "tina", "tom"], "{args:?}");
}
