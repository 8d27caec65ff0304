//! [`RateLimit`]: a token bucket bounding how fast one connection may send messages.

use super::error::{DomainError, ErrorCode};

/// Messages per second a connection may send on average, with bursts up to twice that.
/// Time is an input in milliseconds, so the rule is tested without a clock.
#[derive(Debug, Clone)]
pub struct RateLimit {
    /// Sustained messages per second; 0 means unlimited.
    per_second: u32,
    /// Tokens available now, in thousandths of a message (integer arithmetic, no drift).
    milli_tokens: u64,
    /// When the bucket was last refilled.
    refilled_at_ms: u64,
}

impl RateLimit {
    /// A full bucket at `now_ms`.
    pub fn new(per_second: u32, now_ms: u64) -> Self {
        Self {
            per_second,
            milli_tokens: Self::capacity(per_second),
            refilled_at_ms: now_ms,
        }
    }

    fn capacity(per_second: u32) -> u64 {
        u64::from(per_second) * 2 * 1_000
    }

    /// Take one message's token at `now_ms`, or refuse with `rate_limited`.
    pub fn take(&mut self, now_ms: u64) -> Result<(), DomainError> {
        if self.per_second == 0 {
            return Ok(());
        }
        let elapsed = now_ms.saturating_sub(self.refilled_at_ms);
        self.refilled_at_ms = self.refilled_at_ms.max(now_ms);
        let refill = elapsed.saturating_mul(u64::from(self.per_second));
        self.milli_tokens = self
            .milli_tokens
            .saturating_add(refill)
            .min(Self::capacity(self.per_second));
        if self.milli_tokens < 1_000 {
            return Err(DomainError::new(
                ErrorCode::RateLimited,
                "you are sending too fast, please slow down",
            ));
        }
        self.milli_tokens -= 1_000;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_twice_the_rate_passes_then_the_rate_is_enforced() {
        let mut limit = RateLimit::new(10, 0);
        for _ in 0..20 {
            assert!(limit.take(0).is_ok());
        }
        let refused = limit.take(0).err().map(|e| e.code());
        assert_eq!(refused, Some(ErrorCode::RateLimited));
        assert!(limit.take(99).is_err(), "not yet a whole token after 99 ms");
        assert!(limit.take(100).is_ok(), "one token per 100 ms at 10/s");
        assert!(limit.take(100).is_err());
    }

    #[test]
    fn the_bucket_never_holds_more_than_the_burst() {
        let mut limit = RateLimit::new(1, 0);
        let passed = (0..10).filter(|_| limit.take(1_000_000).is_ok()).count();
        assert_eq!(passed, 2);
    }

    #[test]
    fn zero_means_unlimited() {
        let mut limit = RateLimit::new(0, 0);
        assert!((0..10_000).all(|_| limit.take(0).is_ok()));
    }

    #[test]
    fn a_clock_going_backwards_refills_nothing() {
        let mut limit = RateLimit::new(1, 1_000);
        assert!(limit.take(1_000).is_ok() && limit.take(1_000).is_ok());
        assert!(limit.take(0).is_err());
    }
}
