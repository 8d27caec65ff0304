//! The outbox: frames waiting for the writer, bounded in bytes, with the CONNECT barrier
//! (frames queued while a namespace CONNECT is decided wait behind its reply) and the reply
//! boundary (over WebSocket the reply is written alone, then a pause). Its state is part of
//! the connection's one `State`, under the connection's one mutex.

use std::collections::VecDeque;
use std::sync::Arc;

use super::{Conn, Transport};
use crate::eio::Frame;
use crate::types::{DisconnectReason, EmitError, Farewell};

/// The outbox part of the connection's state.
#[derive(Default)]
pub(super) struct Outbox {
    /// Frames not yet handed to the transport; empty (unallocated) while idle.
    pub(super) frames: VecDeque<Frame>,
    pub(super) bytes: usize,
    /// While a namespace CONNECT is being decided, frames queued after this index wait so the
    /// CONNECT reply can be inserted before them.
    pub(super) barrier: Option<usize>,
    /// Over WebSocket, a CONNECT reply ends its batch: it is written alone, and what the
    /// handler emitted during `on_connect` follows in the next write, as the reference
    /// server does (clients that read one message per event rely on it).
    pub(super) boundary: Option<usize>,
    /// The last batch taken ended at a CONNECT reply with more frames behind it.
    pub(super) paused_after_reply: bool,
}

impl Conn {
    /// Queue frames (all or none). A volatile push is dropped when the outbox is not empty;
    /// a push that does not fit behind queued frames closes the connection as a slow reader.
    pub(crate) fn push(
        self: &Arc<Self>,
        frames: &[Frame],
        volatile: bool,
    ) -> Result<(), EmitError> {
        let size: usize = frames.iter().map(Frame::len).sum();
        let was_empty;
        {
            let mut st = self.lock();
            if st.closed.is_some() {
                return Err(EmitError::Closed);
            }
            if volatile && (!st.outbox.frames.is_empty() || st.transport == Transport::Upgrading) {
                return Ok(());
            }
            // The bound is for a reader that falls behind: one large frame (a big ack or a
            // history page) into an empty outbox is accepted, whatever its size.
            if !st.outbox.frames.is_empty()
                && st.outbox.bytes + size > self.host.config().max_outbound_bytes
            {
                drop(st);
                self.cut_off_slow_reader(Farewell::SlowReader);
                return Err(EmitError::Overflow);
            }
            was_empty = st.outbox.frames.is_empty();
            st.outbox.frames.extend(frames.iter().cloned());
            st.outbox.bytes += size;
        }
        // The writer takes the whole outbox each time it wakes, so only the push that makes
        // it non-empty needs to wake it: a broadcast burst costs one wake-up per connection,
        // not one per frame. (Frames held behind a CONNECT barrier are woken for by
        // `release_barrier`.)
        if was_empty {
            self.writer_wake.notify_one();
        }
        Ok(())
    }

    /// Disconnect a client that does not read what it is sent. What is queued could not be
    /// read in time anyway: it is dropped, and the client gets the frame it is in the middle
    /// of, then why it is cut off (and syncs later).
    pub(crate) fn cut_off_slow_reader(self: &Arc<Self>, farewell: Farewell) {
        {
            let mut st = self.lock();
            if st.closed.is_some() {
                return;
            }
            st.farewell = Some(farewell);
            st.outbox.frames = VecDeque::new();
            st.outbox.bytes = 0;
            st.outbox.barrier = None;
        }
        tracing::debug!(sid = %self.sid, ?farewell, "disconnecting a slow reader");
        self.close(DisconnectReason::TransportError);
    }

    /// Queue an Engine.IO heartbeat packet. It goes ahead of a CONNECT barrier: a slow
    /// `on_connect` must not make the client miss its pings.
    pub(super) fn push_control(self: &Arc<Self>, frame: Frame) {
        {
            let mut st = self.lock();
            if st.closed.is_some() {
                return;
            }
            st.outbox.bytes += frame.len();
            match st.outbox.barrier {
                Some(at) => {
                    st.outbox.frames.insert(at, frame);
                    st.outbox.barrier = Some(at + 1);
                }
                None => st.outbox.frames.push_back(frame),
            }
        }
        self.writer_wake.notify_one();
    }

    /// Take every frame that may be written now (those before a CONNECT barrier).
    pub(crate) fn take_batch(&self) -> VecDeque<Frame> {
        self.take_batch_reusing(VecDeque::new())
    }

    /// [`Self::take_batch`], leaving `spare` (an empty buffer, maybe with capacity) as the
    /// outbox: a busy writer alternates two buffers instead of allocating one per batch.
    pub(crate) fn take_batch_reusing(&self, spare: VecDeque<Frame>) -> VecDeque<Frame> {
        let mut st = self.lock();
        let batch = match (st.outbox.barrier, st.outbox.boundary.take()) {
            (None, Some(n)) if n < st.outbox.frames.len() => {
                st.outbox.paused_after_reply = true;
                st.outbox.frames.drain(..n).collect()
            }
            (None, _) => std::mem::replace(&mut st.outbox.frames, spare),
            (Some(n), _) => {
                st.outbox.barrier = Some(0);
                st.outbox.frames.drain(..n).collect()
            }
        };
        st.outbox.bytes -= batch.iter().map(Frame::len).sum::<usize>();
        batch
    }

    /// Whether the batch just taken was a CONNECT reply cut from the frames behind it (then
    /// the writer lets the reply reach the client before writing them).
    pub(crate) fn take_reply_pause(&self) -> bool {
        std::mem::take(&mut self.lock().outbox.paused_after_reply)
    }

    /// An idle connection gives back the outbox capacity a busy period left.
    pub(crate) fn release_idle_outbox(&self) {
        let mut st = self.lock();
        if st.outbox.frames.is_empty() {
            st.outbox.frames = VecDeque::new();
        }
    }

    pub(crate) fn has_writable_frames(&self) -> bool {
        let st = self.lock();
        match st.outbox.barrier {
            None => !st.outbox.frames.is_empty(),
            Some(n) => n > 0,
        }
    }

    /// Start holding back frames queued from now on (a namespace CONNECT is being decided).
    pub(crate) fn set_barrier(&self) {
        let mut st = self.lock();
        st.outbox.barrier = Some(st.outbox.frames.len());
    }

    /// Insert `reply` where the barrier stands and release the frames behind it.
    pub(crate) fn release_barrier(&self, reply: Frame) {
        {
            let mut st = self.lock();
            let at = st
                .outbox
                .barrier
                .take()
                .unwrap_or(st.outbox.frames.len())
                .min(st.outbox.frames.len());
            if st.closed.is_none() {
                st.outbox.bytes += reply.len();
                st.outbox.frames.insert(at, reply);
                if st.transport == Transport::WebSocket {
                    st.outbox.boundary = Some(at + 1);
                }
            }
        }
        self.writer_wake.notify_one();
    }
}
