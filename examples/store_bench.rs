//! Acknowledged appends per second of the history store: group commit vs. one transaction per
//! message, SQLite `synchronous=FULL` vs `NORMAL`, and PostgreSQL if one is reachable.
//!
//! `cargo run --release --example store_bench [-- --producers 64 --seconds 3 --postgres URL
//! --filter LABEL-PART]`
//!
//! Each configuration runs `producers` tasks appending to one room as fast as their acks come
//! back, for at most `seconds` or `MAX_APPENDS` appends, on a fresh database that is removed
//! afterwards. Bounded in time and size; prints one line per configuration.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chinwag::store::{
    Author, Conversation, Durability, HistoryStore, NewMessage, StoreOptions, open_store_with,
};

/// Upper bound on appends per configuration, whatever the speed.
const MAX_APPENDS: usize = 200_000;

struct Args {
    producers: usize,
    seconds: u64,
    postgres: Option<String>,
    /// Only configurations whose label contains this.
    filter: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        producers: 64,
        seconds: 3,
        postgres: None,
        filter: None,
    };
    let mut iter = std::env::args().skip(1);
    while let Some(flag) = iter.next() {
        let value = iter.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--producers" => {
                args.producers = value
                    .parse::<usize>()
                    .map_err(|e| format!("--producers: {e}"))?
                    .clamp(1, 4096)
            }
            "--seconds" => {
                args.seconds = value
                    .parse::<u64>()
                    .map_err(|e| format!("--seconds: {e}"))?
                    .clamp(1, 60)
            }
            "--postgres" => args.postgres = Some(value),
            "--filter" => args.filter = Some(value),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(args)
}

struct Outcome {
    appends: usize,
    elapsed: Duration,
    p50: Duration,
    p99: Duration,
}

async fn run(store: Arc<dyn HistoryStore>, producers: usize, seconds: u64) -> Outcome {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let issued = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..producers)
        .map(|producer| {
            let (store, issued) = (store.clone(), issued.clone());
            tokio::spawn(async move {
                let room = Conversation::room("bench");
                let mut latencies = Vec::new();
                while Instant::now() < deadline
                    && issued.fetch_add(1, Ordering::Relaxed) < MAX_APPENDS
                {
                    let message = NewMessage {
                        conversation: room.clone(),
                        author: Author {
                            user_id: format!("u{producer}"),
                            name: format!("user {producer}"),
                        },
                        body: "a typical chat message of about sixty characters, give or take"
                            .to_owned(),
                        client_id: Some(format!("{producer}-{}", latencies.len())),
                        sent_at_ms: 1_700_000_000_000,
                    };
                    let sent = Instant::now();
                    if let Err(error) = store.append(message).await {
                        eprintln!("append failed: {error}");
                        break;
                    }
                    latencies.push(sent.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        if let Ok(mut mine) = task.await {
            latencies.append(&mut mine);
        }
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    Outcome {
        appends: latencies.len(),
        elapsed,
        p50: at(0.50),
        p99: at(0.99),
    }
}

fn report(label: &str, outcome: &Outcome) {
    println!(
        "{label:<44} {:>9.0} acked appends/s  ({} in {:.2}s, p50 {:.2} ms, p99 {:.2} ms)",
        outcome.appends as f64 / outcome.elapsed.as_secs_f64(),
        outcome.appends,
        outcome.elapsed.as_secs_f64(),
        outcome.p50.as_secs_f64() * 1e3,
        outcome.p99.as_secs_f64() * 1e3,
    );
}

fn options(durability: Durability, max_batch: usize) -> StoreOptions {
    StoreOptions {
        durability,
        max_batch,
        ..StoreOptions::default()
    }
}

const CONFIGURATIONS: [(&str, Durability, usize); 4] = [
    ("FULL, group commit", Durability::Full, 1024),
    ("FULL, one transaction per message", Durability::Full, 1),
    ("NORMAL, group commit", Durability::ProcessCrash, 1024),
    (
        "NORMAL, one transaction per message",
        Durability::ProcessCrash,
        1,
    ),
];

async fn postgres_admin(url: &str, sql: &str) -> Result<(), sqlx::Error> {
    use sqlx::Connection;
    let mut connection = sqlx::PgConnection::connect(url).await?;
    sqlx::query(sql).execute(&mut connection).await?;
    connection.close().await
}

#[tokio::main]
async fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(error) => {
            eprintln!("store_bench: {error}");
            std::process::exit(2);
        }
    };
    println!(
        "store_bench: {} producers, {} s or {MAX_APPENDS} appends per configuration",
        args.producers, args.seconds
    );

    let wanted = |label: &str| args.filter.as_ref().is_none_or(|part| label.contains(part));
    for (label, durability, max_batch) in CONFIGURATIONS {
        if !wanted(&format!("SQLite {label}")) {
            continue;
        }
        let dir = std::env::temp_dir().join(format!("chinwag-bench-{:x}", rand::random::<u64>()));
        let url = format!("sqlite://{}", dir.join("bench.db").display());
        match open_store_with(&url, options(durability, max_batch)).await {
            Ok(store) => {
                let outcome = run(store.clone(), args.producers, args.seconds).await;
                store.close().await;
                report(&format!("SQLite {label}"), &outcome);
            }
            Err(error) => eprintln!("SQLite {label}: {error}"),
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    let Some(admin_url) = args.postgres.clone() else {
        return;
    };
    for (label, durability, max_batch) in CONFIGURATIONS {
        let label = label
            .replace("FULL", "synchronous_commit=on")
            .replace("NORMAL", "synchronous_commit=off");
        if !wanted(&format!("PostgreSQL {label}")) {
            continue;
        }
        let schema = format!("bench_{:x}", rand::random::<u64>());
        if let Err(error) = postgres_admin(&admin_url, &format!("CREATE SCHEMA {schema}")).await {
            eprintln!("PostgreSQL: {error}");
            return;
        }
        let separator = if admin_url.contains('?') { '&' } else { '?' };
        let url = format!("{admin_url}{separator}options[search_path]={schema}");
        match open_store_with(&url, options(durability, max_batch)).await {
            Ok(store) => {
                let outcome = run(store.clone(), args.producers, args.seconds).await;
                store.close().await;
                report(&format!("PostgreSQL {label}"), &outcome);
            }
            Err(error) => eprintln!("PostgreSQL {label}: {error}"),
        }
        let drop_schema = format!("DROP SCHEMA {schema} CASCADE");
        if let Err(error) = postgres_admin(&admin_url, &drop_schema).await {
            eprintln!("PostgreSQL: {drop_schema}: {error}");
        }
    }
}
