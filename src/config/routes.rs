//! `[routes.NAME]`: a model name clients ask for, resolved to a fallback chain of
//! deployments with a strategy, timeouts, deadlines and an attempt budget; how a client's
//! model name resolves; and the routes' problems.

use super::problem::suggestion;
use super::queue::{QueueBackend, QueueConfig};
use super::{Config, DeploymentConfig, Problem};
use crate::job::Urgency;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// The fallback chain: deployment names, first choice first.
    pub deployments: Vec<String>,
    /// `priority` (the first healthy deployment with capacity wins) or `weighted` (spread
    /// by `weights` among the healthy ones).
    #[serde(default)]
    pub strategy: Strategy,
    /// One weight per deployment, for `weighted` (all equal when absent).
    #[serde(default)]
    pub weights: Option<Vec<u32>>,
    /// Whole-call timeout of one attempt on this route (else the provider's `timeout`).
    #[serde(default, with = "super::duration::option")]
    pub attempt_timeout: Option<Duration>,
    /// An attempt that has not produced its first token within this long is abandoned as a
    /// `timeout` and the job moves to the next deployment (the call is streamed to know).
    #[serde(default, with = "super::duration::option")]
    pub first_token_timeout: Option<Duration>,
    /// An attempt whose answer has begun and then sends nothing for this long is abandoned as
    /// a `timeout` (retried like one) rather than held until `attempt_timeout`: a stalled
    /// stream is a dead connection or a stuck generation, and waiting out the whole call for
    /// it wastes the attempt's time budget. The call is streamed to know. Unset by default:
    /// how long a healthy model may pause mid-answer (reasoning, a long tool argument) varies
    /// by model, so only the route knows a safe bound.
    #[serde(default, with = "super::duration::option")]
    pub stream_idle_timeout: Option<Duration>,
    /// Attempts per job on this route (else `retry.max_attempts`).
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// The longest a job of each urgency may take from submission, unless its own
    /// `deadline` is earlier.
    #[serde(default)]
    pub deadline: UrgencyDeadlines,
    /// How long a realtime job may wait for a key's capacity on one deployment before it
    /// moves on to the next one instead.
    #[serde(default = "default_realtime_max_wait", with = "super::duration")]
    pub realtime_max_wait: Duration,
}

fn default_realtime_max_wait() -> Duration {
    Duration::from_secs(1)
}

/// How a route spreads jobs over its deployments.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    #[default]
    Priority,
    Weighted,
}

/// A total deadline per urgency; absent means none beyond the job's own.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UrgencyDeadlines {
    #[serde(with = "super::duration::option")]
    pub realtime: Option<Duration>,
    #[serde(with = "super::duration::option")]
    pub standard: Option<Duration>,
    #[serde(with = "super::duration::option")]
    pub batch: Option<Duration>,
}

impl UrgencyDeadlines {
    pub fn get(&self, urgency: Urgency) -> Option<Duration> {
        match urgency {
            Urgency::Realtime => self.realtime,
            Urgency::Standard => self.standard,
            Urgency::Batch => self.batch,
        }
    }
}

/// The error for a model nobody configured, listing the ones that are (also used by clients
/// that only know the server's model list, such as `sluice bulk submit`).
pub fn unknown_model_message(model: &str, known: &[&str]) -> String {
    format!(
        "unknown model \"{model}\"; known models: {}",
        known.join(", ")
    )
}

impl Config {
    /// The deployments a client's `model` resolves to, first choice first: a route of that
    /// name, or else a deployment of that name on its own.
    pub fn resolve_model(&self, model: &str) -> Option<Vec<&str>> {
        if let Some(route) = self.routes.get(model) {
            return Some(route.deployments.iter().map(String::as_str).collect());
        }
        self.deployments
            .get_key_value(model)
            .map(|(name, _)| vec![name.as_str()])
    }

    /// The error for a model that no route or deployment answers to, listing those that do.
    pub fn unknown_model(&self, model: &str) -> String {
        unknown_model_message(model, &self.model_names())
    }

    /// Every model name a client may ask for, for error messages.
    pub fn model_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .routes
            .keys()
            .chain(self.deployments.keys())
            .map(String::as_str)
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }
}

/// Every route's problems: its deployments, weights, attempts and timeouts (an attempt
/// timeout must also fit in the embedded queue's lease).
pub(super) fn problems(
    routes: &BTreeMap<String, RouteConfig>,
    deployments: &BTreeMap<String, DeploymentConfig>,
    queue: &QueueConfig,
) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut problem = |path: String, message: String| problems.push(Problem { path, message });
    for (name, route) in routes {
        if route.deployments.is_empty() {
            problem(
                format!("routes.{name}.deployments"),
                "needs at least one deployment".into(),
            );
        }
        for (i, deployment) in route.deployments.iter().enumerate() {
            if !deployments.contains_key(deployment) {
                problem(
                    format!("routes.{name}[{i}]"),
                    format!(
                        "unknown deployment \"{deployment}\"{}",
                        suggestion(deployment, deployments.keys().map(String::as_str))
                    ),
                );
            }
        }
        if let Some(weights) = &route.weights {
            if weights.len() != route.deployments.len() {
                problem(
                    format!("routes.{name}.weights"),
                    format!(
                        "has {} weights for {} deployments; give one per deployment",
                        weights.len(),
                        route.deployments.len()
                    ),
                );
            } else if weights.iter().all(|w| *w == 0) {
                problem(
                    format!("routes.{name}.weights"),
                    "at least one weight must be above 0".into(),
                );
            }
            if route.strategy != Strategy::Weighted {
                problem(
                    format!("routes.{name}.weights"),
                    "only a route with strategy = \"weighted\" uses weights".into(),
                );
            }
        }
        if route.max_attempts == Some(0) {
            problem(
                format!("routes.{name}.max_attempts"),
                "must be at least 1".into(),
            );
        }
        for (field, value) in [
            ("attempt_timeout", route.attempt_timeout),
            ("first_token_timeout", route.first_token_timeout),
            ("stream_idle_timeout", route.stream_idle_timeout),
        ] {
            if value == Some(Duration::ZERO) {
                problem(format!("routes.{name}.{field}"), "must be above 0".into());
            }
        }
        for (field, value) in [
            ("first_token_timeout", route.first_token_timeout),
            ("stream_idle_timeout", route.stream_idle_timeout),
        ] {
            if let (Some(limit), Some(whole)) = (value, route.attempt_timeout) {
                if limit > whole {
                    problem(
                        format!("routes.{name}.{field}"),
                        format!(
                            "{} is longer than attempt_timeout ({}), so it would never fire",
                            humantime::format_duration(limit),
                            humantime::format_duration(whole)
                        ),
                    );
                }
            }
        }
        if queue.effective_backend() == QueueBackend::Embedded {
            if let Some(timeout) = route.attempt_timeout {
                if timeout >= queue.visibility_timeout {
                    problem(
                        format!("routes.{name}.attempt_timeout"),
                        format!(
                            "{} must be shorter than queue.visibility_timeout ({}), or a job still running would be handed to a second worker",
                            humantime::format_duration(timeout),
                            humantime::format_duration(queue.visibility_timeout)
                        ),
                    );
                }
            }
        }
    }

    problems
}
