//! [`InOrder`]: release a conversation's messages in sequence order.
//!
//! Messages are numbered by the store, but the tasks that stored them may finish in another
//! order. A client that remembers the highest sequence it saw would skip one delivered late
//! when it catches up, so each conversation's messages are delivered strictly in sequence:
//! a message waits for its predecessors, for at most a bounded time (a predecessor whose
//! sender vanished must not block the room).

use std::collections::BTreeMap;

/// The sequencing state of one conversation. `T` is the message; time is an input (ms).
#[derive(Debug)]
pub struct InOrder<T> {
    /// The highest sequence released.
    released: i64,
    /// Messages waiting for a predecessor: sequence → (message, arrival time).
    waiting: BTreeMap<i64, (T, u64)>,
}

/// Most messages one conversation may hold back; beyond, the oldest gap is given up.
pub const MAX_WAITING: usize = 10_000;

impl<T> InOrder<T> {
    /// A conversation whose messages up to `released` have been delivered.
    pub fn after(released: i64) -> Self {
        Self {
            released,
            waiting: BTreeMap::new(),
        }
    }

    /// A message with sequence `seq` is ready at `now_ms`; returns what may be delivered
    /// now, in order (a message at or below what was released already goes out at once).
    pub fn accept(&mut self, seq: i64, message: T, now_ms: u64) -> Vec<T> {
        if seq <= self.released {
            return vec![message];
        }
        self.waiting.insert(seq, (message, now_ms));
        if self.waiting.len() > MAX_WAITING {
            return self.give_up_first_gap();
        }
        self.release_consecutive()
    }

    /// Give up on gaps that have made a message wait `max_wait_ms` or more: release what
    /// waits, in order.
    pub fn expire(&mut self, now_ms: u64, max_wait_ms: u64) -> Vec<T> {
        let stale = self
            .waiting
            .values()
            .next()
            .is_some_and(|(_, since)| now_ms.saturating_sub(*since) >= max_wait_ms);
        if stale {
            self.give_up_first_gap()
        } else {
            Vec::new()
        }
    }

    /// The highest sequence released so far.
    pub fn released(&self) -> i64 {
        self.released
    }

    /// Whether messages are waiting.
    pub fn is_waiting(&self) -> bool {
        !self.waiting.is_empty()
    }

    fn give_up_first_gap(&mut self) -> Vec<T> {
        if let Some(&first) = self.waiting.keys().next() {
            self.released = first - 1;
        }
        self.release_consecutive()
    }

    fn release_consecutive(&mut self) -> Vec<T> {
        let mut ready = Vec::new();
        while let Some(entry) = self.waiting.first_entry() {
            if *entry.key() != self.released + 1 {
                break;
            }
            self.released += 1;
            ready.push(entry.remove().0);
        }
        ready
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_in_order_go_out_at_once() {
        let mut order = InOrder::after(0);
        assert_eq!(order.accept(1, "a", 0), ["a"]);
        assert_eq!(order.accept(2, "b", 0), ["b"]);
        assert!(!order.is_waiting());
    }

    #[test]
    fn a_message_ahead_of_its_predecessor_waits_for_it() {
        let mut order = InOrder::after(10);
        assert_eq!(order.accept(12, "c", 0), Vec::<&str>::new());
        assert_eq!(order.accept(13, "d", 0), Vec::<&str>::new());
        assert_eq!(order.accept(11, "b", 0), ["b", "c", "d"]);
    }

    #[test]
    fn an_old_or_repeated_sequence_goes_out_at_once() {
        let mut order = InOrder::after(5);
        assert_eq!(order.accept(3, "old", 0), ["old"]);
    }

    #[test]
    fn a_gap_older_than_the_limit_is_given_up() {
        let mut order = InOrder::after(0);
        assert_eq!(order.accept(2, "b", 100), Vec::<&str>::new());
        assert_eq!(order.accept(4, "d", 150), Vec::<&str>::new());
        assert_eq!(order.expire(1_099, 1_000), Vec::<&str>::new());
        assert_eq!(order.expire(1_100, 1_000), ["b"], "only up to the next gap");
        assert_eq!(
            order.accept(1, "a", 1_200),
            ["a"],
            "a late one still goes out"
        );
        assert_eq!(order.expire(1_150, 1_000), ["d"]);
        assert!(!order.is_waiting());
    }

    #[test]
    fn waiting_is_bounded() {
        let mut order = InOrder::after(0);
        let mut released = 0;
        for seq in 2..=(MAX_WAITING as i64 + 2) {
            released += order.accept(seq, seq, 0).len();
        }
        assert_eq!(released, MAX_WAITING + 1, "the gap at 1 was given up");
    }
}
