//! The one error type of the bench tool: what went wrong while driving a target.

use std::fmt;

/// Why a connection, a scenario or a command failed.
#[derive(Debug)]
pub enum BenchError {
    /// The command line asks for something the tool refuses (e.g. a non-loopback target).
    Usage(String),
    /// A socket or process operation failed.
    Io(std::io::Error),
    /// The WebSocket layer failed (handshake, framing, closed connection).
    WebSocket(tokio_tungstenite::tungstenite::Error),
    /// The server sent something the Engine.IO / Socket.IO handshake does not allow.
    Protocol(String),
    /// A bounded wait ran out.
    Timeout(&'static str),
}

impl fmt::Display for BenchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BenchError::Usage(why) => write!(f, "usage: {why}"),
            BenchError::Io(err) => write!(f, "i/o: {err}"),
            BenchError::WebSocket(err) => write!(f, "websocket: {err}"),
            BenchError::Protocol(why) => write!(f, "protocol: {why}"),
            BenchError::Timeout(what) => write!(f, "timed out: {what}"),
        }
    }
}

impl std::error::Error for BenchError {}

impl From<std::io::Error> for BenchError {
    fn from(err: std::io::Error) -> Self {
        BenchError::Io(err)
    }
}

impl From<tokio_tungstenite::tungstenite::Error> for BenchError {
    fn from(err: tokio_tungstenite::tungstenite::Error) -> Self {
        BenchError::WebSocket(err)
    }
}
