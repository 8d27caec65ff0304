//! Room index and cluster fan-out.
//!
//! The [`Adapter`] decides where a broadcast goes. [`LocalAdapter`] delivers to this process's
//! sockets; a Redis adapter (later) also publishes to other nodes.

/// Fan-out of broadcasts beyond the local room index. Implemented by the engine for the local
/// case; a cluster adapter forwards encoded packets to other nodes.
pub trait Adapter: Send + Sync + 'static {}

/// Delivers broadcasts to sockets of this process only.
#[derive(Debug, Default)]
pub struct LocalAdapter;

impl Adapter for LocalAdapter {}
