//! The configuration once it validated, with its references resolved: what `App`, the
//! router and the workers take.
//!
//! A [`Config`] is what the file says, and may be wrong; a [`ResolvedConfig`] is built only
//! by [`Config::resolve`] (or [`Config::load`]), which lists every problem first, so a
//! configuration that did not validate cannot be started. Its deployments hold their provider
//! (family, address, keys with their secrets) and their prices, its routes hold their
//! deployments, and its tenants hold their tokens' digests: nothing downstream looks a name
//! up in a map and hopes it is there.
//!
//! The sections that need no resolving are read through [`Deref`] to the validated
//! [`Config`], read-only: nothing can change a resolved configuration into an invalid one.

use super::tenants::TokenDigests;
use super::{
    Config, ConfigError, KeyConfig, OperatorConfig, Problem, ProviderKind, QueueBackend, Secret,
    Strategy, TenantConfig, UrgencyDeadlines,
};
use crate::pricing::Price;
use crate::provider_kind::BatchLimits;
use std::collections::BTreeMap;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

/// A configuration that validated, with its references resolved (see the module's doc).
#[derive(Debug, Clone)]
pub struct ResolvedConfig {
    raw: Config,
    // Named apart from the raw sections' fields, which `Deref` shows.
    resolved_deployments: BTreeMap<String, Arc<ResolvedDeployment>>,
    resolved_routes: BTreeMap<String, ResolvedRoute>,
    queue_backend: ResolvedQueue,
    tokens: TokenDigests,
    operator_tokens: TokenDigests,
}

/// A provider with its keys, shared by its deployments.
#[derive(Debug)]
pub struct ResolvedProvider {
    pub name: String,
    pub kind: ProviderKind,
    /// As configured: `sim` stands for the built-in simulator, whose address is known only
    /// once it runs.
    pub base_url: String,
    /// Whole-call timeout of one attempt.
    pub timeout: Duration,
    /// Each key with its secret and limits.
    pub keys: Vec<KeyConfig>,
}

/// A deployment with its provider and its prices.
#[derive(Debug)]
pub struct ResolvedDeployment {
    pub name: String,
    pub provider: Arc<ResolvedProvider>,
    pub model: String,
    /// The real-time price (configured, else the catalogue's); `None` for `price =
    /// "unknown"`.
    pub price: Option<Price>,
    pub drop_unsupported_params: bool,
    pub default_max_tokens: Option<u32>,
    pub overrides: crate::overrides::Overrides,
    pub batch: Option<ResolvedBatchTier>,
    pub flex: Option<ResolvedFlexTier>,
}

/// A deployment's batch tier, with its price and the provider's limits applied.
#[derive(Debug, Clone, Copy)]
pub struct ResolvedBatchTier {
    /// `None` when the deployment's price is unknown.
    pub price: Option<Price>,
    pub turnaround: Duration,
    /// Requests per batch: the configured number, else the provider's limit.
    pub max_requests: usize,
    /// The provider's limit on a batch's size, in bytes.
    pub max_bytes: usize,
    pub max_wait: Duration,
}

/// A deployment's flex tier, with its price.
#[derive(Debug, Clone, Copy)]
pub struct ResolvedFlexTier {
    /// `None` when the deployment's price is unknown.
    pub price: Option<Price>,
    pub timeout: Duration,
}

/// A route with its chain of deployments.
#[derive(Debug, Clone)]
pub struct ResolvedRoute {
    pub name: String,
    pub chain: Vec<Arc<ResolvedDeployment>>,
    pub strategy: Strategy,
    /// One weight per deployment of the chain (all 1 when none were configured).
    pub weights: Vec<u32>,
    pub attempt_timeout: Option<Duration>,
    pub first_token_timeout: Option<Duration>,
    pub stream_idle_timeout: Option<Duration>,
    pub max_attempts: Option<u32>,
    pub deadlines: UrgencyDeadlines,
    pub realtime_max_wait: Duration,
}

/// The queue backend, with what it needs.
#[derive(Debug, Clone)]
pub enum ResolvedQueue {
    Embedded,
    Rabbitmq { url: Secret },
}

impl Config {
    /// Checks the configuration and resolves its references: the one way to a
    /// [`ResolvedConfig`]. Fails with every problem, as `sluice check-config` lists them.
    pub fn resolve(self) -> Result<ResolvedConfig, ConfigError> {
        self.resolve_from("the configuration")
    }

    /// [`Config::resolve`], naming `origin` (the file) in the error.
    pub(super) fn resolve_from(self, origin: &str) -> Result<ResolvedConfig, ConfigError> {
        let invalid = |problems| ConfigError::Invalid {
            origin: origin.to_string(),
            problems,
        };
        let problems = self.validate();
        if !problems.is_empty() {
            return Err(invalid(problems));
        }
        // Validation named every unknown reference already; resolving finds none, and says so
        // with a problem rather than a panic if the two ever disagree.
        ResolvedConfig::new(self).map_err(|problem| invalid(vec![problem]))
    }
}

impl ResolvedConfig {
    fn new(raw: Config) -> Result<ResolvedConfig, Problem> {
        let providers: BTreeMap<&str, Arc<ResolvedProvider>> = raw
            .providers
            .iter()
            .map(|(name, p)| {
                let provider = ResolvedProvider {
                    name: name.clone(),
                    kind: p.kind,
                    base_url: p.base_url.clone(),
                    timeout: p.timeout,
                    keys: p.keys.clone(),
                };
                (name.as_str(), Arc::new(provider))
            })
            .collect();
        let mut deployments = BTreeMap::new();
        for (name, d) in &raw.deployments {
            let provider = providers.get(d.provider.as_str()).ok_or_else(|| {
                Problem::new(
                    format!("deployments.{name}.provider"),
                    format!("unknown provider \"{}\"", d.provider),
                )
            })?;
            let limits = BatchLimits::of(provider.kind);
            let deployment = ResolvedDeployment {
                name: name.clone(),
                provider: provider.clone(),
                model: d.model.clone(),
                price: raw.deployment_price(name).price(),
                drop_unsupported_params: d.drop_unsupported_params,
                default_max_tokens: d.default_max_tokens,
                overrides: d.overrides.clone(),
                batch: d.batch.as_ref().map(|tier| ResolvedBatchTier {
                    price: raw.deployment_batch_price(name),
                    turnaround: tier.turnaround,
                    max_requests: tier.max_requests.unwrap_or(limits.max_requests),
                    max_bytes: limits.max_bytes,
                    max_wait: tier.max_wait,
                }),
                flex: d.flex.as_ref().map(|flex| ResolvedFlexTier {
                    price: raw.deployment_flex_price(name),
                    timeout: flex.timeout,
                }),
            };
            deployments.insert(name.clone(), Arc::new(deployment));
        }
        let mut routes = BTreeMap::new();
        for (name, r) in &raw.routes {
            let chain = r
                .deployments
                .iter()
                .enumerate()
                .map(|(i, d)| {
                    deployments.get(d).cloned().ok_or_else(|| {
                        Problem::new(
                            format!("routes.{name}[{i}]"),
                            format!("unknown deployment \"{d}\""),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let route = ResolvedRoute {
                name: name.clone(),
                weights: r.weights.clone().unwrap_or_else(|| vec![1; chain.len()]),
                chain,
                strategy: r.strategy,
                attempt_timeout: r.attempt_timeout,
                first_token_timeout: r.first_token_timeout,
                stream_idle_timeout: r.stream_idle_timeout,
                max_attempts: r.max_attempts,
                deadlines: r.deadline.clone(),
                realtime_max_wait: r.realtime_max_wait,
            };
            routes.insert(name.clone(), route);
        }
        let queue = match (raw.queue.effective_backend(), &raw.queue.url) {
            (QueueBackend::Embedded, _) => ResolvedQueue::Embedded,
            (QueueBackend::Rabbitmq, Some(url)) => ResolvedQueue::Rabbitmq { url: url.clone() },
            (QueueBackend::Rabbitmq, None) => {
                return Err(Problem::new(
                    "queue.url",
                    "the rabbitmq backend needs a url",
                ))
            }
        };
        Ok(ResolvedConfig {
            tokens: TokenDigests::new(raw.tenants.iter().map(|t| &t.token)),
            operator_tokens: TokenDigests::new(raw.operators.iter().map(|o| &o.token)),
            raw,
            resolved_deployments: deployments,
            resolved_routes: routes,
            queue_backend: queue,
        })
    }

    /// Every deployment, by name.
    pub fn resolved_deployments(&self) -> &BTreeMap<String, Arc<ResolvedDeployment>> {
        &self.resolved_deployments
    }

    /// Every route, by name.
    pub fn resolved_routes(&self) -> &BTreeMap<String, ResolvedRoute> {
        &self.resolved_routes
    }

    /// The queue backend to start.
    pub fn queue_backend(&self) -> &ResolvedQueue {
        &self.queue_backend
    }

    /// The tenant a bearer token belongs to (see [`TokenDigests::find`]).
    pub fn tenant_for_token(&self, token: &str) -> Option<&TenantConfig> {
        self.tokens
            .find(token)
            .and_then(|i| self.raw.tenants.get(i))
    }

    /// The operator a dashboard token belongs to, compared the same way.
    pub fn operator_for_token(&self, token: &str) -> Option<&OperatorConfig> {
        self.operator_tokens
            .find(token)
            .and_then(|i| self.raw.operators.get(i))
    }
}

impl Deref for ResolvedConfig {
    type Target = Config;

    fn deref(&self) -> &Config {
        &self.raw
    }
}
