//! The router: from the model a client asked for to the deployment and key of one attempt.
//!
//! A model name resolves to a [`Route`]: a configured route (an ordered fallback chain of
//! deployments with a strategy, timeouts, deadlines and an attempt budget), or a deployment
//! named directly (a chain of one). [`Route::choose`] walks the chain for each attempt:
//!
//! 1. **Order.** `priority`: attempt *n* starts at the chain's deployment *n − 1* (wrapping
//!    round), so a retry after a failure moves to the next deployment. `weighted`: the start
//!    is drawn by weight, then the chain follows from there.
//! 2. **Health.** A deployment whose circuit is open ([`health`]) is skipped; after its
//!    cooldown one trial call goes through (half-open).
//! 3. **Capacity.** The deployment's [`KeyPool`] admits the call on the key with room
//!    ([`crate::limits`]). Keys all cooling down after 429s: skip to the next deployment
//!    ("on 429, use the fallback"). Sluice's own buckets full: a standard or batch job
//!    *waits* for this deployment — [`Choice::Wait`], which the worker turns into a delay on
//!    the queue without counting an attempt — while a realtime job waits only up to the
//!    route's `realtime_max_wait` and otherwise moves on. A call too large for every key is
//!    refused with the limit named; so is one whose every key is out of credit
//!    ([`crate::limits::Credit`]), which no wait would help.
//!
//! Every choice says why it was made (`chosen_because`), and the attempt records it, so a
//! job's attempts tell the story of a fallback.

pub mod health;

use crate::config::{ProviderKind, ResolvedConfig, Strategy, UrgencyDeadlines};
use crate::failure::JobFailure;
use crate::job::{ChatRequest, Urgency};
use crate::limits::{
    estimate_split, Admission, Busy, Credit, KeyCapacity, KeyPool, KeyQuota, SharedKey,
    TokenEstimate,
};
use crate::pricing::Price;
use crate::providers::anthropic::AnthropicProvider;
use crate::providers::batch::BatchApi;
use crate::providers::gemini::GeminiProvider;
use crate::providers::openai::OpenAiProvider;
use crate::providers::{CallOptions, ErrorKind, Provider};
use health::{Gate, Health, HealthView};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

/// One key of a deployment, ready to use.
#[derive(Debug, Clone)]
pub struct Key {
    pub id: String,
    /// The secret. Only ever handed to an adapter.
    secret: crate::config::Secret,
}

impl Key {
    pub fn secret(&self) -> &str {
        self.secret.expose()
    }
}

/// A deployment with everything an attempt needs.
#[derive(Debug)]
pub struct Deployment {
    pub name: String,
    pub provider_name: String,
    /// The API family, named in the errors its adapter reports.
    pub kind: ProviderKind,
    pub model: String,
    /// The real-time price (configured, else the catalogue's); `None` for `price =
    /// "unknown"`, whose costs are recorded as unpriced.
    pub price: Option<Price>,
    pub timeout: Duration,
    /// How requests are translated for this deployment.
    pub options: CallOptions,
    /// How requests are reshaped for this deployment before translation.
    pub overrides: crate::overrides::Overrides,
    pub adapter: Arc<dyn Provider>,
    keys: Vec<Key>,
    quotas: Vec<KeyQuota>,
    /// The keys' buckets and cooldowns.
    pub limits: KeyPool,
    /// Error rate, latencies and the circuit breaker.
    pub health: Health,
    /// The provider's batch tier for this model, when configured.
    pub batch: Option<BatchTier>,
    /// OpenAI's flex service tier for this model, when configured.
    pub flex: Option<FlexTier>,
}

/// A deployment's flex tier: the same endpoint called with `service_tier: "flex"`.
#[derive(Debug, Clone, Copy)]
pub struct FlexTier {
    /// The flex price (`None` when the deployment's price is unknown).
    pub price: Option<Price>,
    /// The whole-call timeout of a flex call.
    pub timeout: Duration,
}

/// A deployment's batch tier: where its batch-tier jobs are sent, what they cost, how they
/// are grouped (see [`crate::batch`]).
#[derive(Debug)]
pub struct BatchTier {
    pub api: Arc<dyn BatchApi>,
    /// The batch price (`None` when the deployment's price is unknown).
    pub price: Option<Price>,
    pub turnaround: Duration,
    pub max_requests: usize,
    pub max_bytes: usize,
    pub max_wait: Duration,
}

impl Deployment {
    /// Key `index`, as [`KeyPool::admit`] chose it.
    pub fn key(&self, index: usize) -> &Key {
        &self.keys[index]
    }

    /// The tokens a call of `request` is counted for on this deployment's keys.
    pub fn estimate(&self, request: &ChatRequest) -> u32 {
        self.estimate_split(request).total()
    }

    /// [`Deployment::estimate`] as prompt and answer apart, which are priced apart.
    pub fn estimate_split(&self, request: &ChatRequest) -> TokenEstimate {
        let completion = self
            .options
            .default_max_tokens
            .unwrap_or(crate::limits::DEFAULT_COMPLETION_ESTIMATE);
        estimate_split(request, completion)
    }

    /// Every key's id, in the order [`Deployment::key`] indexes them.
    pub fn key_ids(&self) -> Vec<String> {
        self.keys.iter().map(|k| k.id.clone()).collect()
    }

    /// Every key's configured limits, in the order [`Deployment::key`] indexes them.
    pub fn quotas(&self) -> &[KeyQuota] {
        &self.quotas
    }

    /// The key whose id is `id`.
    pub fn key_by_id(&self, id: &str) -> Option<&Key> {
        self.keys.iter().find(|k| k.id == id)
    }

    /// What `GET /v1/providers` shows of it.
    pub fn view(&self) -> DeploymentView {
        DeploymentView {
            name: self.name.clone(),
            provider: self.provider_name.clone(),
            model: self.model.clone(),
            health: self.health.view(),
            keys: self.limits.capacity(&self.quotas),
        }
    }
}

/// One deployment's live state.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeploymentView {
    pub name: String,
    pub provider: String,
    pub model: String,
    #[serde(flatten)]
    pub health: HealthView,
    pub keys: Vec<KeyCapacity>,
}

/// A model name's chain of deployments and how jobs use it.
#[derive(Debug)]
pub struct Route {
    pub name: String,
    pub chain: Vec<Arc<Deployment>>,
    strategy: Strategy,
    weights: Vec<u32>,
    /// Whole-call timeout of one attempt; the deployment's provider timeout when `None`.
    pub attempt_timeout: Option<Duration>,
    /// See [`crate::config::RouteConfig::first_token_timeout`].
    pub first_token_timeout: Option<Duration>,
    /// See [`crate::config::RouteConfig::stream_idle_timeout`].
    pub stream_idle_timeout: Option<Duration>,
    pub max_attempts: Option<u32>,
    pub deadlines: UrgencyDeadlines,
    pub realtime_max_wait: Duration,
}

/// The outcome of [`Route::choose`].
#[derive(Debug)]
pub enum Choice {
    /// Call this deployment with this key (its cells are taken).
    Go(Pick),
    /// Nothing can take the call now; come back after `wait`. Not an attempt. `brief`: the
    /// deployment's capacity is being fetched for this process (a cluster's capacity lease),
    /// so the job is best kept where it is for that moment rather than parked: the cells
    /// come to this process, not to whichever process would take the job next.
    Wait {
        wait: Duration,
        why: String,
        brief: bool,
    },
    /// Nothing can take this call, now or by waiting: fail the job for `reason`, with this
    /// message.
    Refuse { reason: Refusal, message: String },
}

/// Why [`Route::choose`] refused a call, as the failed job records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Too large for every key's limits (or a route with no deployments).
    OverLimit,
    /// Every key that could take it is out of credit.
    QuotaExhausted,
}

impl Refusal {
    /// The failure a job refused for this reason records.
    pub fn failure(self) -> JobFailure {
        match self {
            Refusal::OverLimit => JobFailure::OverLimit,
            Refusal::QuotaExhausted => JobFailure::Provider(ErrorKind::QuotaExhausted),
        }
    }
}

#[derive(Debug)]
pub struct Pick {
    pub deployment: Arc<Deployment>,
    pub key: usize,
    /// The half-open trial of the deployment's circuit.
    pub probe: bool,
    pub chosen_because: String,
}

impl Pick {
    /// Gives the pick up without calling: a half-open trial is handed back so the circuit
    /// can let another one through. The cells taken are not refunded (the buckets have no
    /// refund), which only makes the key's pacing a little conservative.
    pub fn abandon(self) {
        if self.probe {
            self.deployment.health.release();
        }
    }
}

impl Route {
    fn new(name: &str, chain: Vec<Arc<Deployment>>) -> Route {
        Route {
            name: name.to_string(),
            weights: vec![1; chain.len()],
            chain,
            strategy: Strategy::Priority,
            attempt_timeout: None,
            first_token_timeout: None,
            stream_idle_timeout: None,
            max_attempts: None,
            deadlines: UrgencyDeadlines::default(),
            realtime_max_wait: Duration::from_secs(1),
        }
    }

    /// Where attempt `attempt` (1-based) starts in the chain.
    fn start(&self, attempt: u32) -> (usize, &'static str) {
        let len = self.chain.len();
        let shift = (attempt.max(1) as usize - 1) % len;
        match self.strategy {
            Strategy::Priority => (shift, "priority"),
            Strategy::Weighted => {
                let total: u64 = self.weights.iter().map(|w| u64::from(*w)).sum();
                let mut draw = rand::random_range(0..total.max(1));
                let mut pick = 0;
                for (i, w) in self.weights.iter().enumerate() {
                    if draw < u64::from(*w) {
                        pick = i;
                        break;
                    }
                    draw -= u64::from(*w);
                }
                ((pick + shift) % len, "weighted")
            }
        }
    }

    /// Picks the deployment and key for attempt `attempt` of a job of `urgency`.
    /// The deployment a job on this route is meant for: the first of a `priority` chain.
    /// A job answered elsewhere was a fallback, and reports show what that cost beyond it.
    /// A `weighted` route has none (spreading is its purpose, not a fallback).
    pub fn primary(&self) -> Option<&Arc<Deployment>> {
        match self.strategy {
            Strategy::Priority => self.chain.first(),
            Strategy::Weighted => None,
        }
    }

    /// The deployment attempt `attempt` would send to the batch tier: the one the attempt
    /// starts at, when it has a batch tier. Never a later one in the chain: a job is not
    /// moved to another model just because that model has a cheaper tier.
    pub fn batch_deployment(&self, attempt: u32) -> Option<&Arc<Deployment>> {
        if self.chain.is_empty() {
            return None;
        }
        let (start, _) = self.start(attempt);
        Some(&self.chain[start]).filter(|d| d.batch.is_some())
    }

    pub fn choose(&self, attempt: u32, request: &ChatRequest, urgency: Urgency) -> Choice {
        if self.chain.is_empty() {
            return Choice::Refuse {
                reason: Refusal::OverLimit,
                message: format!("route \"{}\" has no deployments", self.name),
            };
        }
        let (start, strategy) = self.start(attempt);
        let mut skipped = String::new();
        let mut soonest: Option<Duration> = None;
        let mut never: Vec<String> = Vec::new();
        let mut spent: Vec<String> = Vec::new();
        let mut wait_at_least = |wait: Duration| {
            soonest = Some(soonest.map_or(wait, |s| s.min(wait)));
        };
        for step in 0..self.chain.len() {
            let deployment = &self.chain[(start + step) % self.chain.len()];
            let probe = match deployment.health.gate() {
                Gate::Open => false,
                Gate::Probe => true,
                Gate::Shut(wait) => {
                    note(&mut skipped, &deployment.name, "circuit_open");
                    wait_at_least(wait);
                    continue;
                }
            };
            let estimate = deployment.estimate(request);
            let admission = deployment.limits.admit(estimate);
            if probe && !matches!(admission, Admission::Admitted(_)) {
                deployment.health.release();
            }
            match admission {
                Admission::Admitted(key) => {
                    let mut chosen_because = match (step, attempt) {
                        (0, 1) => format!("{strategy}: first choice"),
                        (0, n) => format!("{strategy}: attempt {n} moves along the chain"),
                        _ => format!("{strategy}: fallback"),
                    };
                    if probe {
                        chosen_because.push_str("; half-open trial after its circuit opened");
                    }
                    if !skipped.is_empty() {
                        let _ = write!(chosen_because, "; skipped {skipped}");
                    }
                    return Choice::Go(Pick {
                        deployment: deployment.clone(),
                        key,
                        probe,
                        chosen_because,
                    });
                }
                Admission::Never(over) => {
                    note(&mut skipped, &deployment.name, "over_limit");
                    never.push(over.to_string());
                }
                Admission::Wait {
                    wait,
                    busy: Busy::Spent,
                } => {
                    note(&mut skipped, &deployment.name, "quota_exhausted");
                    spent.push(format!(
                        "every key of deployment \"{}\" is out of credit (the provider answered \
                         quota_exhausted) and rests for {}",
                        deployment.name,
                        humantime::format_duration(Duration::from_secs(wait.as_secs()))
                    ));
                }
                Admission::Wait {
                    wait,
                    busy: Busy::Cooldown,
                } => {
                    note(&mut skipped, &deployment.name, "rate_limited");
                    wait_at_least(wait);
                }
                Admission::Wait {
                    wait,
                    busy: Busy::Leasing,
                } => {
                    return Choice::Wait {
                        wait,
                        why: format!(
                            "deployment \"{}\" is fetching its keys' capacity from the cluster",
                            deployment.name
                        ),
                        brief: true,
                    };
                }
                Admission::Wait {
                    wait,
                    busy: Busy::Limits,
                } => {
                    if urgency != Urgency::Realtime || wait <= self.realtime_max_wait {
                        // Pace: this deployment is the one to use, it is only busy.
                        return Choice::Wait {
                            wait,
                            why: format!(
                                "deployment \"{}\" is at its keys' limits for {}",
                                deployment.name,
                                humantime::format_duration(round_ms(wait))
                            ),
                            brief: false,
                        };
                    }
                    note(&mut skipped, &deployment.name, "rate_limited");
                    wait_at_least(wait);
                }
            }
        }
        match soonest {
            Some(wait) => Choice::Wait {
                wait,
                why: format!(
                    "no deployment of \"{}\" can take it now: {skipped}",
                    self.name
                ),
                brief: false,
            },
            // Over every limit somewhere is the request's fault; spent everywhere, the keys'.
            None if never.is_empty() => Choice::Refuse {
                reason: Refusal::QuotaExhausted,
                message: spent.join("; "),
            },
            None => Choice::Refuse {
                reason: Refusal::OverLimit,
                message: never
                    .into_iter()
                    .chain(spent)
                    .collect::<Vec<_>>()
                    .join("; "),
            },
        }
    }
}

fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
}

fn note(notes: &mut String, deployment: &str, why: &str) {
    if !notes.is_empty() {
        notes.push_str(", ");
    }
    let _ = write!(notes, "{deployment} ({why})");
}

/// Every deployment of a configuration, with routes resolved.
#[derive(Debug)]
pub struct Router {
    deployments: BTreeMap<String, Arc<Deployment>>,
    routes: BTreeMap<String, Arc<Route>>,
    /// A route of one for each deployment, for clients naming a deployment directly.
    direct: BTreeMap<String, Arc<Route>>,
}

impl Router {
    /// Builds the adapters. `sim_base_url` gives, for an API family, the base URL that
    /// replaces `sim` (the built-in simulator serves each family at its own path).
    pub fn new(
        config: &ResolvedConfig,
        http: reqwest::Client,
        sim_base_url: Option<&dyn Fn(ProviderKind) -> String>,
    ) -> Router {
        Router::build(config, http, sim_base_url, None)
    }

    /// [`Router::new`] for a process of a cluster: every key's capacity is leased from the
    /// store's buckets ([`crate::limits::shared`]); `wake` wakes the lease loop.
    pub fn shared(
        config: &ResolvedConfig,
        http: reqwest::Client,
        sim_base_url: Option<&dyn Fn(ProviderKind) -> String>,
        wake: Arc<tokio::sync::Notify>,
    ) -> Router {
        Router::build(config, http, sim_base_url, Some(wake))
    }

    fn build(
        config: &ResolvedConfig,
        http: reqwest::Client,
        sim_base_url: Option<&dyn Fn(ProviderKind) -> String>,
        shared: Option<Arc<tokio::sync::Notify>>,
    ) -> Router {
        let mut deployments = BTreeMap::new();
        let mut credits: BTreeMap<(String, String), Arc<Credit>> = BTreeMap::new();
        for (name, d) in config.resolved_deployments() {
            let provider = &d.provider;
            let base_url = match (provider.base_url.as_str(), sim_base_url) {
                ("sim", Some(sim)) => sim(provider.kind),
                (url, _) => url.to_string(),
            };
            let batch = d.batch.map(|tier| BatchTier {
                api: crate::providers::batch::client(provider.kind, &base_url, http.clone()),
                price: tier.price,
                turnaround: tier.turnaround,
                max_requests: tier.max_requests,
                max_bytes: tier.max_bytes,
                max_wait: tier.max_wait,
            });
            let adapter: Arc<dyn Provider> = match provider.kind {
                ProviderKind::Openai => Arc::new(OpenAiProvider::new(base_url, http.clone())),
                ProviderKind::Anthropic => Arc::new(AnthropicProvider::new(base_url, http.clone())),
                ProviderKind::Gemini => Arc::new(GeminiProvider::new(base_url, http.clone())),
            };
            let keys = provider
                .keys
                .iter()
                .map(|k| Key {
                    id: k.id.clone(),
                    secret: k.secret.clone(),
                })
                .collect();
            let quotas: Vec<KeyQuota> = provider.keys.iter().map(KeyQuota::from).collect();
            // Each deployment has buckets of its own: a provider's limits are per model, so
            // two deployments sharing a key are limited separately, as the provider does. Its
            // credit is the key's, whichever deployment finds it spent.
            let mut credit_of = |key_id: &str| -> Arc<Credit> {
                credits
                    .entry((provider.name.clone(), key_id.to_string()))
                    .or_default()
                    .clone()
            };
            let limits = match &shared {
                None => KeyPool::new(
                    name,
                    provider
                        .keys
                        .iter()
                        .zip(&quotas)
                        .map(|(k, q)| (k.id.clone(), *q, credit_of(&k.id))),
                ),
                Some(wake) => KeyPool::shared(
                    name,
                    provider.keys.iter().zip(&quotas).map(|(k, q)| {
                        let key = SharedKey::new(name, &provider.name, &k.id, q, wake.clone());
                        (Arc::new(key), credit_of(&k.id))
                    }),
                    Default::default(),
                ),
            };
            deployments.insert(
                name.clone(),
                Arc::new(Deployment {
                    name: name.clone(),
                    provider_name: provider.name.clone(),
                    kind: provider.kind,
                    model: d.model.clone(),
                    price: d.price,
                    timeout: provider.timeout,
                    options: CallOptions {
                        drop_unsupported_params: d.drop_unsupported_params,
                        default_max_tokens: d.default_max_tokens,
                    },
                    overrides: d.overrides.clone(),
                    adapter,
                    keys,
                    quotas,
                    limits,
                    health: Health::new(config.health.clone()),
                    batch,
                    flex: d.flex.map(|flex| FlexTier {
                        price: flex.price,
                        timeout: flex.timeout,
                    }),
                }),
            );
        }
        let routes = config
            .resolved_routes()
            .iter()
            .map(|(name, r)| {
                // Every deployment of the resolved configuration was built just above.
                let chain: Vec<Arc<Deployment>> = r
                    .chain
                    .iter()
                    .filter_map(|d| deployments.get(&d.name).cloned())
                    .collect();
                let mut route = Route::new(name, chain);
                route.strategy = r.strategy;
                route.weights = r.weights.clone();
                route.attempt_timeout = r.attempt_timeout;
                route.first_token_timeout = r.first_token_timeout;
                route.stream_idle_timeout = r.stream_idle_timeout;
                route.max_attempts = r.max_attempts;
                route.deadlines = r.deadlines.clone();
                route.realtime_max_wait = r.realtime_max_wait;
                (name.clone(), Arc::new(route))
            })
            .collect();
        let direct = deployments
            .iter()
            .map(|(name, d)| (name.clone(), Arc::new(Route::new(name, vec![d.clone()]))))
            .collect();
        Router {
            deployments,
            routes,
            direct,
        }
    }

    /// Every deployment, by name.
    pub fn deployments(&self) -> impl Iterator<Item = &Arc<Deployment>> {
        self.deployments.values()
    }

    /// The route for a client's model name, or `None` if no route or deployment has that
    /// name.
    pub fn route(&self, model: &str) -> Option<&Arc<Route>> {
        self.routes.get(model).or_else(|| self.direct.get(model))
    }

    /// The deployment called `name`.
    pub fn deployment(&self, name: &str) -> Option<&Arc<Deployment>> {
        self.deployments.get(name)
    }

    /// Whether any deployment has a batch tier.
    pub fn has_batch_tier(&self) -> bool {
        self.deployments.values().any(|d| d.batch.is_some())
    }

    /// The fallback chain for a client's model name.
    pub fn chain(&self, model: &str) -> Option<&[Arc<Deployment>]> {
        self.route(model).map(|r| r.chain.as_slice())
    }

    /// Every deployment's live state, by name.
    pub fn views(&self) -> Vec<DeploymentView> {
        self.deployments.values().map(|d| d.view()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_provider_kind_gets_its_adapter() {
        let config = crate::config::Config::parse(
            r#"
            [providers.oa]
            kind = "openai"
            base_url = "sim"
            keys = [{ id = "o", secret = "s" }]
            [providers.claude]
            kind = "anthropic"
            base_url = "https://api.anthropic.com"
            keys = [{ id = "a", secret = "s" }]
            [providers.google]
            kind = "gemini"
            base_url = "https://generativelanguage.googleapis.com/v1beta"
            keys = [{ id = "g", secret = "s" }]
            [deployments.mini]
            provider = "oa"
            model = "gpt-4o-mini"
            price = { input = 1, output = 1 }
            [deployments.sonnet]
            provider = "claude"
            model = "claude-sonnet-4-5"
            price = { input = 1, output = 1 }
            drop_unsupported_params = true
            default_max_tokens = 1024
            [deployments.flash]
            provider = "google"
            model = "gemini-2.5-flash"
            price = { input = 1, output = 1 }
            "#,
            "test",
            &|_| None,
        )
        .and_then(crate::config::Config::resolve)
        .unwrap();
        let sim = |kind: ProviderKind| format!("http://sim/{}", kind.as_str());
        let router = Router::new(&config, reqwest::Client::new(), Some(&sim));
        let adapter = |name: &str| format!("{:?}", router.chain(name).unwrap()[0].adapter);
        assert!(
            adapter("mini").starts_with("OpenAiProvider"),
            "{}",
            adapter("mini")
        );
        assert!(adapter("mini").contains("http://sim/openai/chat/completions"));
        assert!(adapter("sonnet").starts_with("AnthropicProvider"));
        assert!(adapter("sonnet").contains("https://api.anthropic.com/v1/messages"));
        assert!(adapter("flash").starts_with("GeminiProvider"));
        let sonnet = &router.chain("sonnet").unwrap()[0];
        assert_eq!(
            sonnet.options,
            CallOptions {
                drop_unsupported_params: true,
                default_max_tokens: Some(1024)
            }
        );
    }
}
