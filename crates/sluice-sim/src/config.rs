//! `[sim]` of `sluice.toml`: how the simulator behaves as a whole (latency, random faults,
//! batch timing). Its own settings, so `sluice.toml` and `sluice sim` read the same table.

use serde::{Deserialize, Deserializer};
use std::time::Duration;

/// How the simulator behaves as a whole. Per-request behaviour comes from directives.
///
/// In TOML (e.g. the `[sim]` table of `sluice.toml`):
///
/// ```toml
/// latency = "20ms"
/// rate_429 = 0.05
/// rate_500 = 0.01
/// rate_timeout = 0.0
/// retry_after = "1s"
/// seed = 42
/// announced_requests_per_minute = 100   # optional
/// batch_turnaround = "2s"
/// batch_window = "24h"
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimConfig {
    /// Added before every answer to a well-formed request, including injected errors.
    #[serde(deserialize_with = "humantime_duration")]
    pub latency: Duration,
    /// Probability that a call answers 429 `rate_limit_exceeded`.
    pub rate_429: f64,
    /// Probability that a call answers 500 `server_error`.
    pub rate_500: f64,
    /// Probability that a call never answers.
    pub rate_timeout: f64,
    /// What 429s ask the client to wait (`retry-after`, `retry-after-ms`).
    #[serde(deserialize_with = "humantime_duration")]
    pub retry_after: Duration,
    /// Seeds the random faults, so a benchmark run can be repeated.
    pub seed: u64,
    /// The requests per minute the rate-limit headers announce (each family's usual figure
    /// when unset). Announced, not enforced: once a minute's calls reach it, answers say
    /// `remaining: 0` until the window resets, so clients that read the headers can be tested.
    pub announced_requests_per_minute: Option<u64>,
    /// How long a batch (any family's batch API) takes from creation until it ends, its
    /// items answered evenly over that time.
    #[serde(deserialize_with = "humantime_duration")]
    pub batch_turnaround: Duration,
    /// The batch completion window (the providers' 24 h). A `batch_turnaround` longer than
    /// this makes every batch expire here, with the items not yet answered expired.
    #[serde(deserialize_with = "humantime_duration")]
    pub batch_window: Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            latency: Duration::ZERO,
            rate_429: 0.0,
            rate_500: 0.0,
            rate_timeout: 0.0,
            retry_after: Duration::from_secs(1),
            seed: 0,
            announced_requests_per_minute: None,
            batch_turnaround: Duration::from_secs(2),
            batch_window: Duration::from_secs(24 * 60 * 60),
        }
    }
}

/// A [`SimConfig`] that cannot be served.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SimConfigError {
    #[error("sim.{field} = {value}: a probability must be between 0.0 and 1.0")]
    Probability { field: &'static str, value: f64 },
    #[error("sim: rate_429 + rate_500 + rate_timeout = {0}, which is more than 1.0")]
    RatesOverOne(f64),
}

impl SimConfig {
    pub fn validate(&self) -> Result<(), SimConfigError> {
        for (field, value) in [
            ("rate_429", self.rate_429),
            ("rate_500", self.rate_500),
            ("rate_timeout", self.rate_timeout),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err(SimConfigError::Probability { field, value });
            }
        }
        let sum = self.rate_429 + self.rate_500 + self.rate_timeout;
        if sum > 1.0 + f64::EPSILON {
            return Err(SimConfigError::RatesOverOne(sum));
        }
        Ok(())
    }
}

fn humantime_duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    humantime::parse_duration(&text)
        .map_err(|e| serde::de::Error::custom(format!("\"{text}\": {e} (write e.g. \"20ms\")")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_reads_humantime_and_rejects_unknown_fields() {
        let config: SimConfig = toml::from_str(
            r#"
            latency = "20ms"
            rate_429 = 0.25
            retry_after = "2s"
            seed = 7
            "#,
        )
        .unwrap();
        assert_eq!(config.latency, Duration::from_millis(20));
        assert_eq!(config.rate_429, 0.25);
        assert_eq!(config.rate_500, 0.0);
        assert_eq!(config.retry_after, Duration::from_secs(2));
        assert_eq!(config.seed, 7);

        let err = toml::from_str::<SimConfig>("rate_42 = 0.1").unwrap_err();
        assert!(err.to_string().contains("rate_42"), "{err}");
        let err = toml::from_str::<SimConfig>("latency = \"soon\"").unwrap_err();
        assert!(err.to_string().contains("soon"), "{err}");
    }

    #[test]
    fn default_config_is_fault_free() {
        let config = SimConfig::default();
        assert_eq!(config.latency, Duration::ZERO);
        assert_eq!(config.retry_after, Duration::from_secs(1));
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn impossible_rates_are_rejected() {
        let config = SimConfig {
            rate_500: 1.5,
            ..SimConfig::default()
        };
        assert!(matches!(
            config.validate(),
            Err(SimConfigError::Probability {
                field: "rate_500",
                ..
            })
        ));
        let config = SimConfig {
            rate_429: 0.6,
            rate_500: 0.6,
            ..SimConfig::default()
        };
        assert!(matches!(
            config.validate(),
            Err(SimConfigError::RatesOverOne(_))
        ));
    }
}
