//! The `chinwag` binary: parse the configuration, start logging, bind, print the address,
//! serve until SIGINT or SIGTERM.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use tokio::net::TcpListener;
use tracing::{error, info, warn};
use tracing_subscriber::EnvFilter;

use chinwag::Config;

/// jemalloc instead of glibc's malloc: when thousands of users leave, glibc keeps the freed
/// memory (fragmented arenas; `malloc_trim` gave back 4 of 29 MB), jemalloc returns it.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings: a background thread gives unused pages back to the system about a
/// second after they are freed, also while the server is idle.
#[allow(non_upper_case_globals)]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static malloc_conf: &[u8; 60] =
    b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    init_logging(&config.log_level);
    if let Err(err) = config.check() {
        error!(%err, "invalid configuration");
        eprintln!("chinwag: {err}");
        return ExitCode::FAILURE;
    }
    let shutdown = shutdown_signal();

    let address = SocketAddr::new(config.host, config.port);
    let listener = match TcpListener::bind(address).await {
        Ok(listener) => listener,
        Err(err) => {
            error!(%address, %err, "cannot listen");
            eprintln!("chinwag: cannot listen on {address}: {err}");
            return ExitCode::FAILURE;
        }
    };
    let bound = listener.local_addr().unwrap_or(address);
    // The history opens before the address is announced: a bad `--db` exits non-zero
    // without ever claiming to listen.
    let history = match chinwag::open_history(&config).await {
        Ok(history) => history,
        Err(err) => {
            error!(%err, "cannot open the history");
            eprintln!("chinwag: cannot open the history {:?}: {err}", config.db);
            return ExitCode::FAILURE;
        }
    };
    let cluster = match chinwag::open_cluster(&config).await {
        Ok(cluster) => cluster,
        Err(err) => {
            error!(%err, "cannot reach Redis");
            eprintln!("chinwag: cannot reach the Redis of --redis-url: {err}");
            return ExitCode::FAILURE;
        }
    };
    // Tests and scripts read this exact line to learn the port (port 0 picks one).
    println!("listening on http://{bound}");
    let _ = std::io::stdout().flush();
    info!(address = %bound, "listening");

    match chinwag::serve(listener, config, history, cluster, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            error!(%err, "server failed");
            ExitCode::FAILURE
        }
    }
}

/// Libraries whose trace logs dump WebSocket frames or HTTP bodies, which carry session
/// tokens: never logged above `debug`, whatever the filter asks.
const FRAME_DUMPING_TARGETS: [&str; 4] = ["tungstenite", "tokio_tungstenite", "hyper", "h2"];

/// Logs go to stderr, so stdout carries only the `listening on` line.
fn init_logging(filter: &str) {
    let (mut filter, rejected) = match EnvFilter::try_new(filter) {
        Ok(filter) => (filter, None),
        Err(err) => (EnvFilter::new("info"), Some(err)),
    };
    // A directive sets a level, it does not cap one: added to a quieter filter (`warn`) it
    // would turn these libraries' debug logs on. Only a filter that enables trace somewhere
    // needs it.
    if filter.max_level_hint() == Some(tracing::level_filters::LevelFilter::TRACE) {
        for target in FRAME_DUMPING_TARGETS {
            if let Ok(cap) = format!("{target}=debug").parse() {
                filter = filter.add_directive(cap);
            }
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    if let Some(err) = rejected {
        warn!(%err, "invalid log filter, using `info`");
    }
}

/// Completes on the first SIGINT (Ctrl-C) or SIGTERM.
///
/// The handlers are installed here, before the caller binds and prints its address, not on
/// the future's first poll: a supervisor that signals right after the `listening on` line
/// must get a graceful shutdown, not the default action (death by signal).
#[cfg(unix)]
fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let interrupt = signal(SignalKind::interrupt());
    let terminate = signal(SignalKind::terminate());
    async move {
        let (mut interrupt, mut terminate) = match (interrupt, terminate) {
            (Ok(interrupt), Ok(terminate)) => (interrupt, terminate),
            (Err(err), _) | (_, Err(err)) => {
                error!(%err, "cannot listen for signals");
                return std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            _ = interrupt.recv() => info!("SIGINT received"),
            _ = terminate.recv() => info!("SIGTERM received"),
        }
    }
}

/// Completes on the first Ctrl-C.
#[cfg(not(unix))]
fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            error!(%err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
        info!("Ctrl-C received");
    }
}
