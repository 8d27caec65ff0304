//! Scenario 3, delivery under jitter (AnyCable's public scenario, scaled to this machine):
//! C clients, one publisher sending R messages per second in total (each to everyone), every
//! client's TCP connection force-closed every ~P seconds (±20 %) and kept offline for a fixed
//! delay, the same for every server. Reports the delivery rate, latency from send and replay lag
//! (receipt minus the later of send time and reconnect time), p50/p95/p99/max.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;

use crate::error::BenchError;
use crate::receipts::{self, ClientState, Latencies, Recovery};
use crate::{Common, emit_record};

/// Options of the jitter scenario.
#[derive(clap::Args, Debug, Clone)]
pub struct JitterArgs {
    #[arg(long, default_value_t = 2000)]
    pub clients: usize,
    /// Messages per second in total, from one publisher, each to everyone.
    #[arg(long, default_value_t = 2.0)]
    pub rate: f64,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 60)]
    pub secs: u64,
    /// Mean seconds between two forced closes of one client's connection.
    #[arg(long, default_value_t = 15.0)]
    pub period_secs: f64,
    /// Milliseconds a dropped client stays offline before reconnecting.
    #[arg(long, default_value_t = 2000)]
    pub offline_ms: u64,
    /// How clients get back what they missed.
    #[arg(long, value_enum, default_value_t = Recovery::None)]
    pub recovery: Recovery,
    /// Seconds after publishing ends for everyone to reconnect and catch up.
    #[arg(long, default_value_t = 6)]
    pub drain_secs: u64,
}

/// A small deterministic generator (xorshift) for drop times: reproducible runs, no dependency.
pub struct Jitter(u64);

impl Jitter {
    pub fn new(seed: u64) -> Jitter {
        Jitter(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// A uniform value in [0, 1).
    pub fn next_unit(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

pub async fn run(common: &Common, args: &JitterArgs) -> Result<(), BenchError> {
    let connector = Arc::new(common.connector()?);
    let max_messages = (args.rate * args.secs as f64).ceil() as u64 + 1;
    let latencies = Arc::new(Latencies::default());
    let connected = Arc::new(AtomicUsize::new(0));
    let drops = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = watch::channel(false);
    // When publishing starts; every client's drop schedule is counted from it.
    let (start_tx, start_rx) = watch::channel::<Option<Instant>>(None);
    let permits = Arc::new(Semaphore::new(common.connect_concurrency.max(1)));

    let mut clients = Vec::with_capacity(args.clients);
    for index in 0..args.clients {
        let connector = Arc::clone(&connector);
        let latencies = Arc::clone(&latencies);
        let connected = Arc::clone(&connected);
        let drops = Arc::clone(&drops);
        let failures = Arc::clone(&failures);
        let permits = Arc::clone(&permits);
        let stop = stop_rx.clone();
        let start = start_rx.clone();
        let base_auth = common.auth_for(index);
        let args = args.clone();
        clients.push(tokio::spawn(async move {
            let mut state = ClientState::new(max_messages);
            let offline = Duration::from_millis(args.offline_ms);
            let mut first = true;
            while !*stop.borrow() {
                let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
                    break;
                };
                let until = {
                    let connected = Arc::clone(&connected);
                    let mut stop = stop.clone();
                    let mut start = start.clone();
                    let args = args.clone();
                    let counts_as_first = first;
                    async move {
                        // Connected: let the next handshake in.
                        drop(permit);
                        if counts_as_first {
                            connected.fetch_add(1, Ordering::Relaxed);
                        }
                        let started = tokio::select! {
                            started = wait_for_start(&mut start) => started,
                            _ = stop.changed() => return,
                        };
                        let Some(started) = started else { return };
                        let now = Instant::now();
                        match drop_times(started, index, &args)
                            .into_iter()
                            .find(|at| *at > now)
                        {
                            Some(at) => tokio::select! {
                                _ = tokio::time::sleep_until(at) => {}
                                _ = stop.changed() => {}
                            },
                            None => {
                                stop.changed().await.ok();
                            }
                        }
                    }
                };
                first = false;
                let ended = receipts::connect_once(
                    &connector,
                    &mut state,
                    args.recovery,
                    base_auth.as_deref(),
                    &latencies,
                    until,
                )
                .await;
                if *stop.borrow() {
                    break;
                }
                match ended {
                    Ok(None) => {
                        drops.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Some(_)) => {}
                    Err(_) => {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
                // Offline for the same delay after a drop, a server close or a failed connect.
                let mut stop = stop.clone();
                tokio::select! {
                    _ = tokio::time::sleep(offline) => {}
                    _ = stop.changed() => break,
                }
            }
            state
        }));
    }
    wait_connected(common, &connected, args.clients).await;
    start_tx.send(Some(Instant::now())).ok();

    let published = Arc::new(AtomicU64::new(0));
    let (publish_stop_tx, publish_stop_rx) = watch::channel(false);
    let publisher = tokio::spawn(receipts::publish(
        Arc::clone(&connector),
        common.clone(),
        args.rate,
        max_messages,
        publish_stop_rx,
        Arc::clone(&published),
        Arc::default(),
    ));
    tokio::time::sleep(Duration::from_secs(args.secs)).await;
    publish_stop_tx.send(true).ok();
    let sent_at = publisher.await.unwrap_or_default();
    tokio::time::sleep(Duration::from_secs(args.drain_secs)).await;
    stop_tx.send(true).ok();

    let messages = sent_at.len() as u64;
    let mut unique = 0;
    let mut finished = 0;
    for client in clients {
        if let Ok(state) = client.await {
            unique += (0..messages).filter(|id| state.has(*id)).count() as u64;
            finished += 1;
        }
    }
    let expected = messages * finished;
    let delivery_pct = if expected > 0 {
        100.0 * unique as f64 / expected as f64
    } else {
        0.0
    };
    let send = latencies.from_send.summary_ms();
    let lag = latencies.replay_lag.summary_ms();
    eprintln!(
        "[{}] jitter ({:?}): {unique}/{expected} delivered ({delivery_pct:.2}%), {} drops, \
         from send p50 {:.0} p95 {:.0} p99 {:.0} max {:.0} ms; replay lag p50 {:.0} p95 {:.0} \
         p99 {:.0} max {:.0} ms; {} failed connects, {} duplicates",
        common.label,
        args.recovery,
        drops.load(Ordering::Relaxed),
        send.p50,
        send.p95,
        send.p99,
        send.max,
        lag.p50,
        lag.p95,
        lag.p99,
        lag.max,
        failures.load(Ordering::Relaxed),
        latencies.duplicates.load(Ordering::Relaxed),
    );
    emit_record(serde_json::json!({
        "scenario": "jitter",
        "label": common.label,
        "recovery": format!("{:?}", args.recovery).to_lowercase(),
        "clients": finished,
        "messages": messages,
        "expected": expected,
        "delivered": unique,
        "delivery_pct": delivery_pct,
        "drops": drops.load(Ordering::Relaxed),
        "failed_connects": failures.load(Ordering::Relaxed),
        "duplicates": latencies.duplicates.load(Ordering::Relaxed),
        "send_p50_ms": send.p50, "send_p95_ms": send.p95, "send_p99_ms": send.p99, "send_max_ms": send.max,
        "lag_p50_ms": lag.p50, "lag_p95_ms": lag.p95, "lag_p99_ms": lag.p99, "lag_max_ms": lag.max,
    }));
    Ok(())
}

/// Waits for the start of publishing; `None` if it will never come.
async fn wait_for_start(start: &mut watch::Receiver<Option<Instant>>) -> Option<Instant> {
    loop {
        if let Some(at) = *start.borrow() {
            return Some(at);
        }
        start.changed().await.ok()?;
    }
}

/// One client's forced-close times: a random first one within the first period, then every
/// period ±20 %, all before publishing ends (afterwards every client stays connected).
fn drop_times(started: Instant, index: usize, args: &JitterArgs) -> Vec<Instant> {
    let mut jitter = Jitter::new(index as u64 + 1);
    let end = started + Duration::from_secs(args.secs);
    let offline = Duration::from_millis(args.offline_ms);
    let mut at = started + Duration::from_secs_f64(jitter.next_unit() * args.period_secs);
    let mut times = Vec::new();
    while at < end {
        times.push(at);
        let period = args.period_secs * (0.8 + 0.4 * jitter.next_unit());
        at += offline + Duration::from_secs_f64(period);
    }
    times
}

/// Waits (at most 60 s) until every client has connected once, then reports how many did.
async fn wait_connected(common: &Common, connected: &AtomicUsize, clients: usize) {
    let stop = Instant::now() + Duration::from_secs(60);
    while connected.load(Ordering::Relaxed) < clients && Instant::now() < stop {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "[{}] jitter: {} of {clients} clients connected",
        common.label,
        connected.load(Ordering::Relaxed)
    );
}
