//! Scenario 2, fan-out: C clients in one room, S of them sending, at rising total rates until the
//! server saturates. Every message carries its send time; every receiver records the one-way
//! latency of every copy it gets, so a step reports delivered/expected, p50/p99/p99.9/max, the
//! server's CPU and RSS and the generator's own CPU, and, when asked (`--watch`, `--counter`),
//! other processes' CPU and counters over the same window (see `probes`). With several
//! `--url`s (a cluster's nodes), client i connects to url[i % n], senders included.
//!
//! Message body: `~b|STEP|SEND_MICROS|xxxx…`, found by substring wherever the server puts it in
//! the frame, so the same receiver works for the tutorial protocol, chinwag's own and raw frames.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc};

use crate::client::{self, Ended};
use crate::error::BenchError;
use crate::histogram::Histogram;
use crate::probes::{Counter, Watch};
use crate::{Common, emit_record, now_micros, procfs};

/// Options of the fan-out scenario.
#[derive(clap::Args, Debug, Clone)]
pub struct FanoutArgs {
    /// Connected clients, all receiving every message.
    #[arg(long, default_value_t = 1000)]
    pub clients: usize,
    /// Clients that also send (the first S).
    #[arg(long, default_value_t = 10)]
    pub senders: usize,
    /// Total messages per second of each step, ascending.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "10,20,50,100,200,400,700,1000,1500,2000"
    )]
    pub rates: Vec<u32>,
    /// Seconds of sending per step.
    #[arg(long, default_value_t = 5)]
    pub step_secs: u64,
    /// Longest wait after a step for late copies to arrive.
    #[arg(long, default_value_t = 3)]
    pub drain_secs: u64,
    /// Message body size in bytes (at least the marker).
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Who joins the chat (`addUser`) before the run: none, senders or all.
    #[arg(long, default_value = "senders")]
    pub join: String,
    /// Send `--auth` only for receivers: senders stay tutorial clients (`addUser`), receivers
    /// are named at CONNECT. chinwag's tutorial protocol delivers only to named sockets, and
    /// naming 1000 sockets with `addUser` costs O(N²) user lists (gigabytes at C=1000).
    #[arg(long)]
    pub auth_receivers_only: bool,
    /// Stop after the first step delivering less than this fraction of the expected copies.
    #[arg(long, default_value_t = 0.99)]
    pub min_delivery: f64,
    /// Stop after the first step whose p99 exceeds this many milliseconds.
    #[arg(long, default_value_t = 1000.0)]
    pub max_p99_ms: f64,
    /// Upper bound on the whole scenario, in seconds.
    #[arg(long, default_value_t = 180)]
    pub max_secs: u64,
    /// Also report the CPU of these processes per step: `NAME=PID[+PID…]` (summed) or
    /// `NAME=comm:COMMAND` (every process of that name, e.g. PostgreSQL's backends). Repeatable.
    #[arg(long = "watch")]
    pub watches: Vec<String>,
    /// Also report how fast a counter grows per step: `NAME=SHELL COMMAND` printing a number
    /// (e.g. PostgreSQL's `xact_commit` through psql), read at each step's start and end.
    #[arg(long = "counter")]
    pub counters: Vec<String>,
}

/// What the receivers count for one step.
#[derive(Default)]
struct StepTally {
    latency: Histogram,
}

/// Shared by every connection task of the run.
struct Tally {
    steps: Vec<StepTally>,
    /// Frames received that carried no marker (notices, user lists, acks).
    other_frames: AtomicU64,
    /// Connections the server closed during the run.
    lost_connections: AtomicUsize,
}

const MARKER: &str = "~b|";

/// Parses `~b|STEP|MICROS|` out of a frame.
fn parse_marker(frame: &str) -> Option<(usize, u64)> {
    let at = frame.find(MARKER)? + MARKER.len();
    let mut fields = frame[at..].splitn(3, '|');
    let step = fields.next()?.parse().ok()?;
    let micros = fields.next()?.parse().ok()?;
    Some((step, micros))
}

fn body(step: usize, size: usize) -> String {
    let mut text = format!("{MARKER}{step}|{}|", now_micros());
    while text.len() < size {
        text.push('x');
    }
    text
}

impl Tally {
    fn on_frame(&self, frame: &str) {
        match parse_marker(frame) {
            Some((step, sent)) if step < self.steps.len() => {
                self.steps[step]
                    .latency
                    .record(now_micros().saturating_sub(sent));
            }
            _ => {
                self.other_frames.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

pub async fn run(common: &Common, args: &FanoutArgs) -> Result<(), BenchError> {
    let deadline = Instant::now() + Duration::from_secs(args.max_secs);
    let watches = args
        .watches
        .iter()
        .map(|spec| Watch::parse(spec))
        .collect::<Result<Vec<_>, _>>()?;
    let counters = args
        .counters
        .iter()
        .map(|spec| Counter::parse(spec))
        .collect::<Result<Vec<_>, _>>()?;
    let connector = Arc::new(common.connector()?);
    let wire = connector.wire();
    let tally = Arc::new(Tally {
        steps: args.rates.iter().map(|_| StepTally::default()).collect(),
        other_frames: AtomicU64::new(0),
        lost_connections: AtomicUsize::new(0),
    });
    let senders = args.senders.clamp(1, args.clients.max(1));

    // Connect everyone, bounded concurrency, keeping the senders' outboxes. Receivers connect
    // first and the senders (who join by name) last, so each sender's join costs one user
    // list instead of one per later arrival: a server that sends named users the whole list
    // on every join (the tutorial protocol) would otherwise flood the senders at setup.
    let permits = Arc::new(Semaphore::new(common.connect_concurrency.max(1)));
    let mut outboxes = Vec::with_capacity(args.clients);
    let mut inboxes = Vec::with_capacity(args.clients);
    for _ in 0..args.clients {
        let (outbox_tx, outbox_rx) = mpsc::channel::<String>(1024);
        outboxes.push(outbox_tx);
        inboxes.push(Some(outbox_rx));
    }
    let mut connected = 0;
    for phase in [senders..args.clients, 0..senders] {
        let (ready_tx, mut ready_rx) = mpsc::channel::<Result<(), String>>(1024);
        for index in phase {
            let Some(outbox_rx) = inboxes[index].take() else {
                continue;
            };
            let joins = match args.join.as_str() {
                "all" => true,
                "senders" => index < senders,
                _ => false,
            };
            if joins && wire == client::Wire::SocketIo && !common.full {
                let frame = client::event_frame(wire, &common.join_event, &format!("u{index}"));
                outboxes[index].try_send(frame).ok();
            }
            let connector = Arc::clone(&connector);
            let permits = Arc::clone(&permits);
            let ready = ready_tx.clone();
            let tally = Arc::clone(&tally);
            let auth = if args.auth_receivers_only && index < senders {
                None
            } else {
                common.auth_for(index)
            };
            tokio::spawn(async move {
                let opened = {
                    let _permit = permits.acquire().await;
                    connector.open_for(index, auth.as_deref()).await
                };
                match opened {
                    Ok((ws, _)) => {
                        ready.send(Ok(())).await.ok();
                        drop(ready);
                        let ended =
                            client::drive(ws, wire, outbox_rx, |frame| tally.on_frame(frame)).await;
                        if ended == Ended::ByServer {
                            tally.lost_connections.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(err) => {
                        ready.send(Err(err.to_string())).await.ok();
                    }
                }
            });
        }
        drop(ready_tx);
        while let Some(result) = tokio::time::timeout_at(deadline.into(), ready_rx.recv())
            .await
            .map_err(|_| BenchError::Timeout("fan-out connections"))?
        {
            match result {
                Ok(()) => connected += 1,
                Err(err) => return Err(BenchError::Protocol(format!("a client failed: {err}"))),
            }
        }
        // Arrival notices (presence, user lists) are processed before the next phase.
        wait_quiet(&tally, Duration::from_secs(5)).await;
    }
    eprintln!(
        "[{}] fan-out: {connected} clients connected, {senders} senders",
        common.label
    );
    let pid = common.pid.clone();
    let mut max_delivered_per_s: f64 = 0.0;
    for (step, &rate) in args.rates.iter().enumerate() {
        if Instant::now() + Duration::from_secs(args.step_secs) > deadline {
            eprintln!("[{}] fan-out: time bound reached", common.label);
            break;
        }
        let server_cpu = pid.as_deref().map(procfs::CpuMeter::start);
        let own_cpu = procfs::CpuMeter::start("self");
        let watch_meters: Vec<_> = watches.iter().map(Watch::start).collect();
        let mut counts_before = Vec::with_capacity(counters.len());
        for counter in &counters {
            counts_before.push(counter.read().await);
        }
        let started = Instant::now();
        let sent = send_step(&outboxes[..senders], wire, common, step, rate, args).await;
        let expected = sent * connected as u64;
        let drained = drain(&tally.steps[step].latency, expected, args.drain_secs).await;
        let window = started.elapsed().as_secs_f64();
        let latency = &tally.steps[step].latency;
        let delivered = latency.count();
        let summary = latency.summary_ms();
        let delivered_per_s = delivered as f64 / window;
        max_delivered_per_s = max_delivered_per_s.max(delivered_per_s);
        let ratio = if expected > 0 {
            delivered as f64 / expected as f64
        } else {
            0.0
        };
        let server_cpu_pct = server_cpu.as_ref().map(|cpu| cpu.percent());
        let server_rss_kib = pid.as_deref().and_then(procfs::rss_kib);
        let own_cpu_pct = own_cpu.percent();
        let watched: serde_json::Map<String, serde_json::Value> = watches
            .iter()
            .zip(&watch_meters)
            .map(|(watch, meter)| (watch.name.clone(), watch.percent(meter).into()))
            .collect();
        let mut counted = serde_json::Map::new();
        for (counter, before) in counters.iter().zip(&counts_before) {
            let after = counter.read().await;
            let per_s = before
                .zip(after)
                .map(|(before, after)| (after - before) / window);
            counted.insert(counter.name.clone(), per_s.into());
        }
        let extras: String = watched
            .iter()
            .map(|(name, pct)| format!(", {name} CPU {:.0}%", pct.as_f64().unwrap_or(0.0)))
            .chain(counted.iter().map(|(name, per_s)| {
                format!(", {name} {:.0}/s", per_s.as_f64().unwrap_or(f64::NAN))
            }))
            .collect();
        eprintln!(
            "[{}] fan-out {rate:>5} msg/s: {delivered}/{expected} ({:.3}%) {delivered_per_s:.0}/s \
             p50 {:.1} p99 {:.1} p99.9 {:.1} max {:.1} ms, server CPU {:.0}% RSS {} KiB, \
             generator CPU {own_cpu_pct:.0}%{extras}{}",
            common.label,
            ratio * 100.0,
            summary.p50,
            summary.p99,
            summary.p999,
            summary.max,
            server_cpu_pct.unwrap_or(0.0),
            server_rss_kib.unwrap_or(0),
            if drained { "" } else { " (drain timed out)" },
        );
        emit_record(serde_json::json!({
            "scenario": "fanout",
            "label": common.label,
            "clients": connected,
            "senders": senders,
            "rate": rate,
            "sent": sent,
            "expected": expected,
            "delivered": delivered,
            "ratio": ratio,
            "deliveries_per_s": delivered_per_s,
            "window_secs": window,
            "p50_ms": summary.p50,
            "p99_ms": summary.p99,
            "p999_ms": summary.p999,
            "max_ms": summary.max,
            "server_cpu_pct": server_cpu_pct,
            "server_rss_kib": server_rss_kib,
            "gen_cpu_pct": own_cpu_pct,
            "watch_cpu_pct": watched,
            "counters_per_s": counted,
            "lost_connections": tally.lost_connections.load(Ordering::Relaxed),
        }));
        if ratio < args.min_delivery || summary.p99 > args.max_p99_ms {
            eprintln!("[{}] fan-out: saturated at {rate} msg/s", common.label);
            break;
        }
        if pid
            .as_deref()
            .is_some_and(|pid| procfs::rss_kib(pid).is_none())
        {
            return Err(BenchError::Protocol("the server exited".into()));
        }
    }
    emit_record(serde_json::json!({
        "scenario": "fanout_max",
        "label": common.label,
        "clients": connected,
        "senders": senders,
        "max_deliveries_per_s": max_delivered_per_s,
    }));
    drop(outboxes);
    Ok(())
}

/// Sends at `rate` messages per second in total, spread evenly over the senders, for the step's
/// duration; returns how many were queued. A sender whose outbox is full skips (not counted).
async fn send_step(
    outboxes: &[mpsc::Sender<String>],
    wire: client::Wire,
    common: &Common,
    step: usize,
    rate: u32,
    args: &FanoutArgs,
) -> u64 {
    let sent = Arc::new(AtomicU64::new(0));
    let senders = outboxes.len() as f64;
    let period = Duration::from_secs_f64(senders / f64::from(rate.max(1)));
    let start = tokio::time::Instant::now();
    let end = start + Duration::from_secs(args.step_secs);
    let mut tasks = Vec::with_capacity(outboxes.len());
    for (index, outbox) in outboxes.iter().enumerate() {
        let outbox = outbox.clone();
        let sent = Arc::clone(&sent);
        let event = common.send_event.clone();
        let full = common.full;
        let size = args.size;
        // Senders are staggered across one period so the load is smooth, not bursts of S.
        let offset = period.mul_f64(index as f64 / senders);
        tasks.push(tokio::spawn(async move {
            let mut next = start + offset;
            let mut ack = 0;
            while next < end {
                tokio::time::sleep_until(next).await;
                ack += 1;
                let frame = client::chat_frame(wire, full, &event, &body(step, size), ack);
                if outbox.try_send(frame).is_ok() {
                    sent.fetch_add(1, Ordering::Relaxed);
                }
                next += period;
            }
        }));
    }
    for task in tasks {
        task.await.ok();
    }
    sent.load(Ordering::Relaxed)
}

/// Waits until every expected copy arrived, or nothing arrived for 1 s, or `limit_secs` passed.
async fn drain(latency: &Histogram, expected: u64, limit_secs: u64) -> bool {
    let stop = Instant::now() + Duration::from_secs(limit_secs);
    let mut last = latency.count();
    let mut last_change = Instant::now();
    while Instant::now() < stop {
        let now = latency.count();
        if now >= expected {
            return true;
        }
        if now != last {
            last = now;
            last_change = Instant::now();
        } else if last_change.elapsed() > Duration::from_secs(1) {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// Waits until no unmarked frame arrived for 300 ms (at most `limit`).
async fn wait_quiet(tally: &Tally, limit: Duration) {
    let stop = Instant::now() + limit;
    let mut last = tally.other_frames.load(Ordering::Relaxed);
    while Instant::now() < stop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = tally.other_frames.load(Ordering::Relaxed);
        if now == last {
            return;
        }
        last = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_found_inside_any_frame() {
        let text = body(3, 64);
        assert_eq!(text.len(), 64);
        let frame = format!(r#"42["updateChat","u1","{text}"]"#);
        let (step, micros) = parse_marker(&frame).expect("marker");
        assert_eq!(step, 3);
        assert!(micros > 0);
        assert_eq!(parse_marker(r#"42["updateUsers",{"u1":"u1"}]"#), None);
    }
}
