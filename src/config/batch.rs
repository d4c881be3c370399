//! The discounted tiers: `[batch]` (how the batch tier is run), and a deployment's own
//! `batch` and `flex` tables, with their problems.

use super::Problem;
use crate::pricing::Price;
use serde::Deserialize;
use std::time::Duration;

/// How the batch tier is run (see [`crate::batch`]); each deployment's own batch tier is
/// [`DeploymentConfig::batch`](super::DeploymentConfig::batch).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// A job goes to a provider batch only when its deadline is at least the deployment's
    /// `turnaround` plus this far away.
    #[serde(with = "super::duration")]
    pub safety_margin: Duration,
    /// How long before the earliest deadline among a submitted batch's jobs the batch is
    /// given up: cancelled upstream and its unanswered jobs run real-time, with this long
    /// left to do it.
    #[serde(with = "super::duration")]
    pub realtime_reserve: Duration,
    /// When submitted batches are polled: a cron expression (seconds first, or the 5-field
    /// crontab form).
    pub poll: String,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            safety_margin: Duration::from_secs(3600),
            realtime_reserve: Duration::from_secs(1800),
            poll: "0 * * * * *".into(),
        }
    }
}

/// A deployment's batch tier: the provider's half-price batch API for the same model.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchTierConfig {
    /// Batch prices, USD per million tokens; the catalogue's batch price for the model when
    /// absent.
    #[serde(default)]
    pub price: Option<Price>,
    /// How long this deployment's batches typically take to finish. Providers promise 24 h
    /// and usually do much better; a job whose deadline is nearer than this plus
    /// `batch.safety_margin` runs real-time.
    #[serde(default = "default_turnaround", with = "super::duration")]
    pub turnaround: Duration,
    /// Requests per provider batch (at most the provider's limit, which is the default).
    #[serde(default)]
    pub max_requests: Option<usize>,
    /// A batch that has not filled up is submitted this long after its first job joined.
    #[serde(default = "default_max_wait", with = "super::duration")]
    pub max_wait: Duration,
}

fn default_turnaround() -> Duration {
    Duration::from_secs(24 * 3600)
}

fn default_max_wait() -> Duration {
    Duration::from_secs(300)
}

/// A deployment's flex tier: OpenAI's cheaper, slower synchronous processing
/// (`service_tier: "flex"`), priced at Batch API rates, which may answer 429 "resource
/// unavailable" when capacity is short.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlexTierConfig {
    /// Flex prices, USD per million tokens; the catalogue's batch price for the model when
    /// absent (OpenAI prices flex at Batch API rates).
    #[serde(default)]
    pub price: Option<Price>,
    /// The whole-call timeout of a flex call (OpenAI suggests 15 minutes); a job's deadline
    /// must leave this plus `batch.safety_margin` for it to use the flex tier.
    #[serde(default = "default_flex_timeout", with = "super::duration")]
    pub timeout: Duration,
}

fn default_flex_timeout() -> Duration {
    Duration::from_secs(15 * 60)
}

impl BatchConfig {
    pub(super) fn problems(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        if self.realtime_reserve >= self.safety_margin {
            // A batch is given up `realtime_reserve` before a deadline; a job is sent to one
            // only with turnaround + safety_margin to spare. With the reserve the larger, a
            // batch that keeps its typical turnaround would still be given up.
            problems.push(Problem::new(
                "batch.realtime_reserve",
                format!(
                    "{} must be shorter than batch.safety_margin ({}), or a batch on time is still given up before it ends",
                    humantime::format_duration(self.realtime_reserve),
                    humantime::format_duration(self.safety_margin)
                ),
            ));
        }
        if let Err(e) = crate::crontab::parse_schedule(&self.poll) {
            problems.push(Problem::new(
                "batch.poll",
                format!("\"{}\" is not a cron expression: {e}", self.poll),
            ));
        }
        problems
    }
}
