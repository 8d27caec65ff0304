//! A lock-free latency histogram shared by every connection task.
//!
//! Log-linear buckets: values below 32 µs are exact, above that each power of two is split into 32
//! buckets, so a reported percentile is at most ~3 % above the true value. Recording is two relaxed
//! atomic adds, cheap enough for hundreds of thousands of deliveries per second.

use std::sync::atomic::{AtomicU64, Ordering};

/// Sub-buckets per power of two (2^SUB_BITS).
const SUB_BITS: u32 = 5;
const SUB: u64 = 1 << SUB_BITS;
/// Enough buckets for any u64 value.
const BUCKETS: usize = (64 - SUB_BITS as usize + 1) * SUB as usize;

/// Latency samples in microseconds.
pub struct Histogram {
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    max: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            max: AtomicU64::new(0),
        }
    }
}

fn bucket_of(value: u64) -> usize {
    if value < SUB {
        return value as usize;
    }
    let exponent = 63 - value.leading_zeros();
    let shift = exponent - SUB_BITS;
    let sub = (value >> shift) & (SUB - 1);
    ((exponent - SUB_BITS + 1) as u64 * SUB + sub) as usize
}

/// The largest value that lands in `bucket`.
fn upper_bound_of(bucket: usize) -> u64 {
    let bucket = bucket as u64;
    if bucket < SUB {
        return bucket;
    }
    let exponent = bucket / SUB + u64::from(SUB_BITS) - 1;
    let sub = bucket % SUB;
    let shift = exponent - u64::from(SUB_BITS);
    ((SUB + sub) << shift) + (1 << shift) - 1
}

impl Histogram {
    pub fn record(&self, micros: u64) {
        self.buckets[bucket_of(micros)].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.max.fetch_max(micros, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    pub fn max(&self) -> u64 {
        self.max.load(Ordering::Relaxed)
    }

    /// The value at quantile `q` (0.0..=1.0), in µs; 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        let total = self.count();
        if total == 0 {
            return 0;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (bucket, hits) in self.buckets.iter().enumerate() {
            seen += hits.load(Ordering::Relaxed);
            if seen >= rank {
                return upper_bound_of(bucket).min(self.max());
            }
        }
        self.max()
    }

    /// p50, p95, p99, p99.9 and max, in milliseconds, for reports.
    pub fn summary_ms(&self) -> LatencySummary {
        let ms = |micros: u64| micros as f64 / 1000.0;
        LatencySummary {
            p50: ms(self.quantile(0.50)),
            p95: ms(self.quantile(0.95)),
            p99: ms(self.quantile(0.99)),
            p999: ms(self.quantile(0.999)),
            max: ms(self.max()),
        }
    }
}

/// Percentiles of one histogram, in milliseconds.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct LatencySummary {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_bounded() {
        for value in [0, 1, 31, 32, 33, 63, 64, 65, 1000, 123_456, u64::MAX / 2] {
            let bucket = bucket_of(value);
            assert!(upper_bound_of(bucket) >= value, "{value}");
            if bucket > 0 {
                assert!(upper_bound_of(bucket - 1) < value, "{value}");
            }
        }
        assert!(bucket_of(u64::MAX) < BUCKETS);
    }

    #[test]
    fn percentiles_are_within_three_percent() {
        let histogram = Histogram::default();
        for micros in 1..=10_000 {
            histogram.record(micros);
        }
        let p50 = histogram.quantile(0.5) as f64;
        let p99 = histogram.quantile(0.99) as f64;
        assert!((5000.0..=5150.0).contains(&p50), "p50 {p50}");
        assert!((9900.0..=10_000.0).contains(&p99), "p99 {p99}");
        assert_eq!(histogram.max(), 10_000);
    }
}
