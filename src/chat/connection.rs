//! [`Connection`]: the per-socket state of the chat (the engine's `Handler::Data`): its
//! pipeline of messages in flight, its rate limit, its tutorial spelling, whether it resumed.

use std::sync::{Arc, Mutex, PoisonError};

use super::clock::now_ms_u64;
use super::outgoing::Spelling;
use crate::domain::{DomainError, RateLimit};

/// Most messages of one socket stored but not yet answered; past it the socket's next
/// message waits (its events are handled one at a time), so memory stays bounded.
const MAX_IN_FLIGHT_PER_SOCKET: usize = 64;

/// Per-socket state, created empty when a socket connects.
#[derive(Debug)]
pub struct Connection {
    /// Room for this socket's messages in flight (see `Chat::pipeline`).
    pub(super) in_flight: Arc<tokio::sync::Semaphore>,
    /// Resolves when the socket's last pipelined message is finished (acked and delivered).
    pipeline_tail: Mutex<Option<tokio::sync::oneshot::Receiver<()>>>,
    /// The event spelling this socket used to add itself; `None` until it has a name.
    spelling: Mutex<Option<Spelling>>,
    /// How fast this socket may send messages; created on its first message.
    rate: Mutex<Option<RateLimit>>,
    /// When this socket was resumed by connection-state recovery, and the deadline of the
    /// record it resumed from.
    resumed: Mutex<Option<(i64, i64)>>,
}

impl Default for Connection {
    fn default() -> Self {
        Self {
            in_flight: Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT_PER_SOCKET)),
            pipeline_tail: Mutex::new(None),
            spelling: Mutex::default(),
            rate: Mutex::default(),
            resumed: Mutex::default(),
        }
    }
}

impl Connection {
    /// Make `next` the pipeline's tail; returns the previous tail, which the caller waits
    /// for before finishing.
    pub(super) fn chain(
        &self,
        next: tokio::sync::oneshot::Receiver<()>,
    ) -> Option<tokio::sync::oneshot::Receiver<()>> {
        self.pipeline_tail
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .replace(next)
    }

    /// Wait until every pipelined message of this socket is finished.
    pub(crate) async fn wait_for_pipeline(&self) {
        let tail = self
            .pipeline_tail
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(tail) = tail {
            let _ = tail.await;
        }
    }

    /// Count one message against this socket's rate limit.
    pub(crate) fn take_message_token(&self, per_second: u32) -> Result<(), DomainError> {
        let now = now_ms_u64();
        let mut rate = self.rate.lock().unwrap_or_else(PoisonError::into_inner);
        rate.get_or_insert_with(|| RateLimit::new(per_second, now))
            .take(now)
    }

    pub(crate) fn set_resumed(&self, at_ms: i64, deadline_ms: i64) {
        *self.resumed.lock().unwrap_or_else(PoisonError::into_inner) = Some((at_ms, deadline_ms));
    }

    pub(crate) fn resumed(&self) -> Option<(i64, i64)> {
        *self.resumed.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn spelling(&self) -> Option<Spelling> {
        *self.spelling.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn set_spelling(&self, spelling: Option<Spelling>) {
        *self.spelling.lock().unwrap_or_else(PoisonError::into_inner) = spelling;
    }
}
