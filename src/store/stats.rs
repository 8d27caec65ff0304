//! [`WriterStats`]: what the group-commit writer did, for the `/metrics` endpoint. Lock-free
//! counters updated once per batch, so measuring costs nothing next to a commit.

use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds of the batch-size buckets (writes per committed transaction).
pub const BATCH_SIZE_BUCKETS: [f64; 10] =
    [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0];

/// Upper bounds of the commit-latency buckets, in seconds (from the batch's start to its
/// commit: what an acknowledgement waits for once its write is taken).
pub const COMMIT_SECONDS_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 5.0,
];

/// A histogram with fixed buckets, Prometheus style (each bucket counts what is at most its
/// bound; rendering makes the counts cumulative).
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// One counter per bound, and a last one for what is above every bound.
    counts: Vec<AtomicU64>,
    /// The sum of observations, in millionths (atomics hold integers).
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, value: f64) {
        let bucket = self
            .bounds
            .iter()
            .position(|bound| value <= *bound)
            .unwrap_or(self.bounds.len());
        if let Some(count) = self.counts.get(bucket) {
            count.fetch_add(1, Ordering::Relaxed);
        }
        // Saturating float-to-int conversion: a negative or absurd value cannot wrap.
        let micros = (value * 1e6) as u64;
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// `(upper bound, cumulative count)` per bucket, the `+Inf` one last with the total.
    pub fn cumulative(&self) -> Vec<(f64, u64)> {
        let mut total = 0;
        let mut buckets = Vec::with_capacity(self.counts.len());
        for (index, count) in self.counts.iter().enumerate() {
            total += count.load(Ordering::Relaxed);
            let bound = self.bounds.get(index).copied().unwrap_or(f64::INFINITY);
            buckets.push((bound, total));
        }
        buckets
    }

    /// The sum of every observation.
    pub fn sum(&self) -> f64 {
        self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
    }
}

/// What the writer did since the store opened.
#[derive(Debug)]
pub struct WriterStats {
    /// Writes per committed batch.
    pub batch_size: Histogram,
    /// Seconds from a batch's start to its commit.
    pub commit_seconds: Histogram,
    /// Messages stored (resends found as duplicates not counted).
    pub messages_stored: AtomicU64,
    /// Batches that failed and were rolled back.
    pub failed_batches: AtomicU64,
}

impl Default for WriterStats {
    fn default() -> Self {
        Self {
            batch_size: Histogram::new(&BATCH_SIZE_BUCKETS),
            commit_seconds: Histogram::new(&COMMIT_SECONDS_BUCKETS),
            messages_stored: AtomicU64::new(0),
            failed_batches: AtomicU64::new(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_counts_cumulatively_with_everything_in_the_last_bucket() {
        let histogram = Histogram::new(&BATCH_SIZE_BUCKETS);
        for value in [1.0, 3.0, 3.0, 5000.0] {
            histogram.observe(value);
        }
        let buckets = histogram.cumulative();
        assert_eq!(buckets[0], (1.0, 1));
        assert_eq!(buckets[1], (2.0, 1));
        assert_eq!(buckets[2], (4.0, 3));
        assert_eq!(buckets.last(), Some(&(f64::INFINITY, 4)));
        assert!((histogram.sum() - 5007.0).abs() < 1e-6);
    }
}
