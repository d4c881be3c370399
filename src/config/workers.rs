//! How workers run jobs: `[pools]` (concurrency per urgency), `[retry]` (attempts and
//! back-off) and `[health]` (when a deployment's circuit opens), with their problems.

use super::Problem;
use crate::job::Urgency;
use serde::Deserialize;
use std::time::Duration;

/// When a deployment counts as unhealthy (see [`crate::router`]): the circuit breaker that
/// stops sending it traffic while it fails, and lets one trial call through after `cooldown`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// How many recent calls of a deployment the error rate is taken over.
    pub window: u32,
    /// Fewer calls than this in the window never open the circuit: two failures out of two
    /// are not a trend.
    pub min_calls: u32,
    /// Error rate (server errors, timeouts, connection failures) at or above which the
    /// circuit opens.
    pub error_threshold: f64,
    /// How long an open circuit skips the deployment before one trial call (half-open).
    #[serde(with = "super::duration")]
    pub cooldown: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            window: 20,
            min_calls: 5,
            error_threshold: 0.5,
            cooldown: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// How many jobs of this urgency run at once in one process.
    pub concurrency: u16,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolsConfig {
    pub realtime: PoolConfig,
    pub standard: PoolConfig,
    pub batch: PoolConfig,
}

impl Default for PoolsConfig {
    fn default() -> Self {
        PoolsConfig {
            realtime: PoolConfig { concurrency: 64 },
            standard: PoolConfig { concurrency: 32 },
            batch: PoolConfig { concurrency: 8 },
        }
    }
}

impl PoolsConfig {
    pub fn get(&self, urgency: Urgency) -> PoolConfig {
        match urgency {
            Urgency::Realtime => self.realtime,
            Urgency::Standard => self.standard,
            Urgency::Batch => self.batch,
        }
    }
}

/// How retryable failures are retried.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Attempts per job, the first included, before it fails with the last error.
    pub max_attempts: u32,
    /// Back-off before the second attempt; doubled each time, with jitter.
    #[serde(with = "super::duration")]
    pub base_delay: Duration,
    #[serde(with = "super::duration")]
    pub max_delay: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: 5,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(600),
        }
    }
}

impl HealthConfig {
    pub(super) fn problems(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        if !(self.error_threshold > 0.0 && self.error_threshold <= 1.0) {
            problems.push(Problem::new(
                "health.error_threshold",
                format!(
                    "{} is not a rate above 0 and at most 1 (0.5 opens the circuit at half the calls failing)",
                    self.error_threshold
                ),
            ));
        }
        if self.window == 0 {
            problems.push(Problem::new("health.window", "must be at least 1"));
        }
        if self.min_calls > self.window {
            problems.push(Problem::new(
                "health.min_calls",
                format!(
                    "{} is more than health.window ({}), so the circuit could never open",
                    self.min_calls, self.window
                ),
            ));
        }
        problems
    }
}

impl PoolsConfig {
    pub(super) fn problems(&self) -> Vec<Problem> {
        Urgency::ALL
            .into_iter()
            .filter(|urgency| self.get(*urgency).concurrency == 0)
            .map(|urgency| {
                Problem::new(format!("pools.{urgency}.concurrency"), "must be at least 1")
            })
            .collect()
    }
}

impl RetryConfig {
    pub(super) fn problems(&self) -> Vec<Problem> {
        if self.max_attempts == 0 {
            vec![Problem::new("retry.max_attempts", "must be at least 1")]
        } else {
            Vec::new()
        }
    }
}
