//! The wall clock, read here only: the domain is given the time.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (the store's timestamps).
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}

pub(crate) fn now_ms_u64() -> u64 {
    u64::try_from(now_ms()).unwrap_or(0)
}
