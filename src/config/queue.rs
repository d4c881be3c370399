//! `[queue]`: the backend (embedded in the store, or RabbitMQ), leases and delivery limits,
//! with their problems.

use super::providers::ProviderConfig;
use super::secret::{empty_secret, Secret};
use super::Problem;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// Which queue carries the jobs: `queue.backend` in the config, and `sluice bench --backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum QueueBackend {
    Embedded,
    Rabbitmq,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// `embedded` unless a `url` is given.
    pub backend: Option<QueueBackend>,
    /// AMQP URL of the RabbitMQ broker.
    pub url: Option<Secret>,
    /// Prefix of every exchange and queue name, so several deployments share one broker.
    pub prefix: String,
    /// Embedded backend: how long a delivery stays invisible to other consumers before it is
    /// handed out again (the worker died). Longer than any attempt can take.
    #[serde(with = "super::duration")]
    pub visibility_timeout: Duration,
    /// RabbitMQ: how long publishing waits for a connection, an alarm to clear or a confirm
    /// before the producer is told the queue is unavailable.
    #[serde(with = "super::duration")]
    pub publish_timeout: Duration,
    /// How many deliveries of a message may end unsettled (its worker crashed, was killed or
    /// lost its connection) before the queue gives up on it and its job is failed: RabbitMQ's
    /// `x-delivery-limit` on the work queues (fixed when a queue is first declared), and the
    /// same bound on the embedded queue.
    pub delivery_limit: u32,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            backend: None,
            url: None,
            prefix: "sluice".into(),
            visibility_timeout: Duration::from_secs(300),
            publish_timeout: Duration::from_secs(10),
            delivery_limit: 10,
        }
    }
}

impl QueueConfig {
    pub fn effective_backend(&self) -> QueueBackend {
        self.backend.unwrap_or(if self.url.is_some() {
            QueueBackend::Rabbitmq
        } else {
            QueueBackend::Embedded
        })
    }
}

impl QueueConfig {
    /// The embedded queue's lease against every provider's call timeout (a job still running
    /// must not be handed to a second worker), and the delivery limit.
    pub(super) fn lease_problems(
        &self,
        providers: &BTreeMap<String, ProviderConfig>,
    ) -> Vec<Problem> {
        let mut problems = Vec::new();
        if self.effective_backend() == QueueBackend::Embedded {
            for (name, provider) in providers {
                if provider.timeout >= self.visibility_timeout {
                    problems.push(Problem::new(
                        "queue.visibility_timeout",
                        format!(
                            "{} must be longer than providers.{name}.timeout ({}), or a job still running would be handed to a second worker",
                            humantime::format_duration(self.visibility_timeout),
                            humantime::format_duration(provider.timeout)
                        ),
                    ));
                }
            }
        }
        if self.delivery_limit == 0 {
            problems.push(Problem::new("queue.delivery_limit", "must be at least 1"));
        }
        problems
    }

    /// The broker's URL, which the RabbitMQ backend needs.
    pub(super) fn url_problems(&self) -> Vec<Problem> {
        if self.effective_backend() != QueueBackend::Rabbitmq {
            return Vec::new();
        }
        let Some(url) = &self.url else {
            return vec![Problem::new(
                "queue.url",
                "the rabbitmq backend needs a url (amqp://user:pass@host:5672/%2f)",
            )];
        };
        let mut problems: Vec<Problem> = empty_secret(url, "queue.url").into_iter().collect();
        let url = url.expose();
        let is_amqp = url.starts_with("amqp://") || url.starts_with("amqps://");
        if !is_amqp && !url.contains("${") {
            problems.push(Problem::new(
                "queue.url",
                "must start with amqp:// or amqps://",
            ));
        }
        problems
    }
}
