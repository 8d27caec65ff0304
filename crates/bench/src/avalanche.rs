//! Scenario 4, restart avalanche: C connected clients, the server stopped (SIGTERM or kill -9,
//! by `bench/run.sh`, which owns the server) and started again on the same port. Every client
//! reconnects with socket.io-client's default backoff (1 s doubling to 5 s, ±50 %); reports the
//! time from the first disconnect until each client is back (p50/p95/max), clients that never
//! come back within the bound, and messages lost (published, never received).
//!
//! Handshake with the script: once every client is connected and publishing has started, the
//! generator creates `--ready-file`; the script then stops and restarts the server.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;

use crate::client::Ended;
use crate::error::BenchError;
use crate::histogram::Histogram;
use crate::jitter::Jitter;
use crate::receipts::{self, ClientState, Latencies, Recovery};
use crate::{Common, emit_record, now_micros};

/// Options of the avalanche scenario.
#[derive(clap::Args, Debug, Clone)]
pub struct AvalancheArgs {
    #[arg(long, default_value_t = 5000)]
    pub clients: usize,
    /// Messages per second in total, from one publisher, each to everyone.
    #[arg(long, default_value_t = 2.0)]
    pub rate: f64,
    /// How the server is stopped (TERM or KILL): a label for the record, the script sends it.
    #[arg(long, default_value = "TERM")]
    pub signal: String,
    /// File created once every client is connected: the script's cue to restart the server.
    #[arg(long)]
    pub ready_file: Option<std::path::PathBuf>,
    /// How clients get back what they missed.
    #[arg(long, value_enum, default_value_t = Recovery::None)]
    pub recovery: Recovery,
    /// Seconds of publishing after every client is back, before counting.
    #[arg(long, default_value_t = 3)]
    pub settle_secs: u64,
    /// Upper bound on the whole scenario, in seconds.
    #[arg(long, default_value_t = 150)]
    pub max_secs: u64,
}

/// socket.io-client's default reconnection delay for attempt `n` (0-based), in ms.
fn backoff_ms(attempt: u32, jitter: &mut Jitter) -> u64 {
    let base = (1000u64 << attempt.min(3)).min(5000) as f64;
    let spread = (jitter.next_unit() * 2.0 - 1.0) * 0.5 * base;
    (base + spread).max(0.0) as u64
}

pub async fn run(common: &Common, args: &AvalancheArgs) -> Result<(), BenchError> {
    let deadline = Instant::now() + Duration::from_secs(args.max_secs);
    let connector = Arc::new(common.connector()?);
    let max_messages = (args.rate * args.max_secs as f64).ceil() as u64 + 1;
    let latencies = Arc::new(Latencies::default());
    let connected = Arc::new(AtomicUsize::new(0));
    let back = Arc::new(AtomicUsize::new(0));
    // When the first client saw the server go (µs since the epoch; MAX until then).
    let first_down = Arc::new(AtomicU64::new(u64::MAX));
    let (stop_tx, stop_rx) = watch::channel(false);
    let permits = Arc::new(Semaphore::new(common.connect_concurrency.max(1)));
    // Failed connection attempts by cause (the first words of the error), for the log.
    let failures: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();

    let mut clients = Vec::with_capacity(args.clients);
    for index in 0..args.clients {
        let connector = Arc::clone(&connector);
        let latencies = Arc::clone(&latencies);
        let connected = Arc::clone(&connected);
        let back = Arc::clone(&back);
        let first_down = Arc::clone(&first_down);
        let failures = Arc::clone(&failures);
        let permits = Arc::clone(&permits);
        let stop = stop_rx.clone();
        let base_auth = common.auth_for(index);
        let recovery = args.recovery;
        clients.push(tokio::spawn(async move {
            let mut state = ClientState::new(max_messages);
            let mut jitter = Jitter::new(index as u64 + 7);
            let mut attempt = 0;
            let mut went_down = false;
            // When this client was back after the restart (µs since the epoch).
            let mut back_at = None;
            while !*stop.borrow() {
                let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
                    break;
                };
                let until = {
                    let mut stop = stop.clone();
                    let connected = Arc::clone(&connected);
                    let back = Arc::clone(&back);
                    let first_time = !went_down && attempt == 0;
                    let returning = went_down && back_at.is_none();
                    async move {
                        drop(permit);
                        if first_time {
                            connected.fetch_add(1, Ordering::Relaxed);
                        }
                        if returning {
                            back.fetch_add(1, Ordering::Relaxed);
                        }
                        stop.changed().await.ok();
                    }
                };
                let was_down = went_down && back_at.is_none();
                let ended = receipts::connect_once(
                    &connector,
                    &mut state,
                    recovery,
                    base_auth.as_deref(),
                    &latencies,
                    until,
                )
                .await;
                if was_down && ended.is_ok() {
                    back_at = Some(state.connected_at);
                }
                match ended {
                    Ok(None) => break,
                    Ok(Some(Ended::ByServer)) | Ok(Some(Ended::ByUs)) => {
                        if !went_down {
                            went_down = true;
                            first_down.fetch_min(now_micros(), Ordering::Relaxed);
                        }
                        attempt = 0;
                    }
                    Err(err) => {
                        if went_down {
                            let cause: String = err.chars().take(48).collect();
                            *failures
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .entry(cause)
                                .or_default() += 1;
                        }
                        attempt += 1;
                    }
                }
                let delay = Duration::from_millis(backoff_ms(attempt, &mut jitter));
                let mut stop = stop.clone();
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.changed() => break,
                }
            }
            (state, back_at)
        }));
    }

    while connected.load(Ordering::Relaxed) < args.clients && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let initially = connected.load(Ordering::Relaxed);
    eprintln!(
        "[{}] avalanche: {initially} of {} clients connected",
        common.label, args.clients
    );

    let published = Arc::new(AtomicU64::new(0));
    // Messages the server acknowledged as stored (chinwag's own protocol has acks).
    let acked: Arc<Mutex<HashSet<u64>>> = Arc::default();
    let (publish_stop_tx, publish_stop_rx) = watch::channel(false);
    let publisher = tokio::spawn(receipts::publish(
        Arc::clone(&connector),
        common.clone(),
        args.rate,
        max_messages,
        publish_stop_rx,
        Arc::clone(&published),
        Arc::clone(&acked),
    ));
    tokio::time::sleep(Duration::from_secs(2)).await;
    if let Some(ready) = &args.ready_file {
        std::fs::write(ready, b"ready\n")?;
    }
    eprintln!(
        "[{}] avalanche: ready, waiting for the restart ({})",
        common.label, args.signal
    );

    // Everyone back (or the bound), then a few seconds more of publishing.
    while back.load(Ordering::Relaxed) < initially && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let settle_until = (Instant::now() + Duration::from_secs(args.settle_secs)).min(deadline);
    tokio::time::sleep_until(settle_until).await;
    publish_stop_tx.send(true).ok();
    let sent_at = publisher.await.unwrap_or_default();
    // A last second for the final messages to arrive.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop_tx.send(true).ok();

    let down_at = first_down.load(Ordering::Relaxed);
    let back_times = Histogram::default();
    let mut never_back = 0;
    let mut missing_per_message = vec![0u64; sent_at.len()];
    for client in clients {
        let Ok((state, back_at)) = client.await else {
            continue;
        };
        match back_at {
            Some(at) if down_at != u64::MAX => back_times.record(at.saturating_sub(down_at)),
            _ => never_back += 1,
        }
        for (id, missing) in missing_per_message.iter_mut().enumerate() {
            if !state.has(id as u64) {
                *missing += 1;
            }
        }
    }
    let lost_messages = missing_per_message
        .iter()
        .filter(|missing| **missing > 0)
        .count();
    let acked = acked.lock().unwrap_or_else(PoisonError::into_inner).clone();
    // What the server promised: acknowledged, and still not received by someone.
    let lost_acknowledged = missing_per_message
        .iter()
        .enumerate()
        .filter(|(id, missing)| **missing > 0 && acked.contains(&(*id as u64)))
        .count();
    let lost_deliveries: u64 = missing_per_message.iter().sum();
    let summary = back_times.summary_ms();
    eprintln!(
        "[{}] avalanche ({}, {:?}): {} back, {never_back} never back; back after p50 {:.0} \
         p95 {:.0} max {:.0} ms; {} messages published, {lost_messages} lost by someone \
         ({lost_deliveries} deliveries); {} acknowledged, {lost_acknowledged} of them lost",
        common.label,
        args.signal,
        args.recovery,
        back_times.count(),
        summary.p50,
        summary.p95,
        summary.max,
        sent_at.len(),
        acked.len(),
    );
    let q = |q: f64| back_times.quantile(q) / 1000;
    eprintln!(
        "[{}] avalanche: back after p10 {} p25 {} p75 {} p90 {} ms; failed attempts after \
         the stop: {:?}",
        common.label,
        q(0.10),
        q(0.25),
        q(0.75),
        q(0.90),
        failures.lock().unwrap_or_else(PoisonError::into_inner)
    );
    emit_record(serde_json::json!({
        "scenario": "avalanche",
        "label": common.label,
        "signal": args.signal,
        "recovery": format!("{:?}", args.recovery).to_lowercase(),
        "clients": initially,
        "back": back_times.count(),
        "never_back": never_back,
        "back_p50_ms": summary.p50,
        "back_p95_ms": summary.p95,
        "back_max_ms": summary.max,
        "published": sent_at.len(),
        "lost_messages": lost_messages,
        "acknowledged": acked.len(),
        // Without acknowledgements (the tutorial protocol) nothing was promised: not measured.
        "lost_acknowledged": (!acked.is_empty()).then_some(lost_acknowledged),
        "lost_deliveries": lost_deliveries,
    }));
    Ok(())
}
