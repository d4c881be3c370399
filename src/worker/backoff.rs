//! How long a job waits before its next attempt.
//!
//! Exponential back-off with "equal jitter" (half fixed, half random), so a burst of jobs that
//! failed together does not come back together; never shorter than what the provider asked
//! for in `retry-after`.

use crate::config::RetryConfig;
use std::time::Duration;

/// The delay before attempt `failed_attempt + 1`, given the provider's hint.
pub fn delay(config: &RetryConfig, failed_attempt: u32, retry_after: Option<Duration>) -> Duration {
    let exponent = failed_attempt.saturating_sub(1).min(30);
    let exponential = config
        .base_delay
        .saturating_mul(1u32 << exponent)
        .min(config.max_delay);
    let half = exponential / 2;
    let jittered = half + half.mul_f64(rand::random::<f64>());
    jittered.max(retry_after.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> RetryConfig {
        RetryConfig {
            max_attempts: 5,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
        }
    }

    #[test]
    fn grows_exponentially_within_jitter_bounds() {
        for attempt in 1..=4 {
            let full = Duration::from_secs(1 << (attempt - 1));
            for _ in 0..50 {
                let d = delay(&config(), attempt, None);
                assert!(d >= full / 2 && d <= full, "attempt {attempt}: {d:?}");
            }
        }
    }

    #[test]
    fn is_capped_by_max_delay() {
        let d = delay(&config(), 30, None);
        assert!(d <= Duration::from_secs(60));
    }

    #[test]
    fn never_earlier_than_retry_after() {
        let d = delay(&config(), 1, Some(Duration::from_secs(7)));
        assert!(d >= Duration::from_secs(7));
    }
}
