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

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    init_logging(&config.log_level);

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
    // Tests and scripts read this exact line to learn the port (port 0 picks one).
    println!("listening on http://{bound}");
    let _ = std::io::stdout().flush();
    info!(address = %bound, "listening");

    match chinwag::run(listener, config, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            error!(%err, "server failed");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr, so stdout carries only the `listening on` line.
fn init_logging(filter: &str) {
    let (filter, rejected) = match EnvFilter::try_new(filter) {
        Ok(filter) => (filter, None),
        Err(err) => (EnvFilter::new("info"), Some(err)),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    if let Some(err) = rejected {
        warn!(%err, "invalid log filter, using `info`");
    }
}

/// Completes on the first SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            error!(%err, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                error!(%err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => info!("SIGINT received"),
        () = terminate => info!("SIGTERM received"),
    }
}
