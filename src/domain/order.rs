//! [`InOrder`]: release a conversation's messages in sequence order.
//!
//! Messages are numbered by the store, but the tasks that stored them may finish in another
//! order. A client that remembers the highest sequence it saw would skip one delivered late
//! when it catches up, so each conversation's messages are delivered strictly in sequence:
//! a message waits for its predecessors, for at most a bounded time (a predecessor whose
//! sender vanished must not block the room).
//!
//! In a cluster a message may reach a node twice (from its store by gap repair, then late
//! from the bus): the state remembers which of the latest sequences it released, and a
//! repeat of one of them is dropped.

use std::collections::BTreeMap;

/// The sequencing state of one conversation. `T` is the message; time is an input (ms).
#[derive(Debug)]
pub struct InOrder<T> {
    /// The highest sequence released.
    released: i64,
    /// Messages waiting for a predecessor: sequence → (message, arrival time).
    waiting: BTreeMap<i64, (T, u64)>,
    /// Which of the [`RECENT`] sequences up to `released` were released here: bit `i` is
    /// `released - i`.
    recent: u128,
    /// The missing predecessors are being read from the store.
    repairing: bool,
}

/// How many of the latest sequences [`InOrder`] remembers releasing.
const RECENT: i64 = 128;

/// Most messages one conversation may hold back; beyond, the oldest gap is given up.
pub const MAX_WAITING: usize = 10_000;

impl<T> InOrder<T> {
    /// A conversation whose messages up to `released` have been delivered.
    pub fn after(released: i64) -> Self {
        Self {
            released,
            waiting: BTreeMap::new(),
            recent: 0,
            repairing: false,
        }
    }

    /// A message with sequence `seq` is ready at `now_ms`; returns what may be delivered
    /// now, in order. A message at or below what was released already goes out at once,
    /// unless it was released here before (a repeat: nothing) or is more than [`RECENT`]
    /// behind (too old to tell: taken for a repeat; the gap repair has delivered it).
    pub fn accept(&mut self, seq: i64, message: T, now_ms: u64) -> Vec<T> {
        if seq <= self.released {
            let behind = self.released - seq;
            if behind >= RECENT {
                return Vec::new();
            }
            let bit = 1_u128 << behind;
            if self.recent & bit != 0 {
                return Vec::new();
            }
            self.recent |= bit;
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

    /// The gap before the first waiting message has made it wait `wait_ms` or more and no
    /// repair is under way: returns the highest sequence released, after which the store
    /// should be read (then [`InOrder::accept`] what it returns, and
    /// [`InOrder::repair_done`]). Marks the repair as under way.
    pub fn start_repair(&mut self, now_ms: u64, wait_ms: u64) -> Option<i64> {
        let overdue = self
            .waiting
            .values()
            .next()
            .is_some_and(|(_, since)| now_ms.saturating_sub(*since) >= wait_ms);
        if self.repairing || !overdue {
            return None;
        }
        self.repairing = true;
        Some(self.released)
    }

    /// The repair started by [`InOrder::start_repair`] ended (whatever it found).
    pub fn repair_done(&mut self) {
        self.repairing = false;
    }

    /// Everything seen so far was released, and no repair is under way: what was released
    /// is all this state knows of.
    pub fn is_complete(&self) -> bool {
        self.waiting.is_empty() && !self.repairing
    }

    /// The first waiting message, if any.
    pub fn first_waiting(&self) -> Option<&T> {
        self.waiting.values().next().map(|(message, _)| message)
    }

    /// The sequence of the first waiting message, if any.
    pub fn first_waiting_seq(&self) -> Option<i64> {
        self.waiting.keys().next().copied()
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
            let skipped = first - 1 - self.released;
            self.recent = match u32::try_from(skipped) {
                Ok(shift) if shift < 128 => self.recent << shift,
                _ => 0,
            };
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
            self.recent = (self.recent << 1) | 1;
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
    fn a_repeat_of_a_released_message_is_dropped_but_one_never_released_goes_out() {
        let mut order = InOrder::after(10); // 1..=10 were released before this state began
        assert_eq!(order.accept(11, "k", 0), ["k"]);
        assert_eq!(order.accept(11, "k again", 0), Vec::<&str>::new());
        assert_eq!(order.accept(9, "i", 0), ["i"], "never released here");
        assert_eq!(order.accept(9, "i again", 0), Vec::<&str>::new());
    }

    #[test]
    fn an_overdue_gap_is_repaired_once_at_a_time() {
        let mut order = InOrder::after(0);
        assert_eq!(order.accept(3, "c", 100), Vec::<&str>::new());
        assert!(!order.is_complete());
        assert_eq!(order.start_repair(250, 200), None, "not overdue yet");
        assert_eq!(order.start_repair(300, 200), Some(0));
        assert_eq!(order.start_repair(400, 200), None, "one repair at a time");
        // The store had 1 and 2; the bus then brings 2 late.
        assert_eq!(order.accept(1, "a", 400), ["a"]);
        assert_eq!(order.accept(2, "b", 400), ["b", "c"]);
        order.repair_done();
        assert_eq!(order.accept(2, "b late", 500), Vec::<&str>::new());
        assert!(order.is_complete());
    }

    #[test]
    fn a_message_after_a_given_up_gap_is_not_taken_for_a_repeat() {
        let mut order = InOrder::after(0);
        assert_eq!(order.accept(1, "a", 0), ["a"]);
        assert_eq!(order.accept(4, "d", 0), Vec::<&str>::new());
        assert_eq!(order.expire(5_000, 1_000), ["d"]);
        assert_eq!(order.accept(2, "b", 5_000), ["b"], "late, never released");
        assert_eq!(order.accept(1, "a", 5_000), Vec::<&str>::new());
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
