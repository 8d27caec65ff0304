//! The behaviour of every history store, written once and run against each backend.
//!
//! Each behaviour is an `async fn(Backend)` below; `behaviours!` turns it into one test per
//! backend (`sqlite::<name>`, `postgres::<name>` and, unless it needs a database on disk,
//! `memory::<name>`). SQLite tests use a fresh file in a temporary directory; PostgreSQL
//! tests use a fresh schema (dropped afterwards) in the database named by
//! `CHINWAG_TEST_POSTGRES_URL` (default: the local `test` database); memory tests a fresh
//! `MemoryStore`, "reopened" as another handle on the same data.
//! PostgreSQL is required: without it the PostgreSQL tests fail (`scripts/test` starts or
//! installs it).
//!
//! The crash test runs this very test binary again as a child process (the ignored test
//! `crash_probe_child`), lets it append while printing every acknowledged sequence, kills it
//! with SIGKILL, and checks the database.

mod support;

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use support::postgres_url;

use chinwag::store::{
    Author, Conversation, Durability, HistoryStore, MAX_CLIENT_ID_LEN, MAX_PAGE_LIMIT,
    MembershipRecord, MemoryLimits, MemoryStore, NameClaim, NewMessage, RecoveryRecord, RoomRecord,
    SessionRecord, StoreError, StoreOptions, StoredMessage, UserRecord, open_store,
    open_store_with,
};

/// Every behaviour must finish within this, or the test fails instead of hanging.
const TEST_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Clone, Copy, Debug)]
enum Backend {
    Sqlite,
    Postgres,
    Memory,
}

/// A database of one's own for one test, removed when dropped.
struct TestDb {
    url: String,
    cleanup: Cleanup,
}

enum Cleanup {
    Directory(PathBuf),
    Schema {
        admin_url: String,
        schema: String,
    },
    /// Nothing to remove: the data goes with the last handle.
    Memory(MemoryStore),
}

fn random_suffix() -> String {
    format!("{:016x}", rand::random::<u64>())
}

impl TestDb {
    async fn new(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => {
                let dir = std::env::temp_dir().join(format!("chinwag-store-{}", random_suffix()));
                // A nested path: the store must create missing parent directories.
                let file = dir.join("nested").join("history.db");
                Self {
                    url: format!("sqlite://{}", file.display()),
                    cleanup: Cleanup::Directory(dir),
                }
            }
            Backend::Postgres => {
                let admin_url = postgres_url();
                let schema = format!("t_{}", random_suffix());
                run_admin_sql(&admin_url, &format!("CREATE SCHEMA {schema}")).await;
                let separator = if admin_url.contains('?') { '&' } else { '?' };
                Self {
                    url: format!(
                        "{admin_url}{separator}options[search_path]={schema}&application_name={schema}"
                    ),
                    cleanup: Cleanup::Schema { admin_url, schema },
                }
            }
            Backend::Memory => Self {
                url: "memory".to_owned(),
                cleanup: Cleanup::Memory(MemoryStore::new(MemoryLimits::default())),
            },
        }
    }

    async fn open(&self) -> Arc<dyn HistoryStore> {
        self.open_with(Durability::Full).await
    }

    async fn open_with(&self, durability: Durability) -> Arc<dyn HistoryStore> {
        if let Cleanup::Memory(memory) = &self.cleanup {
            return Arc::new(memory.open_again());
        }
        open_store(&self.url, durability)
            .await
            .unwrap_or_else(|error| panic!("opening {}: {error}", self.url))
    }
}

async fn run_admin_sql(url: &str, sql: &str) {
    use sqlx::Connection;
    let mut connection = sqlx::PgConnection::connect(url)
        .await
        .unwrap_or_else(|error| panic!("PostgreSQL at {url} is needed for this test: {error}"));
    sqlx::query(sql)
        .execute(&mut connection)
        .await
        .unwrap_or_else(|error| panic!("{sql}: {error}"));
    let _ = connection.close().await;
}

impl Drop for TestDb {
    fn drop(&mut self) {
        match &self.cleanup {
            Cleanup::Directory(dir) => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Cleanup::Memory(_) => {}
            Cleanup::Schema { admin_url, schema } => {
                // Drop runs inside the test's runtime, which cannot block on itself: use a
                // thread with a runtime of its own.
                let (url, sql) = (admin_url.clone(), format!("DROP SCHEMA {schema} CASCADE"));
                let _ = std::thread::spawn(move || {
                    if let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        runtime.block_on(run_admin_sql(&url, &sql));
                    }
                })
                .join();
            }
        }
    }
}

fn new_message(
    conversation: &Conversation,
    user: &str,
    body: &str,
    client_id: Option<&str>,
) -> NewMessage {
    NewMessage {
        conversation: conversation.clone(),
        author: Author {
            user_id: format!("id-{user}"),
            name: user.to_owned(),
        },
        body: body.to_owned(),
        client_id: client_id.map(str::to_owned),
        sent_at_ms: 1_700_000_000_000,
    }
}

async fn append(store: &dyn HistoryStore, message: NewMessage) -> StoredMessage {
    let appended = store.append(message).await.expect("append");
    assert!(
        !appended.duplicate,
        "a new message was reported as a duplicate"
    );
    appended.message
}

fn seqs(messages: &[StoredMessage]) -> Vec<i64> {
    messages.iter().map(|m| m.seq).collect()
}

/// Everything in a conversation, paging with `after` as a reconnecting client would.
async fn everything(store: &dyn HistoryStore, conversation: &Conversation) -> Vec<StoredMessage> {
    let mut all: Vec<StoredMessage> = Vec::new();
    loop {
        let from = all.last().map_or(0, |m| m.seq);
        let page = store.after(conversation, from, 500).await.expect("after");
        if page.is_empty() {
            return all;
        }
        all.extend(page);
    }
}

// ---------------------------------------------------------------------------------------------
// Behaviours
// ---------------------------------------------------------------------------------------------

async fn appends_get_gapless_sequences_per_conversation_from_one(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.open().await;
    let general = Conversation::room("general");
    let random = Conversation::room("random");
    for i in 1..=5 {
        let a = append(
            &*store,
            new_message(&general, "alice", &format!("g{i}"), None),
        )
        .await;
        let b = append(&*store, new_message(&random, "bob", &format!("r{i}"), None)).await;
        assert_eq!((a.seq, b.seq), (i, i));
    }
    assert_eq!(store.last_seq(&general).await.ok(), Some(5));
    assert_eq!(
        store.last_seq(&Conversation::room("empty")).await.ok(),
        Some(0)
    );

    let stored = everything(&*store, &general).await;
    assert_eq!(seqs(&stored), vec![1, 2, 3, 4, 5]);
    let first = &stored[0];
    assert_eq!(first.body, "g1");
    assert_eq!(first.author.name, "alice");
    assert_eq!(first.author.user_id, "id-alice");
    assert_eq!(first.timestamp_ms, 1_700_000_000_000);
    assert_eq!(first.conversation, general);
    assert_eq!(first.id.len(), 26);
    let ids: HashSet<_> = stored.iter().map(|m| m.id.clone()).collect();
    assert_eq!(ids.len(), 5, "message ids must be unique");
    store.close().await;
}

async fn concurrent_appends_from_many_tasks_get_gapless_sequences(backend: Backend) {
    const TASKS: usize = 16;
    const PER_TASK: usize = 40;
    let db = TestDb::new(backend).await;
    let store = db.open().await;
    let room = Conversation::room("busy");
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let (store, room) = (store.clone(), room.clone());
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..PER_TASK {
                let body = format!("{task}-{i}");
                let message = new_message(&room, &format!("user{task}"), &body, Some(&body));
                acked.push((
                    store.append(message).await.expect("append").message.seq,
                    body,
                ));
            }
            acked
        }));
    }
    let mut acked = BTreeMap::new();
    for task in tasks {
        for (seq, body) in task.await.expect("append task") {
            assert!(acked.insert(seq, body).is_none(), "seq {seq} acked twice");
        }
    }
    let expected: Vec<i64> = (1..=(TASKS * PER_TASK) as i64).collect();
    assert_eq!(acked.keys().copied().collect::<Vec<_>>(), expected);

    let stored = everything(&*store, &room).await;
    assert_eq!(seqs(&stored), expected);
    for message in &stored {
        assert_eq!(acked.get(&message.seq), Some(&message.body));
    }
    store.close().await;
}

async fn two_writers_sharing_one_database_still_number_gaplessly(backend: Backend) {
    const PER_TASK: usize = 30;
    let db = TestDb::new(backend).await;
    // Two stores on one database: two nodes of a cluster, or a restart overlapping the old
    // process.
    let nodes = [db.open().await, db.open().await];
    let room = Conversation::room("shared");
    let mut tasks = Vec::new();
    for (node_index, node) in nodes.iter().enumerate() {
        for task in 0..4 {
            let (store, room) = (node.clone(), room.clone());
            tasks.push(tokio::spawn(async move {
                let mut acked = Vec::new();
                for i in 0..PER_TASK {
                    let body = format!("{node_index}-{task}-{i}");
                    let message = new_message(&room, "alice", &body, Some(&body));
                    let appended = store.append(message).await.expect("append");
                    acked.push(appended.message.seq);
                }
                acked
            }));
        }
    }
    let mut acked = Vec::new();
    for task in tasks {
        acked.extend(task.await.expect("append task"));
    }
    acked.sort_unstable();
    let expected: Vec<i64> = (1..=acked.len() as i64).collect();
    assert_eq!(acked, expected, "every seq acked once, none skipped");
    assert_eq!(seqs(&everything(&*nodes[0], &room).await), expected);
    for node in nodes {
        node.close().await;
    }
}

/// Three nodes of a cluster on one database, each with several senders, all writing to one
/// hot room at once: every acknowledged message is stored exactly once, under the sequence it
/// was acknowledged with, and the sequences are 1..n without a gap.
async fn three_stores_writing_one_hot_room_at_once_number_it_gaplessly(backend: Backend) {
    const SENDERS_PER_NODE: usize = 4;
    const PER_SENDER: usize = 50;
    let db = TestDb::new(backend).await;
    let nodes = [db.open().await, db.open().await, db.open().await];
    let room = Conversation::room("hot");
    let (acked, _) = write_hot_room(&nodes, &room, SENDERS_PER_NODE, PER_SENDER).await;
    let total = nodes.len() * SENDERS_PER_NODE * PER_SENDER;
    assert_eq!(acked.len(), total, "every message acknowledged once");
    let stored = everything(&*nodes[1], &room).await;
    let expected: Vec<i64> = (1..=total as i64).collect();
    assert_eq!(seqs(&stored), expected, "gapless, each seq once");
    for message in &stored {
        assert_eq!(
            acked.get(&message.seq),
            Some(&message.body),
            "stored under the sequence it was acknowledged with"
        );
    }
    let bodies: HashSet<&str> = stored.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies.len(), total, "no message stored twice");
    for node in nodes {
        node.close().await;
    }
}

/// `senders` tasks per store each append `per_sender` messages to `room` one after another;
/// returns acknowledged seq → body, and how long it all took.
async fn write_hot_room(
    nodes: &[Arc<dyn HistoryStore>],
    room: &Conversation,
    senders: usize,
    per_sender: usize,
) -> (BTreeMap<i64, String>, Duration) {
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for (node_index, node) in nodes.iter().enumerate() {
        for sender in 0..senders {
            let (store, room) = (node.clone(), room.clone());
            tasks.push(tokio::spawn(async move {
                let author = format!("user-{node_index}-{sender}");
                let mut acked = Vec::with_capacity(per_sender);
                for i in 0..per_sender {
                    let body = format!("{node_index}-{sender}-{i}");
                    let message = new_message(&room, &author, &body, Some(&body));
                    let appended = store.append(message).await.expect("append");
                    assert!(!appended.duplicate);
                    acked.push((appended.message.seq, body));
                }
                acked
            }));
        }
    }
    let mut acked = BTreeMap::new();
    for task in tasks {
        for (seq, body) in task.await.expect("sender task") {
            assert!(
                acked.insert(seq, body).is_none(),
                "seq {seq} acknowledged twice"
            );
        }
    }
    (acked, started.elapsed())
}

fn claim(name_key: &str, user_id: &str, expires_at_ms: i64) -> NameClaim {
    NameClaim {
        name_key: name_key.to_owned(),
        user_id: user_id.to_owned(),
        expires_at_ms,
    }
}

async fn a_name_is_held_by_one_user_until_it_expires_or_is_released(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.open().await;
    let claimed = |c: NameClaim, now: i64| {
        let store = store.clone();
        async move { store.claim_name(c, now).await.expect("claim") }
    };
    assert!(claimed(claim("ann", "id-1", 1_000), 0).await, "free");
    assert!(!claimed(claim("ann", "id-2", 5_000), 999).await, "held");
    assert!(
        claimed(claim("ann", "id-1", 500), 999).await,
        "its holder's again"
    );
    assert!(
        !claimed(claim("ann", "id-2", 5_000), 999).await,
        "a shorter claim of the holder keeps the longer expiry"
    );
    assert!(
        claimed(claim("ann", "id-2", 5_000), 1_000).await,
        "free once expired"
    );
    assert!(
        claimed(claim("bob", "id-1", 5_000), 0).await,
        "another name"
    );
    assert!(
        !store
            .release_name("ann".to_owned(), "id-1".to_owned())
            .await
            .expect("release"),
        "only its holder releases a name"
    );
    assert!(
        store
            .release_name("ann".to_owned(), "id-2".to_owned())
            .await
            .expect("release")
    );
    assert!(
        claimed(claim("ann", "id-3", 5_000), 0).await,
        "free once released"
    );
    // Forgetting a user frees its names; purging frees the expired ones.
    store
        .save_user(user("id-3", "ann", 5_000))
        .await
        .expect("save");
    assert!(store.delete_user("id-3".to_owned()).await.expect("delete"));
    assert!(
        claimed(claim("ann", "id-4", 2_000), 0).await,
        "free once forgotten"
    );
    store.purge_expired(2_000).await.expect("purge");
    assert!(
        !store
            .release_name("ann".to_owned(), "id-4".to_owned())
            .await
            .expect("release"),
        "purged"
    );
    assert!(
        !store
            .claim_name(claim("a\0b", "id-1", 1), 0)
            .await
            .is_ok_and(|won| won),
        "a NUL is refused"
    );
    store.close().await;
}

/// Three nodes on one database claim the same names at the same moment, many times over:
/// each name has exactly one winner.
async fn concurrent_claims_of_one_name_from_three_stores_have_one_winner(backend: Backend) {
    const NAMES: usize = 40;
    const CLAIMANTS_PER_NODE: usize = 3;
    let db = TestDb::new(backend).await;
    let nodes = [db.open().await, db.open().await, db.open().await];
    let start = Arc::new(tokio::sync::Barrier::new(nodes.len() * CLAIMANTS_PER_NODE));
    let mut tasks = Vec::new();
    for (node_index, node) in nodes.iter().enumerate() {
        for claimant in 0..CLAIMANTS_PER_NODE {
            let (store, start) = (node.clone(), start.clone());
            tasks.push(tokio::spawn(async move {
                let user_id = format!("id-{node_index}-{claimant}");
                start.wait().await;
                let mut won = Vec::new();
                for name in 0..NAMES {
                    let key = format!("name-{name}");
                    if store
                        .claim_name(claim(&key, &user_id, 10_000), 0)
                        .await
                        .expect("claim")
                    {
                        won.push(key);
                    }
                }
                (user_id, won)
            }));
        }
    }
    let mut winners: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for task in tasks {
        let (user_id, won) = task.await.expect("claim task");
        for key in won {
            winners.entry(key).or_default().push(user_id.clone());
        }
    }
    assert_eq!(winners.len(), NAMES, "every name was won");
    for (key, users) in &winners {
        assert_eq!(users.len(), 1, "{key} won by {users:?}");
        // The winner holds it: nobody else can take it, from any node.
        for node in &nodes {
            assert!(
                !node
                    .claim_name(claim(key, "id-late", 10_000), 0)
                    .await
                    .expect("claim")
            );
        }
    }
    for node in nodes {
        node.close().await;
    }
}

async fn resending_a_client_id_returns_the_original_message(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.open().await;
    let room = Conversation::room("general");
    let original = append(&*store, new_message(&room, "alice", "hello", Some("c1"))).await;
    append(&*store, new_message(&room, "bob", "hi", None)).await;

    let resent = store
        .append(new_message(&room, "alice", "hello (resent)", Some("c1")))
        .await
        .expect("resend");
    assert!(resent.duplicate);
    assert_eq!(resent.message, original);
    assert_eq!(
        store.last_seq(&room).await.ok(),
        Some(2),
        "no sequence consumed"
    );

    // The key belongs to the author and the conversation, not to everyone.
    let other_author = append(&*store, new_message(&room, "bob", "mine", Some("c1"))).await;
    assert_eq!(other_author.seq, 3);
    let elsewhere = Conversation::room("random");
    assert_eq!(
        append(&*store, new_message(&elsewhere, "alice", "x", Some("c1")))
            .await
            .seq,
        1
    );

    // Resends racing each other (likely in one batch) still store the message once.
    let racers: Vec<_> = (0..10)
        .map(|_| {
            let (store, room) = (store.clone(), room.clone());
            tokio::spawn(async move {
                store
                    .append(new_message(&room, "carol", "race", Some("c2")))
                    .await
                    .expect("racing resend")
            })
        })
        .collect();
    let mut results = Vec::new();
    for racer in racers {
        results.push(racer.await.expect("racer task"));
    }
    assert_eq!(results.iter().filter(|r| !r.duplicate).count(), 1);
    assert!(results.iter().all(|r| r.message == results[0].message));
    assert_eq!(seqs(&everything(&*store, &room).await), vec![1, 2, 3, 4]);
    store.close().await;
}

async fn latest_before_and_after_page_exactly(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.open().await;
    let room = Conversation::room("general");
    for i in 1..=25 {
        append(&*store, new_message(&room, "alice", &format!("m{i}"), None)).await;
    }
    let range = |from: i64, to: i64| (from..=to).collect::<Vec<_>>();
    let page = |result: Result<Vec<StoredMessage>, StoreError>| seqs(&result.expect("read"));

    assert_eq!(page(store.latest(&room, 10).await), range(16, 25));
    assert_eq!(page(store.before(&room, 16, 10).await), range(6, 15));
    assert_eq!(page(store.before(&room, 6, 10).await), range(1, 5));
    assert_eq!(page(store.before(&room, 1, 10).await), range(1, 0));
    assert_eq!(page(store.after(&room, 0, 10).await), range(1, 10));
    assert_eq!(page(store.after(&room, 20, 10).await), range(21, 25));
    assert_eq!(page(store.after(&room, 25, 10).await), range(1, 0));
    assert_eq!(page(store.latest(&room, 0).await), range(1, 0));
    assert_eq!(page(store.latest(&room, 100).await), range(1, 25));
    assert_eq!(
        page(store.latest(&Conversation::room("empty"), 10).await),
        range(1, 0)
    );
    let bodies: Vec<_> = store
        .latest(&room, 2)
        .await
        .expect("latest")
        .into_iter()
        .map(|m| m.body)
        .collect();
    assert_eq!(bodies, ["m24", "m25"]);
    store.close().await;
}

async fn one_read_returns_at_most_the_page_limit(backend: Backend) {
    const STORED: i64 = MAX_PAGE_LIMIT as i64 + 5;
    let db = TestDb::new(backend).await;
    let store = db.open().await;
    let room = Conversation::room("big");
    let tasks: Vec<_> = (0..STORED)
        .map(|i| {
            let (store, room) = (store.clone(), room.clone());
            tokio::spawn(async move {
                store
                    .append(new_message(&room, "alice", &format!("m{i}"), None))
                    .await
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("append task").expect("append");
    }
    let page = store.after(&room, 0, u32::MAX).await.expect("after");
    assert_eq!(seqs(&page), (1..=MAX_PAGE_LIMIT as i64).collect::<Vec<_>>());
    let newest = store.latest(&room, u32::MAX).await.expect("latest");
    assert_eq!(seqs(&newest), (6..=STORED).collect::<Vec<_>>());
    assert_eq!(everything(&*store, &room).await.len() as i64, STORED);
    store.close().await;
}

async fn direct_conversations_are_independent_of_rooms_and_each_other(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.open().await;
    let room = Conversation::room("id-alice");
    let alice_bob = Conversation::direct("id-alice", "id-bob");
    let bob_alice = Conversation::direct("id-bob", "id-alice");
    let alice_carol = Conversation::direct("id-alice", "id-carol");

    append(&*store, new_message(&room, "alice", "in a room", None)).await;
    assert_eq!(
        append(&*store, new_message(&alice_bob, "alice", "hi bob", None))
            .await
            .seq,
        1
    );
    assert_eq!(
        append(&*store, new_message(&bob_alice, "bob", "hi alice", None))
            .await
            .seq,
        2
    );
    assert_eq!(
        append(&*store, new_message(&alice_carol, "carol", "hi", None))
            .await
            .seq,
        1
    );

    let between: Vec<_> = everything(&*store, &bob_alice)
        .await
        .into_iter()
        .map(|m| (m.seq, m.body, m.conversation))
        .collect();
    assert_eq!(
        between,
        [
            (1, "hi bob".to_owned(), alice_bob.clone()),
            (2, "hi alice".to_owned(), alice_bob.clone())
        ]
    );
    assert_eq!(store.last_seq(&room).await.ok(), Some(1));
    assert_eq!(store.last_seq(&alice_carol).await.ok(), Some(1));

    // Each member can list their direct conversations (e.g. one started while they were away).
    let listed = |user: &'static str| {
        let store = store.clone();
        async move {
            store
                .direct_conversations(user)
                .await
                .expect("direct conversations")
                .into_iter()
                .map(|summary| (summary.conversation, summary.last_seq))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        listed("id-alice").await,
        [(alice_bob.clone(), 2), (alice_carol.clone(), 1)]
    );
    assert_eq!(listed("id-bob").await, [(alice_bob.clone(), 2)]);
    assert_eq!(listed("id-carol").await, [(alice_carol.clone(), 1)]);
    assert_eq!(listed("id-nobody").await, []);
    store.close().await;
}

async fn rooms_are_registered_once_and_listed_by_name(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.open().await;
    let room = |name: &str| RoomRecord {
        name: name.to_owned(),
        created_at_ms: 42,
        created_by: None,
    };
    assert_eq!(store.create_room(room("general")).await.ok(), Some(true));
    assert_eq!(store.create_room(room("design")).await.ok(), Some(true));
    assert_eq!(store.create_room(room("general")).await.ok(), Some(false));
    assert_eq!(store.room_exists("design").await.ok(), Some(true));
    assert_eq!(store.room_exists("nope").await.ok(), Some(false));
    assert_eq!(
        store.list_rooms("", 100).await.expect("list"),
        [room("design"), room("general")]
    );
    store.close().await;
}

async fn rooms_are_listed_page_by_page_with_their_creators(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.open().await;
    let names: Vec<String> = (0..25).map(|index| format!("room-{index:02}")).collect();
    for (index, name) in names.iter().enumerate() {
        let created = store
            .create_room(RoomRecord {
                name: name.clone(),
                created_at_ms: 1,
                created_by: (index % 2 == 0).then(|| "id-ann".to_owned()),
            })
            .await;
        assert_eq!(created.ok(), Some(true));
    }
    let mut listed = Vec::new();
    loop {
        let after = listed
            .last()
            .map_or(String::new(), |room: &RoomRecord| room.name.clone());
        let page = store.list_rooms(&after, 10).await.expect("page");
        assert!(page.len() <= 10);
        if page.is_empty() {
            break;
        }
        listed.extend(page);
    }
    let listed_names: Vec<&str> = listed.iter().map(|room| room.name.as_str()).collect();
    assert_eq!(
        listed_names,
        names.iter().map(String::as_str).collect::<Vec<_>>()
    );
    assert_eq!(
        listed
            .iter()
            .filter(|room| room.created_by.as_deref() == Some("id-ann"))
            .count(),
        13
    );
    store.close().await;
}

async fn a_created_room_stores_its_creators_membership_and_a_refused_one_nothing(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.open().await;
    let created = |user: &str| RoomRecord {
        name: "dev".to_owned(),
        created_at_ms: 7,
        created_by: Some(user.to_owned()),
    };
    assert_eq!(store.create_room(created("id-ann")).await.ok(), Some(true));
    assert_eq!(
        store.user_rooms("id-ann").await.ok(),
        Some(vec!["dev".to_owned()])
    );
    // The same name again, by someone else: no room, and no membership either.
    assert_eq!(store.create_room(created("id-bob")).await.ok(), Some(false));
    assert_eq!(store.user_rooms("id-bob").await.ok(), Some(Vec::new()));
    let listed = store.list_rooms("", 10).await.expect("list");
    assert_eq!(listed, [created("id-ann")]);
    store.close().await;
}

async fn a_message_is_found_by_its_authors_client_id(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.open().await;
    let room = Conversation::room("general");
    let original = append(&*store, new_message(&room, "alice", "hello", Some("c1"))).await;
    let found = store.message_by_client_id(&room, "id-alice", "c1").await;
    assert_eq!(found.ok(), Some(Some(original)));
    for (conversation, author, client_id) in [
        (&room, "id-bob", "c1"),
        (&room, "id-alice", "c2"),
        (&Conversation::room("random"), "id-alice", "c1"),
        (&room, "id-alice", "c\0"),
    ] {
        let missing = store
            .message_by_client_id(conversation, author, client_id)
            .await;
        assert_eq!(missing.ok(), Some(None), "{author} {client_id:?}");
    }
    store.close().await;
}

async fn sessions_and_recovery_records_round_trip_and_expire(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.open().await;
    let session = SessionRecord {
        token_hash: "hash-1".to_owned(),
        user_id: "id-alice".to_owned(),
        name: "Alice".to_owned(),
        expires_at_ms: 1_000,
    };
    store.save_session(session.clone()).await.expect("save");
    assert_eq!(
        store.session("hash-1", 999).await.ok(),
        Some(Some(session.clone()))
    );
    assert_eq!(
        store.session("hash-1", 1_000).await.ok(),
        Some(None),
        "expired"
    );
    assert_eq!(store.session("unknown", 0).await.ok(), Some(None));

    let extended = SessionRecord {
        expires_at_ms: 5_000,
        ..session.clone()
    };
    store.save_session(extended.clone()).await.expect("extend");
    assert_eq!(
        store.session("hash-1", 1_000).await.ok(),
        Some(Some(extended))
    );

    let recovery = RecoveryRecord {
        pid: "pid-1".to_owned(),
        user_id: "id-alice".to_owned(),
        state: r#"{"rooms":{"general":12}}"#.to_owned(),
        expires_at_ms: 2_000,
    };
    store
        .save_recovery(recovery.clone())
        .await
        .expect("save recovery");
    assert_eq!(
        store.recovery("pid-1", 1_999).await.ok(),
        Some(Some(recovery.clone()))
    );
    assert_eq!(store.recovery("pid-1", 2_000).await.ok(), Some(None));

    // At 3,000 the recovery record has expired, the extended session has not.
    assert_eq!(store.purge_expired(3_000).await.ok(), Some(1));
    assert_eq!(store.recovery("pid-1", 0).await.ok(), Some(None), "purged");
    assert!(matches!(store.session("hash-1", 0).await, Ok(Some(_))));

    assert_eq!(
        store.delete_session("hash-1".to_owned()).await.ok(),
        Some(true)
    );
    assert_eq!(
        store.delete_session("hash-1".to_owned()).await.ok(),
        Some(false)
    );
    assert_eq!(store.session("hash-1", 0).await.ok(), Some(None));
    store.save_recovery(recovery).await.expect("save recovery");
    assert_eq!(
        store.delete_recovery("pid-1".to_owned()).await.ok(),
        Some(true)
    );
    assert_eq!(store.recovery("pid-1", 0).await.ok(), Some(None));
    store.close().await;
}

fn user(id: &str, name: &str, expires_at_ms: i64) -> UserRecord {
    UserRecord {
        user_id: id.to_owned(),
        name: name.to_owned(),
        name_key: name.to_lowercase(),
        expires_at_ms,
        online: true,
        node: "local".to_owned(),
    }
}

fn membership(user_id: &str, room: &str) -> MembershipRecord {
    MembershipRecord {
        user_id: user_id.to_owned(),
        room: room.to_owned(),
        joined_at_ms: 1,
    }
}

async fn users_hold_their_names_until_they_expire(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.open().await;
    store
        .save_user(user("id-ann", "Ann", 1_000))
        .await
        .expect("save");
    assert_eq!(
        store.user_named("ann", 999).await.ok(),
        Some(Some(user("id-ann", "Ann", 1_000)))
    );
    assert_eq!(
        store.user_named("ann", 1_000).await.ok(),
        Some(None),
        "expired"
    );
    assert_eq!(store.user_named("bob", 0).await.ok(), Some(None));

    // Saving again extends, never shortens, and renames.
    store
        .save_user(user("id-ann", "ANN", 5_000))
        .await
        .expect("extend");
    store
        .save_user(user("id-ann", "ANN", 2_000))
        .await
        .expect("late save");
    assert_eq!(
        store.user_named("ann", 4_999).await.ok(),
        Some(Some(user("id-ann", "ANN", 5_000)))
    );

    // An expired holder's name may be taken: the live holder is the one found.
    store
        .save_user(user("id-old", "Cy", 100))
        .await
        .expect("save");
    store
        .save_user(user("id-new", "Cy", 9_000))
        .await
        .expect("save");
    let holder = store.user_named("cy", 200).await.expect("lookup");
    assert_eq!(holder.map(|u| u.user_id), Some("id-new".to_owned()));

    let live: Vec<String> = store
        .live_users(200)
        .await
        .expect("live")
        .into_iter()
        .map(|u| u.user_id)
        .collect();
    assert_eq!(
        live,
        ["id-new", "id-ann"],
        "latest expiring first, expired left out"
    );

    // Purging removes expired users (with their memberships), not live ones.
    store
        .add_membership(membership("id-old", "dev"))
        .await
        .expect("join");
    assert_eq!(store.purge_expired(200).await.ok(), Some(1));
    assert_eq!(store.user_rooms("id-old").await.ok(), Some(Vec::new()));
    assert!(matches!(store.user_named("ann", 200).await, Ok(Some(_))));
    assert!(
        store.save_user(user("id-\0", "x", 1)).await.is_err(),
        "NUL is refused"
    );
    store.close().await;
}

async fn memberships_are_added_once_removed_and_survive_reopening(backend: Backend) {
    let db = TestDb::new(backend).await;
    {
        let store = db.open().await;
        store
            .save_user(user("id-ann", "Ann", 10_000))
            .await
            .expect("save");
        store
            .save_user(user("id-bob", "Bob", 10_000))
            .await
            .expect("save");
        store
            .save_user(user("id-gone", "Gone", 10))
            .await
            .expect("save");
        assert_eq!(
            store.add_membership(membership("id-ann", "dev")).await.ok(),
            Some(true)
        );
        assert_eq!(
            store.add_membership(membership("id-ann", "dev")).await.ok(),
            Some(false)
        );
        assert_eq!(
            store.add_membership(membership("id-ann", "ops")).await.ok(),
            Some(true)
        );
        assert_eq!(
            store.add_membership(membership("id-bob", "dev")).await.ok(),
            Some(true)
        );
        assert_eq!(
            store
                .add_membership(membership("id-gone", "dev"))
                .await
                .ok(),
            Some(true)
        );
        assert_eq!(
            store
                .remove_membership("id-bob".to_owned(), "dev".to_owned())
                .await
                .ok(),
            Some(true)
        );
        assert_eq!(
            store
                .remove_membership("id-bob".to_owned(), "dev".to_owned())
                .await
                .ok(),
            Some(false)
        );
        store.close().await;
    }
    let store = db.open().await;
    assert_eq!(
        store.delete_user("id-bob".to_owned()).await.ok(),
        Some(true)
    );
    assert_eq!(
        store.delete_user("id-bob".to_owned()).await.ok(),
        Some(false)
    );
    assert_eq!(store.user_named("bob", 0).await.ok(), Some(None), "deleted");
    assert_eq!(
        store.user_rooms("id-ann").await.ok(),
        Some(vec!["dev".to_owned(), "ops".to_owned()])
    );
    assert_eq!(store.user_rooms("id-bob").await.ok(), Some(Vec::new()));
    let live: Vec<(String, String)> = store
        .live_memberships(100)
        .await
        .expect("memberships")
        .into_iter()
        .map(|m| (m.user_id, m.room))
        .collect();
    assert_eq!(
        live,
        [
            ("id-ann".to_owned(), "dev".to_owned()),
            ("id-ann".to_owned(), "ops".to_owned())
        ],
        "an expired user's memberships are left out"
    );
    store.close().await;
}

async fn who_was_online_survives_reopening_until_marked_offline(backend: Backend) {
    let db = TestDb::new(backend).await;
    {
        let store = db.open().await;
        for id in ["id-ann", "id-bob", "id-cy"] {
            store.save_user(user(id, id, 10_000)).await.expect("save");
        }
        store
            .set_online(
                vec!["id-bob".to_owned(), "id-nobody".to_owned()],
                false,
                "local".to_owned(),
            )
            .await
            .expect("bob left");
        store
            .set_online(Vec::new(), false, "local".to_owned())
            .await
            .expect("nobody left");
        // A crash: no goodbye for ann and cy.
        store.close().await;
    }
    let store = db.open().await;
    let mut online: Vec<(String, bool)> = store
        .live_users(0)
        .await
        .expect("live")
        .into_iter()
        .map(|u| (u.user_id, u.online))
        .collect();
    online.sort();
    assert_eq!(
        online,
        [
            ("id-ann".to_owned(), true),
            ("id-bob".to_owned(), false),
            ("id-cy".to_owned(), true)
        ]
    );
    // Connecting again marks a user online again.
    store
        .save_user(user("id-bob", "id-bob", 10_000))
        .await
        .expect("back");
    let bob = store.user_named("id-bob", 0).await.expect("lookup");
    assert_eq!(bob.map(|u| u.online), Some(true));
    store.close().await;
}

/// Nodes sharing a store: a user is recorded offline only by the node that recorded it
/// online, and a node restarting restores only the users it had online itself.
async fn each_node_restores_and_departs_only_the_users_it_had_online(backend: Backend) {
    use chinwag::domain::UserId;
    use chinwag::store::History;
    use chinwag::store::history::Session;
    let db = TestDb::new(backend).await;
    let a = History::new(db.open().await).with_node("node-a");
    let b = History::new(db.open().await).with_node("node-b");
    let ann = Session {
        user: UserId::new("id-ann"),
        name: "ann".to_owned(),
    };
    let bob = Session {
        user: UserId::new("id-bob"),
        name: "bob".to_owned(),
    };
    a.save_session("token-ann", &ann, 1_000)
        .await
        .expect("ann on a");
    b.save_session("token-bob", &bob, 1_000)
        .await
        .expect("bob on b");
    let both = |ann: bool, bob: bool| vec![("id-ann".to_owned(), ann), ("id-bob".to_owned(), bob)];
    assert_eq!(online(&a).await, both(true, false), "a restores only ann");
    assert_eq!(online(&b).await, both(false, true), "b restores only bob");
    // Ann moves to b, then a's grace period for her ends: she stays online, on b.
    b.mark_online(vec![ann.user.clone()]).await;
    a.mark_offline(vec![ann.user.clone(), bob.user.clone()])
        .await;
    assert_eq!(
        online(&b).await,
        both(true, true),
        "a departs nobody of b's"
    );
    assert_eq!(online(&a).await, both(false, false));
    b.mark_offline(vec![ann.user.clone()]).await;
    assert_eq!(online(&b).await, both(false, true));
    // A single node (the default name) is one more node.
    let single = History::new(db.open().await);
    assert_eq!(single.node(), chinwag::store::history::SINGLE_NODE);
    assert_eq!(online(&single).await, both(false, false));
    a.close().await;
    b.close().await;
    single.close().await;
}

/// Who `history` would restore online after a restart, by user id.
async fn online(history: &chinwag::store::History) -> Vec<(String, bool)> {
    let mut online: Vec<(String, bool)> = history
        .live_members(1_000)
        .await
        .expect("live members")
        .into_iter()
        .map(|member| (member.user.as_str().to_owned(), member.online))
        .collect();
    online.sort();
    online
}

async fn reopening_the_store_keeps_everything_and_continues_the_sequence(backend: Backend) {
    let db = TestDb::new(backend).await;
    let room = Conversation::room("general");
    let dm = Conversation::direct("id-a", "id-b");
    let before_restart = {
        let store = db.open().await;
        for i in 1..=5 {
            append(
                &*store,
                new_message(&room, "alice", &format!("m{i}"), Some(&format!("c{i}"))),
            )
            .await;
        }
        append(&*store, new_message(&dm, "a", "psst", None)).await;
        store
            .create_room(RoomRecord {
                name: "general".to_owned(),
                created_at_ms: 1,
                created_by: None,
            })
            .await
            .expect("create room");
        store
            .save_session(SessionRecord {
                token_hash: "h".to_owned(),
                user_id: "id-alice".to_owned(),
                name: "alice".to_owned(),
                expires_at_ms: i64::MAX,
            })
            .await
            .expect("save session");
        let messages = everything(&*store, &room).await;
        store.close().await;
        messages
    };

    // Reopened with relaxed durability: the setting changes how commits wait, not the data.
    let store = db.open_with(Durability::ProcessCrash).await;
    assert_eq!(everything(&*store, &room).await, before_restart);
    assert_eq!(store.last_seq(&room).await.ok(), Some(5));
    assert_eq!(
        append(&*store, new_message(&room, "bob", "after", None))
            .await
            .seq,
        6
    );
    assert_eq!(
        append(&*store, new_message(&dm, "b", "back", None))
            .await
            .seq,
        2
    );
    let resent = store
        .append(new_message(&room, "alice", "m3", Some("c3")))
        .await
        .expect("resend after restart");
    assert!(resent.duplicate);
    assert_eq!(resent.message, before_restart[2]);
    assert_eq!(store.room_exists("general").await.ok(), Some(true));
    assert!(matches!(store.session("h", 0).await, Ok(Some(_))));
    store.close().await;
}

async fn a_closed_store_refuses_writes_and_bad_input_is_refused(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.open().await;
    let room = Conversation::room("general");
    let too_long = "x".repeat(MAX_CLIENT_ID_LEN + 1);
    assert!(matches!(
        store
            .append(new_message(&room, "a", "hi", Some(&too_long)))
            .await,
        Err(StoreError::InvalidInput(_))
    ));
    assert!(matches!(
        store.append(new_message(&room, "a", "hi", Some(""))).await,
        Err(StoreError::InvalidInput(_))
    ));
    // PostgreSQL cannot store NUL in text: refused up front on every backend, so that one
    // client cannot fail the batch other clients' messages share.
    assert!(matches!(
        store
            .append(new_message(&room, "a", "nul\0byte", None))
            .await,
        Err(StoreError::InvalidInput(_))
    ));
    let session = SessionRecord {
        token_hash: "h".to_owned(),
        user_id: "u".to_owned(),
        name: "nul\0name".to_owned(),
        expires_at_ms: 1,
    };
    assert!(matches!(
        store.save_session(session).await,
        Err(StoreError::InvalidInput(_))
    ));
    // Reads with a NUL find nothing (nothing can be stored that way) rather than failing.
    assert_eq!(store.session("a\0b", 0).await.ok(), Some(None));
    assert_eq!(store.recovery("a\0b", 0).await.ok(), Some(None));
    assert_eq!(store.room_exists("a\0b").await.ok(), Some(false));
    let nul_room = Conversation::room("a\0b");
    assert_eq!(store.latest(&nul_room, 5).await.ok(), Some(Vec::new()));
    assert_eq!(store.last_seq(&nul_room).await.ok(), Some(0));
    // Any other text is stored exactly.
    let tricky = "'; DROP TABLE messages; -- <b>é😀</b>\u{7f}\n\tend";
    assert_eq!(
        append(&*store, new_message(&room, "a", tricky, None))
            .await
            .body,
        tricky
    );
    assert_eq!(
        store.latest(&room, 1).await.expect("latest")[0].body,
        tricky
    );

    store.close().await;
    assert!(matches!(
        store.append(new_message(&room, "a", "late", None)).await,
        Err(StoreError::Closed)
    ));
}

#[tokio::test]
async fn an_unreachable_database_is_an_error_that_hides_credentials() {
    let result = open_store("postgres://chinwag:secret@127.0.0.1:1/db", Durability::Full).await;
    let error = result.err().expect("nothing listens on port 1");
    assert!(!error.to_string().contains("secret"), "{error}");
    assert!(matches!(
        open_store("mysql://h/db", Durability::Full).await.err(),
        Some(StoreError::InvalidUrl(_))
    ));
}

#[tokio::test]
async fn a_database_path_that_is_a_directory_is_an_error() {
    let dir = std::env::temp_dir().join(format!("chinwag-store-{}", random_suffix()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let result = open_store(&dir.display().to_string(), Durability::Full).await;
    let _ = std::fs::remove_dir_all(&dir);
    assert!(result.is_err(), "a directory cannot hold the history");
}

/// PostgreSQL only: the server drops the store's connections (a restart, a failover); the
/// store reconnects, and nothing is lost or numbered twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_the_store_reconnects_after_the_server_drops_its_connections() {
    let db = TestDb::new(Backend::Postgres).await;
    let Cleanup::Schema { admin_url, schema } = &db.cleanup else {
        unreachable!("a PostgreSQL test database");
    };
    let store = db.open().await;
    let room = Conversation::room("general");
    append(&*store, new_message(&room, "alice", "before", Some("c1"))).await;

    run_admin_sql(
        admin_url,
        &format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = '{schema}'"
        ),
    )
    .await;

    // The batch that meets the dead connection fails (its caller can resend); a later one
    // succeeds on a new connection.
    let mut attempts = 0;
    let after = loop {
        attempts += 1;
        match store
            .append(new_message(&room, "alice", "after", Some("c2")))
            .await
        {
            Ok(appended) => break appended.message,
            Err(error) if attempts < 3 => eprintln!("attempt {attempts}: {error}"),
            Err(error) => panic!("the store did not reconnect: {error}"),
        }
    };
    assert_eq!(after.seq, 2, "no sequence lost to the failed attempt");
    assert_eq!(seqs(&everything(&*store, &room).await), [1, 2]);
    store.close().await;
}

/// How many acknowledged appends the crash test waits for before killing the child.
const ACKS_BEFORE_KILL: usize = 300;

async fn every_acknowledged_message_survives_kill_9_of_the_writing_process(backend: Backend) {
    let db = TestDb::new(backend).await;
    let room = Conversation::room("crash");
    // Create the schema before the child starts, so the child only appends.
    db.open().await.close().await;

    let mut child = Command::new(std::env::current_exe().expect("test binary path"))
        .args([
            "crash_probe_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(PROBE_URL_ENV, &db.url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the crash probe");
    let stdout = child.stdout.take().expect("child stdout");
    // Read acks on a thread: the pipe is blocking, and the deadline must hold even if the
    // child prints nothing.
    let (acks_tx, mut acks_rx) = tokio::sync::mpsc::unbounded_channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(ack) = line.strip_prefix("acked ")
                && acks_tx.send(ack.to_owned()).is_err()
            {
                break;
            }
        }
    });
    let mut acked: BTreeMap<String, i64> = BTreeMap::new();
    let wait = tokio::time::timeout(Duration::from_secs(60), async {
        while acked.len() < ACKS_BEFORE_KILL {
            let Some(line) = acks_rx.recv().await else {
                break;
            };
            let (seq, client_id) = line.split_once(' ').expect("ack line: <seq> <client id>");
            acked.insert(client_id.to_owned(), seq.parse().expect("seq"));
        }
    })
    .await;
    // SIGKILL, by PID, while the child is still appending.
    child.kill().expect("kill -9 the probe");
    let status = child.wait().expect("reap the probe");
    assert!(
        wait.is_ok(),
        "the probe acknowledged only {} appends in time",
        acked.len()
    );
    assert!(
        !status.success(),
        "the probe must have been killed, not finished"
    );
    // Acks printed before the kill but not read yet count too.
    let _ = reader.join();
    while let Ok(line) = acks_rx.try_recv() {
        if let Some((seq, client_id)) = line.split_once(' ') {
            acked.insert(client_id.to_owned(), seq.parse().expect("seq"));
        }
    }

    let store = db.open().await;
    let stored = everything(&*store, &room).await;
    let expected: Vec<i64> = (1..=stored.len() as i64).collect();
    assert_eq!(seqs(&stored), expected, "gapless after the crash");
    let by_client_id: BTreeMap<String, i64> = stored
        .iter()
        .map(|m| {
            (
                m.client_id.clone().expect("probe messages have client ids"),
                m.seq,
            )
        })
        .collect();
    assert_eq!(by_client_id.len(), stored.len(), "no message stored twice");
    for (client_id, seq) in &acked {
        assert_eq!(
            by_client_id.get(client_id),
            Some(seq),
            "acked {client_id} lost"
        );
    }
    // Sequences continue after the crash.
    let next = append(&*store, new_message(&room, "after", "crash", None)).await;
    assert_eq!(next.seq, stored.len() as i64 + 1);
    store.close().await;
}

/// Where the crash probe child writes; set only by the crash test.
const PROBE_URL_ENV: &str = "CHINWAG_STORE_PROBE_URL";

/// The child half of the crash test: appends from 16 tasks, printing `acked <seq> <client id>`
/// for every acknowledged append, until it is killed (or, bounded, after 200,000 appends).
/// Does nothing when run on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by every_acknowledged_message_survives_kill_9_of_the_writing_process"]
async fn crash_probe_child() {
    let Ok(url) = std::env::var(PROBE_URL_ENV) else {
        return;
    };
    let store = open_store_with(&url, StoreOptions::default())
        .await
        .expect("open the store");
    let room = Conversation::room("crash");
    let producers: Vec<_> = (0..16)
        .map(|producer| {
            let (store, room) = (store.clone(), room.clone());
            tokio::spawn(async move {
                for i in 0..12_500 {
                    let client_id = format!("p{producer}-{i}");
                    let message = new_message(&room, "probe", "payload", Some(&client_id));
                    let appended = store.append(message).await.expect("append");
                    println!("acked {} {client_id}", appended.message.seq);
                }
            })
        })
        .collect();
    for producer in producers {
        producer.await.expect("producer");
    }
}

/// `behaviours! { every store: …; durable stores: …; }`: one test per backend and behaviour;
/// the durable ones (those about a database on disk) skip the memory store.
macro_rules! behaviours {
    (every store: $($name:ident),* $(,)?; durable stores: $($durable:ident),* $(,)?;) => {
        mod sqlite {
            $(behaviours!(@test $name, Sqlite);)*
            $(behaviours!(@test $durable, Sqlite);)*
        }
        mod postgres {
            $(behaviours!(@test $name, Postgres);)*
            $(behaviours!(@test $durable, Postgres);)*
        }
        mod memory {
            $(behaviours!(@test $name, Memory);)*
        }
    };
    (@test $name:ident, $backend:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            tokio::time::timeout(super::TEST_TIMEOUT, super::$name(super::Backend::$backend))
                .await
                .expect("the test timed out");
        }
    };
}

behaviours! {
    every store:
        appends_get_gapless_sequences_per_conversation_from_one,
        concurrent_appends_from_many_tasks_get_gapless_sequences,
        two_writers_sharing_one_database_still_number_gaplessly,
        three_stores_writing_one_hot_room_at_once_number_it_gaplessly,
        a_name_is_held_by_one_user_until_it_expires_or_is_released,
        concurrent_claims_of_one_name_from_three_stores_have_one_winner,
        resending_a_client_id_returns_the_original_message,
        latest_before_and_after_page_exactly,
        one_read_returns_at_most_the_page_limit,
        direct_conversations_are_independent_of_rooms_and_each_other,
        rooms_are_registered_once_and_listed_by_name,
        rooms_are_listed_page_by_page_with_their_creators,
        a_created_room_stores_its_creators_membership_and_a_refused_one_nothing,
        a_message_is_found_by_its_authors_client_id,
        sessions_and_recovery_records_round_trip_and_expire,
        users_hold_their_names_until_they_expire,
        who_was_online_survives_reopening_until_marked_offline,
        each_node_restores_and_departs_only_the_users_it_had_online,
        memberships_are_added_once_removed_and_survive_reopening,
        reopening_the_store_keeps_everything_and_continues_the_sequence,
        a_closed_store_refuses_writes_and_bad_input_is_refused;
    durable stores:
        every_acknowledged_message_survives_kill_9_of_the_writing_process;
}

/// The cost of the hot room's counter row: the same senders and messages to one room, from one
/// store and from three stores on one PostgreSQL (whose commits then serialise on that row).
/// Prints messages per second; run with `--ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a test: run it by name"]
async fn postgres_hot_room_rate_from_one_and_from_three_stores() {
    const SENDERS: usize = 12;
    const PER_SENDER: usize = 250;
    for stores in [1, 3, 1, 3] {
        let db = TestDb::new(Backend::Postgres).await;
        let mut nodes = Vec::new();
        for _ in 0..stores {
            nodes.push(db.open().await);
        }
        let room = Conversation::room("hot");
        let (acked, took) = write_hot_room(&nodes, &room, SENDERS / stores, PER_SENDER).await;
        assert_eq!(acked.len(), SENDERS * PER_SENDER);
        let batches: f64 = nodes
            .iter()
            .filter_map(|node| node.writer_stats())
            .filter_map(|stats| stats.batch_size.cumulative().last().map(|(_, n)| *n as f64))
            .sum();
        println!(
            "{stores} store(s), {SENDERS} senders, {} messages: {:.0} messages/s, {:.1} messages per commit",
            acked.len(),
            acked.len() as f64 / took.as_secs_f64(),
            acked.len() as f64 / batches,
        );
        for node in nodes {
            node.close().await;
        }
    }
}

/// The SQLite file holds every message and who holds which name: only its owner may read it,
/// and the WAL and shared-memory files SQLite creates next to it likewise.
#[cfg(unix)]
#[tokio::test]
async fn the_sqlite_database_and_its_wal_are_created_private_to_their_owner() {
    use std::os::unix::fs::PermissionsExt;
    let db = TestDb::new(Backend::Sqlite).await;
    let store = db.open().await;
    let room = Conversation::room("general");
    append(&*store, new_message(&room, "alice", "secret", None)).await;
    let file = PathBuf::from(db.url.trim_start_matches("sqlite://"));
    let mut checked = 0;
    for suffix in ["", "-wal", "-shm"] {
        let path = PathBuf::from(format!("{}{suffix}", file.display()));
        if suffix.is_empty() {
            assert!(path.exists(), "{} exists", path.display());
        }
        if let Ok(metadata) = std::fs::metadata(&path) {
            let mode = metadata.permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{} has mode {mode:o}", path.display());
            checked += 1;
        }
    }
    assert!(checked >= 2, "the database and its WAL were checked");
    store.close().await;
}

/// The memory store forgets rather than grows: a conversation keeps its newest messages (a
/// resend of a forgotten one is stored again), and its sequence goes on without a gap.
#[tokio::test]
async fn the_memory_store_keeps_the_newest_messages_of_a_conversation() {
    let store = MemoryStore::new(MemoryLimits {
        messages_per_conversation: 3,
        ..MemoryLimits::default()
    });
    let room = Conversation::room("general");
    for i in 1..=5 {
        let client_id = format!("c{i}");
        append(&store, new_message(&room, "alice", "hi", Some(&client_id))).await;
    }
    assert_eq!(seqs(&everything(&store, &room).await), [3, 4, 5]);
    assert_eq!(store.last_seq(&room).await.ok(), Some(5));
    let resent = store
        .append(new_message(&room, "alice", "hi", Some("c5")))
        .await
        .expect("resend");
    assert!(resent.duplicate);
    assert_eq!(resent.message.seq, 5);
    let forgotten = store
        .append(new_message(&room, "alice", "hi", Some("c1")))
        .await
        .expect("resend of a forgotten one");
    assert!(!forgotten.duplicate);
    assert_eq!(forgotten.message.seq, 6);
}

/// What `--no-history` runs on: sequences and sessions, but no scrollback, no names held
/// beyond their connections, no rooms or memberships, no recovery records.
#[tokio::test]
async fn the_memory_store_without_history_keeps_only_sequences_and_sessions() {
    let store = MemoryStore::new(MemoryLimits::no_history());
    let room = Conversation::room("general");
    append(&store, new_message(&room, "alice", "one", Some("c1"))).await;
    let second = append(&store, new_message(&room, "alice", "two", Some("c1"))).await;
    assert_eq!(second.seq, 2, "no resend is recognised without history");
    assert_eq!(store.latest(&room, 10).await.ok(), Some(Vec::new()));
    assert_eq!(store.after(&room, 0, 10).await.ok(), Some(Vec::new()));
    assert_eq!(store.last_seq(&room).await.ok(), Some(2));

    let session = SessionRecord {
        token_hash: "h".to_owned(),
        user_id: "id-alice".to_owned(),
        name: "alice".to_owned(),
        expires_at_ms: 100,
    };
    store.save_session(session.clone()).await.expect("session");
    assert_eq!(store.session("h", 10).await.ok(), Some(Some(session)));
    let user = UserRecord {
        user_id: "id-alice".to_owned(),
        name: "alice".to_owned(),
        name_key: "alice".to_owned(),
        expires_at_ms: 100,
        online: true,
        node: "local".to_owned(),
    };
    store.save_user(user).await.expect("user");
    assert_eq!(store.user_named("alice", 10).await.ok(), Some(None));
    let dev = RoomRecord {
        name: "dev".to_owned(),
        created_at_ms: 1,
        created_by: Some("id-alice".to_owned()),
    };
    assert_eq!(store.create_room(dev.clone()).await.ok(), Some(true));
    assert_eq!(
        store.create_room(dev).await.ok(),
        Some(true),
        "nothing recorded"
    );
    assert_eq!(store.user_rooms("id-alice").await.ok(), Some(Vec::new()));
    let recovery = RecoveryRecord {
        pid: "p".to_owned(),
        user_id: "id-alice".to_owned(),
        state: "{}".to_owned(),
        expires_at_ms: 100,
    };
    store.save_recovery(recovery).await.expect("recovery");
    assert_eq!(store.recovery("p", 10).await.ok(), Some(None));
    assert!(store.writer_stats().is_none());
}

/// Sessions are bounded: past the bound an old one is forgotten, never the one just saved.
#[tokio::test]
async fn the_memory_store_holds_at_most_its_bound_of_sessions() {
    let store = MemoryStore::new(MemoryLimits {
        sessions: 2,
        ..MemoryLimits::default()
    });
    for token in ["a", "b", "c"] {
        let session = SessionRecord {
            token_hash: token.to_owned(),
            user_id: format!("id-{token}"),
            name: token.to_owned(),
            expires_at_ms: 100,
        };
        store.save_session(session).await.expect("session");
    }
    let mut kept = 0;
    for token in ["a", "b", "c"] {
        if store.session(token, 0).await.expect("read").is_some() {
            kept += 1;
        }
    }
    assert_eq!(kept, 2);
    assert!(store.session("c", 0).await.expect("read").is_some());
}
