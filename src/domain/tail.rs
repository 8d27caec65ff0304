//! [`Tail`]: the latest messages of a conversation, kept in memory so that a client catching
//! up after a short absence (every reconnect, and all of them at once after a restart) is
//! answered without reading the history.
//!
//! A tail holds every message from its `first` sequence on, without a gap, or says it cannot
//! answer: it is fed the messages as they are released in order, and starts over after any
//! gap (a predecessor given up on).

use std::collections::VecDeque;

/// Most messages one tail keeps.
pub const TAIL_MESSAGES: usize = 128;

/// Most bytes (as estimated by the caller) one tail keeps.
pub const TAIL_BYTES: usize = 32 * 1024;

/// The newest released messages of one conversation, consecutive by sequence.
#[derive(Debug)]
pub struct Tail<T> {
    /// The sequence of the oldest message held (or of the next one, when empty): the tail
    /// can answer for anything after `first - 1`.
    first: i64,
    items: VecDeque<(T, usize)>,
    bytes: usize,
}

impl<T> Tail<T> {
    /// An empty tail of a conversation whose messages up to `last` were released before.
    pub fn after(last: i64) -> Self {
        Self {
            first: last.saturating_add(1),
            items: VecDeque::new(),
            bytes: 0,
        }
    }

    /// The sequence the next message must have to extend the tail.
    fn next(&self) -> i64 {
        self.first.saturating_add(self.items.len() as i64)
    }

    /// A message was released, in order; `size` is its estimated size. A sequence past the
    /// next one (a gap was given up) starts the tail over; an earlier one is ignored.
    pub fn push(&mut self, seq: i64, item: T, size: usize) {
        let next = self.next();
        if seq < next {
            return;
        }
        if seq > next {
            self.items.clear();
            self.bytes = 0;
            self.first = seq;
        }
        self.items.push_back((item, size));
        self.bytes += size;
        while self.items.len() > TAIL_MESSAGES || (self.bytes > TAIL_BYTES && self.items.len() > 1)
        {
            if let Some((_, size)) = self.items.pop_front() {
                self.bytes -= size;
                self.first += 1;
            }
        }
    }

    /// The sequence of the newest message the tail holds (or of the last one released
    /// before it, when empty).
    pub fn last(&self) -> i64 {
        self.next().saturating_sub(1)
    }

    /// Up to `limit` messages after sequence `since`, oldest first, with their sizes; `None`
    /// when the tail does not reach back that far (ask the history instead).
    pub fn after_seq(&self, since: i64, limit: usize) -> Option<Vec<(&T, usize)>> {
        if since.saturating_add(1) < self.first {
            return None;
        }
        let skip = usize::try_from(since.saturating_add(1) - self.first).unwrap_or(usize::MAX);
        Some(
            self.items
                .iter()
                .skip(skip)
                .take(limit)
                .map(|(item, size)| (item, *size))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seqs(answer: Option<Vec<(&i64, usize)>>) -> Option<Vec<i64>> {
        answer.map(|items| items.into_iter().map(|(seq, _)| *seq).collect())
    }

    #[test]
    fn answers_for_anything_after_where_it_started_and_nothing_before() {
        let mut tail = Tail::after(10);
        assert_eq!(seqs(tail.after_seq(10, 50)), Some(vec![]), "nothing new");
        assert_eq!(seqs(tail.after_seq(9, 50)), None, "11 is known, 10 is not");
        for seq in 11..=14 {
            tail.push(seq, seq, 10);
        }
        assert_eq!(seqs(tail.after_seq(10, 50)), Some(vec![11, 12, 13, 14]));
        assert_eq!(seqs(tail.after_seq(12, 1)), Some(vec![13]));
        assert_eq!(seqs(tail.after_seq(14, 50)), Some(vec![]));
        assert_eq!(seqs(tail.after_seq(99, 50)), Some(vec![]));
        assert_eq!(tail.last(), 14);
        assert_eq!(Tail::<i64>::after(10).last(), 10);
    }

    #[test]
    fn a_gap_starts_it_over_and_a_late_message_is_ignored() {
        let mut tail = Tail::after(0);
        tail.push(1, 1, 10);
        tail.push(2, 2, 10);
        tail.push(5, 5, 10); // 3 and 4 were given up on
        assert_eq!(seqs(tail.after_seq(0, 50)), None);
        assert_eq!(seqs(tail.after_seq(4, 50)), Some(vec![5]));
        tail.push(3, 3, 10); // arrives late: the history has it, the tail does not need it
        tail.push(6, 6, 10);
        assert_eq!(seqs(tail.after_seq(4, 50)), Some(vec![5, 6]));
    }

    #[test]
    fn it_is_bounded_in_messages_and_bytes() {
        let mut tail = Tail::after(0);
        for seq in 1..=1000 {
            tail.push(seq, seq, 10);
        }
        assert_eq!(tail.items.len(), TAIL_MESSAGES);
        assert_eq!(seqs(tail.after_seq(872, 1)), Some(vec![873]));
        assert_eq!(seqs(tail.after_seq(871, 1)), None);

        let mut big = Tail::after(0);
        for seq in 1..=10 {
            big.push(seq, seq, TAIL_BYTES / 3);
        }
        assert_eq!(big.items.len(), 3);
        assert!(big.bytes <= TAIL_BYTES);
        big.push(11, 11, TAIL_BYTES * 2);
        assert_eq!(
            seqs(big.after_seq(10, 5)),
            Some(vec![11]),
            "one huge message is kept"
        );
    }
}
