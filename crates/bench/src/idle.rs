//! Scenario 1, idle: N connections that completed the Socket.IO handshake (optionally joined
//! with `addUser`), and what they cost the server in resident memory.
//!
//! The connections are held by worker processes (this same binary, `idle-worker`), because one
//! process may hold at most ~20,000 open files here and the server's own limit is the same:
//! the parent grows every worker step by step, reads the server's VmRSS once memory settles,
//! and reports (RSS − RSS before any connection) / N.

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{Semaphore, mpsc};

use crate::client;
use crate::error::BenchError;
use crate::procfs;
use crate::{Common, emit_record};

/// Options of the idle scenario.
#[derive(clap::Args, Debug, Clone)]
pub struct IdleArgs {
    /// Connection counts to measure, ascending; each step adds connections to the previous.
    #[arg(long, value_delimiter = ',', default_value = "1000,5000,10000,19500")]
    pub counts: Vec<usize>,
    /// Worker processes holding the connections (each may hold ~19,900).
    #[arg(long, default_value_t = 2)]
    pub procs: usize,
    /// Each client also joins the chat with `addUser` (O(N²) notices: keep N small).
    #[arg(long)]
    pub join: bool,
    /// Upper bound on the whole scenario, in seconds.
    #[arg(long, default_value_t = 300)]
    pub max_secs: u64,
    /// After every client left, wait this long (the server's presence grace period and a
    /// margin) before measuring what the server kept.
    #[arg(long, default_value_t = 8)]
    pub left_wait_secs: u64,
}

/// Options of one idle worker process (spawned by `idle`, not meant to be run by hand).
#[derive(clap::Args, Debug, Clone)]
pub struct WorkerArgs {
    #[arg(long)]
    pub join: bool,
    /// Index of this worker, used to make its client names unique.
    #[arg(long, default_value_t = 0)]
    pub worker: usize,
}

struct Worker {
    child: Child,
    stdin: Option<ChildStdin>,
    replies: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

pub async fn run(common: &Common, args: &IdleArgs) -> Result<(), BenchError> {
    let pid = common
        .pid
        .clone()
        .ok_or_else(|| BenchError::Usage("idle needs --pid of the server".into()))?;
    let deadline = Instant::now() + Duration::from_secs(args.max_secs);
    let procs = args.procs.max(1);
    let exe = std::env::current_exe()?;
    let mut workers = Vec::with_capacity(procs);
    for index in 0..procs {
        let mut command = Command::new(&exe);
        command
            .arg("--url")
            .arg(common.url.join(","))
            .arg("--connect-concurrency")
            .arg(common.connect_concurrency.to_string())
            .arg("--join-event")
            .arg(&common.join_event);
        if common.raw {
            command.arg("--raw");
        }
        if common.full {
            command.arg("--full");
        }
        if let Some(auth) = &common.auth {
            command.arg("--auth").arg(auth);
        }
        // Each worker gets its own source addresses (127.0.0.(2+index) by default) so ephemeral
        // ports never run short, whatever N.
        let sources = if common.sources.is_empty() {
            format!("127.0.0.{}", 2 + index)
        } else {
            common.sources.clone()
        };
        command.arg("--sources").arg(sources);
        command
            .arg("idle-worker")
            .arg("--worker")
            .arg(index.to_string());
        if args.join {
            command.arg("--join");
        }
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn()?;
        let stdin = child.stdin.take();
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| BenchError::Protocol("worker has no stdout".into()))?;
        workers.push(Worker {
            child,
            stdin,
            replies: BufReader::new(stdout).lines(),
        });
    }

    let base_kib = settled_rss(&pid, deadline).await.unwrap_or(0);
    eprintln!(
        "[{}] idle: server RSS before connections {} KiB",
        common.label, base_kib
    );
    let result = grow_and_measure(common, args, &pid, base_kib, &mut workers, deadline).await;

    // Closing stdin tells each worker to close its connections and exit.
    for worker in &mut workers {
        worker.stdin.take();
    }
    for worker in &mut workers {
        let waited = tokio::time::timeout(Duration::from_secs(10), worker.child.wait()).await;
        if waited.is_err() {
            worker.child.kill().await.ok();
        }
    }
    if result.is_ok() {
        measure_after_leaving(common, &pid, base_kib, args.left_wait_secs).await;
    }
    result
}

/// Once every client has left (and the server's presence grace period has passed): how much
/// of what the connections cost the server kept.
async fn measure_after_leaving(common: &Common, pid: &str, base_kib: u64, wait_secs: u64) {
    tokio::time::sleep(Duration::from_secs(wait_secs)).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    let Some(rss_kib) = settled_rss(pid, deadline).await else {
        return;
    };
    eprintln!(
        "[{}] idle: all left, server RSS {rss_kib} KiB ({} KiB above the start)",
        common.label,
        rss_kib.saturating_sub(base_kib)
    );
    emit_record(serde_json::json!({
        "scenario": "idle_left",
        "label": common.label,
        "base_rss_kib": base_kib,
        "rss_kib": rss_kib,
        "kept_kib": rss_kib.saturating_sub(base_kib),
    }));
}

async fn grow_and_measure(
    common: &Common,
    args: &IdleArgs,
    pid: &str,
    base_kib: u64,
    workers: &mut [Worker],
    deadline: Instant,
) -> Result<(), BenchError> {
    let procs = workers.len();
    // A full-protocol client is a named user from its CONNECT on.
    let joined = args.join || common.full;
    for &count in &args.counts {
        let started = Instant::now();
        let mut connected = 0;
        let mut failed = 0;
        let mut first_error = String::new();
        for (index, worker) in workers.iter_mut().enumerate() {
            let share = count / procs + usize::from(index < count % procs);
            let stdin = worker
                .stdin
                .as_mut()
                .ok_or_else(|| BenchError::Protocol("worker stdin closed".into()))?;
            stdin.write_all(format!("{share}\n").as_bytes()).await?;
            stdin.flush().await?;
        }
        for worker in workers.iter_mut() {
            let left = deadline.saturating_duration_since(Instant::now());
            let reply = tokio::time::timeout(left, worker.replies.next_line())
                .await
                .map_err(|_| BenchError::Timeout("idle workers"))??
                .ok_or_else(|| BenchError::Protocol("idle worker exited".into()))?;
            let mut parts = reply.splitn(3, ' ');
            connected += parts
                .next()
                .and_then(|n| n.parse::<usize>().ok())
                .unwrap_or(0);
            failed += parts
                .next()
                .and_then(|n| n.parse::<usize>().ok())
                .unwrap_or(0);
            if let Some(error) = parts.next().filter(|e| !e.is_empty()) {
                first_error = error.to_owned();
            }
        }
        let ramp_secs = started.elapsed().as_secs_f64();
        let Some(rss_kib) = settled_rss(pid, deadline).await else {
            return Err(BenchError::Protocol(format!("server {pid} is gone")));
        };
        let per_conn_kib = if connected > 0 {
            rss_kib.saturating_sub(base_kib) as f64 / connected as f64
        } else {
            0.0
        };
        eprintln!(
            "[{}] idle{}: {connected}/{count} connected ({failed} failed{}) in {ramp_secs:.1}s, \
             server RSS {rss_kib} KiB = {per_conn_kib:.2} KiB/connection",
            common.label,
            if joined { " joined" } else { "" },
            if first_error.is_empty() {
                String::new()
            } else {
                format!(": {first_error}")
            },
        );
        emit_record(serde_json::json!({
            "scenario": if joined { "idle_joined" } else { "idle" },
            "label": common.label,
            "n": count,
            "connected": connected,
            "failed": failed,
            "base_rss_kib": base_kib,
            "rss_kib": rss_kib,
            "per_conn_kib": per_conn_kib,
            "ramp_secs": ramp_secs,
            "error": first_error,
        }));
        if connected < count / 2 {
            eprintln!(
                "[{}] idle: stopping, too many connections failed",
                common.label
            );
            break;
        }
    }
    Ok(())
}

/// Reads the server's RSS until it stops moving (two reads 500 ms apart within 0.5 %), at most
/// 10 s: the server may still be allocating for the last connections when the workers report.
async fn settled_rss(pid: &str, deadline: Instant) -> Option<u64> {
    let stop = (Instant::now() + Duration::from_secs(10)).min(deadline);
    let mut last = procfs::rss_kib(pid)?;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = procfs::rss_kib(pid)?;
        let moved = now.abs_diff(last) as f64 / last.max(1) as f64;
        if moved < 0.005 || Instant::now() >= stop {
            return Some(now);
        }
        last = now;
    }
}

/// The worker: reads target totals on stdin ("N\n"), opens connections up to N, answers
/// "CONNECTED FAILED FIRST_ERROR" on stdout, holds them; exits when stdin closes.
pub async fn worker(common: &Common, args: &WorkerArgs) -> Result<(), BenchError> {
    let connector = Arc::new(common.connector()?);
    let wire = connector.wire();
    let permits = Arc::new(Semaphore::new(common.connect_concurrency.max(1)));
    // Each held connection's outbox; dropping them closes the connections.
    let mut outboxes: Vec<mpsc::Sender<String>> = Vec::new();
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut stdout = tokio::io::stdout();
    while let Some(line) = lines.next_line().await? {
        let Ok(target) = line.trim().parse::<usize>() else {
            continue;
        };
        let (done_tx, mut done_rx) = mpsc::channel::<Result<(), String>>(1024);
        let wanted = target.saturating_sub(outboxes.len());
        for _ in 0..wanted {
            let index = outboxes.len();
            // Unique across workers: worker W's client I is W * 1,000,000 + I.
            let auth = common.auth_for(args.worker * 1_000_000 + index);
            let (outbox_tx, outbox_rx) = mpsc::channel::<String>(16);
            if args.join {
                let name = format!("w{}c{index}", args.worker);
                let frame = client::event_frame(wire, &common.join_event, &name);
                outbox_tx.try_send(frame).ok();
            }
            outboxes.push(outbox_tx);
            let connector = Arc::clone(&connector);
            let permits = Arc::clone(&permits);
            let done = done_tx.clone();
            tokio::spawn(async move {
                let opened = {
                    let _permit = permits.acquire().await;
                    connector.open(auth.as_deref()).await
                };
                match opened {
                    Ok((ws, _)) => {
                        done.send(Ok(())).await.ok();
                        // The worker counts replies until every sender is gone.
                        drop(done);
                        client::drive(ws, wire, outbox_rx, |_| {}).await;
                    }
                    Err(err) => {
                        done.send(Err(err.to_string())).await.ok();
                    }
                }
            });
        }
        drop(done_tx);
        let (mut failed, mut first_error) = (0, String::new());
        while let Some(result) = done_rx.recv().await {
            if let Err(err) = result {
                failed += 1;
                if first_error.is_empty() {
                    first_error = err.replace('\n', " ");
                }
            }
        }
        let held = outboxes.iter().filter(|outbox| !outbox.is_closed()).count();
        stdout
            .write_all(format!("{held} {failed} {first_error}\n").as_bytes())
            .await?;
        stdout.flush().await?;
    }
    Ok(())
}
