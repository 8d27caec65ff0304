//! `chinwag-bench`: the load generator for chinwag and its peers (Node socket.io, socketioxide,
//! a raw-WebSocket relay). It speaks Engine.IO v4 / Socket.IO v5 over WebSocket itself (or plain
//! WebSocket frames with `--raw`), runs on one tokio runtime, refuses non-loopback targets and
//! bounds every scenario in time.
//!
//! # Layout
//! - `client`: one connection: source address, handshakes, the read/ping/write loop.
//! - `idle`: scenario 1, memory per idle connection (worker processes hold the connections).
//! - `fanout`: scenario 2, rising message rates to C clients until saturation.
//! - `jitter`: scenario 3, clients dropped every ~15 s, delivery rate and replay lag.
//! - `avalanche`: scenario 4, every client reconnecting after a server restart.
//! - `receipts`: what 3 and 4 share: numbered messages, per-client receipts, socket.io
//!   recovery (pid/offset) and chinwag's catch-up (token + `sync`).
//! - `report`: the comparison table from the JSON records of one run.
//! - `histogram`, `procfs`: latency percentiles; RSS and CPU of a process from `/proc`.
//! - `probes`: what fan-out also watches per step: the CPU of other processes (a cluster's
//!   nodes, Redis, PostgreSQL, nginx) and counters read by a command (PostgreSQL's commits).
//!
//! Every scenario prints progress on stderr and one JSON record per measurement on stdout;
//! `bench/run.sh` collects the records and calls `report`.

mod avalanche;
mod client;
mod error;
mod fanout;
mod histogram;
mod idle;
mod jitter;
mod probes;
mod procfs;
mod receipts;
mod report;

use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};

use crate::client::{Connector, Wire};
use crate::error::BenchError;

#[derive(Parser, Debug)]
#[command(
    name = "chinwag-bench",
    about = "Load generator for chinwag and its benchmark peers"
)]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    scenario: Scenario,
}

/// Options every scenario shares.
#[derive(clap::Args, Debug, Clone)]
pub struct Common {
    /// Target server, `http://127.0.0.1:PORT` (loopback only). Several (repeated or
    /// comma-separated, e.g. a cluster's nodes): fan-out's client i connects to url[i % n], the
    /// other scenarios use them round-robin.
    #[arg(
        long,
        global = true,
        value_delimiter = ',',
        default_value = "http://127.0.0.1:8080"
    )]
    pub url: Vec<String>,
    /// Plain WebSocket frames instead of Socket.IO (for the raw relay).
    #[arg(long, global = true)]
    pub raw: bool,
    /// PID of the server, for its RSS and CPU from /proc.
    #[arg(long, global = true)]
    pub pid: Option<String>,
    /// Name of the server in the records (node, socketioxide, raw, chinwag, …).
    #[arg(long, global = true, default_value = "server")]
    pub label: String,
    /// Comma-separated loopback source addresses to connect from (round-robin).
    #[arg(long, global = true, default_value = "")]
    pub sources: String,
    /// Connections in the middle of their handshake at once.
    #[arg(long, global = true, default_value_t = 200)]
    pub connect_concurrency: usize,
    /// JSON sent with the Socket.IO CONNECT packet; `{i}` becomes the client's index.
    #[arg(long, global = true)]
    pub auth: Option<String>,
    /// Speak chinwag's full protocol: a name in the CONNECT auth (`{"name":"u{i}"}` unless
    /// `--auth` says otherwise) and `message:send` to `general`.
    #[arg(long, global = true)]
    pub full: bool,
    /// The event that joins the chat with a name.
    #[arg(long, global = true, default_value = "addUser")]
    pub join_event: String,
    /// The event that sends a chat message.
    #[arg(long, global = true, default_value = "sendChat")]
    pub send_event: String,
}

impl Common {
    pub fn connector(&self) -> Result<Connector, BenchError> {
        let targets = self
            .url
            .iter()
            .map(|url| client::parse_target(url))
            .collect::<Result<Vec<_>, _>>()?;
        if targets.is_empty() {
            return Err(BenchError::Usage("no --url".into()));
        }
        let sources = client::parse_sources(&self.sources)?;
        let wire = if self.raw { Wire::Raw } else { Wire::SocketIo };
        Ok(Connector::new(targets, wire, sources))
    }

    /// The CONNECT auth payload for client `index`, if the run uses one.
    pub fn auth_for(&self, index: usize) -> Option<String> {
        let template = match (&self.auth, self.full) {
            (Some(template), _) => template.as_str(),
            (None, true) => r#"{"name":"u{i}"}"#,
            (None, false) => return None,
        };
        Some(template.replace("{i}", &index.to_string()))
    }
}

#[derive(Subcommand, Debug)]
enum Scenario {
    /// Scenario 1: server RSS per idle (handshaken or joined) connection.
    Idle(idle::IdleArgs),
    /// Holds idle connections for `idle` (internal).
    #[command(hide = true)]
    IdleWorker(idle::WorkerArgs),
    /// Scenario 2: fan-out at rising rates until saturation.
    Fanout(fanout::FanoutArgs),
    /// Scenario 3: delivery under connection jitter.
    Jitter(jitter::JitterArgs),
    /// Scenario 4: reconnect avalanche after a server restart.
    Avalanche(avalanche::AvalancheArgs),
    /// The comparison table from a file of JSON records.
    Report(report::ReportArgs),
}

/// Microseconds since the Unix epoch: send times travel inside messages, and every process of a
/// run reads the same system clock.
pub fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_micros() as u64)
}

/// Prints one measurement as a JSON line on stdout.
pub fn emit_record(record: serde_json::Value) {
    println!("{record}");
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Scenario::Report(args) = &cli.scenario {
        return match report::run(args) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("chinwag-bench: {err}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    // Two worker threads: this machine has two cores, shared with the server under test.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("chinwag-bench: cannot start the runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match &cli.scenario {
            Scenario::Idle(args) => idle::run(&cli.common, args).await,
            Scenario::IdleWorker(args) => idle::worker(&cli.common, args).await,
            Scenario::Fanout(args) => fanout::run(&cli.common, args).await,
            Scenario::Jitter(args) => jitter::run(&cli.common, args).await,
            Scenario::Avalanche(args) => avalanche::run(&cli.common, args).await,
            Scenario::Report(_) => Ok(()),
        }
    });
    // Connection tasks still running are abandoned, not awaited: the run is over.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("chinwag-bench: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_urls_repeated_or_comma_separated_all_loopback() {
        let cli = Cli::try_parse_from([
            "chinwag-bench",
            "--url",
            "http://127.0.0.1:1,http://127.0.0.1:2",
            "--url",
            "127.0.0.1:3",
            "fanout",
        ])
        .expect("parses");
        assert_eq!(cli.common.url.len(), 3);
        assert!(cli.common.connector().is_ok());
        let one = Cli::try_parse_from(["chinwag-bench", "fanout"]).expect("parses");
        assert_eq!(one.common.url, ["http://127.0.0.1:8080"]);
        let remote = Cli::try_parse_from([
            "chinwag-bench",
            "--url",
            "http://127.0.0.1:1,http://10.0.0.1:2",
            "fanout",
        ])
        .expect("parses");
        assert!(remote.common.connector().is_err());
    }
}
