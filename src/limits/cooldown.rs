//! A key's cooldown: a 429, or response headers saying a key's remaining requests are 0, put
//! the key at rest until the provider's `retry-after`; it admits nothing meanwhile. Kept apart
//! from the buckets because the provider sets it, not Sluice's own count.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Until when a key admits nothing, in milliseconds after its pool's epoch (one atomic, so
/// admission reads it without a lock).
#[derive(Debug, Default)]
pub(super) struct Cooldown {
    until_ms: AtomicU64,
}

impl Cooldown {
    /// Rests the key for `wait` from `now_ms`. A later, shorter cooldown never shortens a
    /// longer one.
    pub(super) fn extend(&self, now_ms: u64, wait: Duration) {
        let until = now_ms.saturating_add(wait.as_millis().min(u128::from(u64::MAX)) as u64);
        self.until_ms.fetch_max(until, Ordering::Relaxed);
    }

    /// How long the key still rests at `now_ms`, when it does.
    pub(super) fn left(&self, now_ms: u64) -> Option<Duration> {
        let until = self.until_ms.load(Ordering::Relaxed);
        (until > now_ms).then(|| Duration::from_millis(until - now_ms))
    }
}
