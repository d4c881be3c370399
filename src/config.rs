//! `sluice.toml`: providers and their keys, deployments and their prices, routes, tenants,
//! budgets, the queue backend and the worker pools.
//!
//! Loading is two steps so that `sluice check-config` can report *every* problem at once:
//! [`Config::parse`] reads the TOML (syntax, then types and keys: each wrong value and each
//! unknown key is reported with its path, the nearest known key suggested, and reading goes
//! on without it), then [`Config::validate`] checks the cross references and returns all
//! problems, each with the path it concerns (`routes.smart[1]: unknown deployment "gpt-5"`).
//! Only a file that is not TOML at all stops at its first error (with its line and column,
//! never the line's text, which may hold a secret).
//!
//! Secrets may be written as `${ENV_VAR}`; they are expanded at load time and kept in
//! [`Secret`], whose `Debug` never shows them. Only the text written in the file is read for
//! references: a variable's value is never scanned again, so no part of a secret is ever
//! named in a problem.
//!
//! Relative paths (`server.database`, `scheduler.dir`) are relative to the folder of the
//! config file ([`Config::load`]), not to the current directory.
//!
//! [`Config::builtin`] is the default configuration: every deployment points at the simulator,
//! so `sluice demo` and a fresh `sluice serve` run with no file and no keys.

use crate::job::Urgency;
use crate::pricing::catalogue::{Catalogue, CatalogueEntry};
use crate::pricing::Price;
use crate::sim::SimConfig;
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod lenient;

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub queue: QueueConfig,
    #[serde(default)]
    pub pools: PoolsConfig,
    #[serde(default)]
    pub retry: RetryConfig,
    #[serde(default)]
    pub sim: SimConfig,
    #[serde(default)]
    pub tenants: Vec<TenantConfig>,
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderConfig>,
    #[serde(default)]
    pub deployments: BTreeMap<String, DeploymentConfig>,
    #[serde(default)]
    pub routes: BTreeMap<String, RouteConfig>,
    #[serde(default)]
    pub scheduler: SchedulerConfig,
    #[serde(default)]
    pub health: HealthConfig,
    #[serde(default)]
    pub batch: BatchConfig,
    /// Spending caps per tenant, user, team or feature (see [`crate::budgets`]).
    #[serde(default)]
    pub budgets: Vec<crate::budgets::BudgetConfig>,
    /// What expanding `${VAR}` in the secrets found (unset variables, a broken reference),
    /// reported by [`Config::validate`] with the other problems.
    #[serde(skip)]
    secret_problems: Vec<Problem>,
}

/// How the batch tier is run (see [`crate::batch`]); each deployment's own batch tier is
/// [`DeploymentConfig::batch`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// A job goes to a provider batch only when its deadline is at least the deployment's
    /// `turnaround` plus this far away.
    #[serde(with = "humantime_serde_compat")]
    pub safety_margin: Duration,
    /// How long before the earliest deadline among a submitted batch's jobs the batch is
    /// given up: cancelled upstream and its unanswered jobs run real-time, with this long
    /// left to do it.
    #[serde(with = "humantime_serde_compat")]
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
    #[serde(default = "default_turnaround", with = "humantime_serde_compat")]
    pub turnaround: Duration,
    /// Requests per provider batch (at most the provider's limit, which is the default).
    #[serde(default)]
    pub max_requests: Option<usize>,
    /// A batch that has not filled up is submitted this long after its first job joined.
    #[serde(default = "default_max_wait", with = "humantime_serde_compat")]
    pub max_wait: Duration,
}

fn default_turnaround() -> Duration {
    Duration::from_secs(24 * 3600)
}

fn default_max_wait() -> Duration {
    Duration::from_secs(300)
}

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
    #[serde(with = "humantime_serde_compat")]
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

/// Recurring jobs (see [`crate::schedule`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerConfig {
    /// Whether `sluice serve` fires recurring jobs. Run it in one process per deployment; a
    /// second one is harmless (each due time still makes one job) but useless.
    pub enabled: bool,
    /// The folder of `*.toml` definitions.
    pub dir: PathBuf,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            enabled: true,
            dir: "jobs".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address of the HTTP API.
    pub listen: String,
    /// The SQLite file holding jobs, results and costs (and the embedded queue).
    pub database: PathBuf,
}

impl ServerConfig {
    /// The base URL a client on this machine reaches the API at: `listen`, with an address
    /// that listens on every interface (`0.0.0.0`, `[::]`) replaced by the loopback one.
    pub fn client_url(&self) -> String {
        let (host, port) = self
            .listen
            .rsplit_once(':')
            .unwrap_or((self.listen.as_str(), "8080"));
        let host = match host {
            "0.0.0.0" | "" => "127.0.0.1",
            "[::]" => "[::1]",
            host => host,
        };
        format!("http://{host}:{port}")
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8080".into(),
            database: "sluice.db".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
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
    #[serde(with = "humantime_serde_compat")]
    pub visibility_timeout: Duration,
    /// RabbitMQ: how long publishing waits for a connection, an alarm to clear or a confirm
    /// before the producer is told the queue is unavailable.
    #[serde(with = "humantime_serde_compat")]
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
    #[serde(with = "humantime_serde_compat")]
    pub base_delay: Duration,
    #[serde(with = "humantime_serde_compat")]
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    pub name: String,
    /// The bearer token the tenant's clients present.
    pub token: Secret,
    /// Jobs the API accepts from this tenant per minute (`POST /v1/jobs`,
    /// `/v1/chat/completions`); over it, a 429 with `retry-after`.
    #[serde(default)]
    pub requests_per_minute: Option<u32>,
    /// Estimated tokens (prompt + `max_tokens`) the API accepts per minute.
    #[serde(default)]
    pub tokens_per_minute: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    Openai,
    Anthropic,
    Gemini,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Openai => "openai",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Gemini => "gemini",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    pub kind: ProviderKind,
    /// Base URL: `https://api.openai.com/v1` (OpenAI: the root including the version),
    /// `https://api.anthropic.com` (Anthropic: without it, the adapter adds `/v1/messages`),
    /// `https://generativelanguage.googleapis.com/v1beta` (Gemini). `sim` means the
    /// simulator Sluice starts.
    pub base_url: String,
    /// Whole-call timeout of one attempt.
    #[serde(default = "default_attempt_timeout", with = "humantime_serde_compat")]
    pub timeout: Duration,
    pub keys: Vec<KeyConfig>,
}

fn default_attempt_timeout() -> Duration {
    Duration::from_secs(120)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// A name for the key, safe to log and store (the secret never is).
    pub id: String,
    pub secret: Secret,
    #[serde(default)]
    pub requests_per_minute: Option<u32>,
    #[serde(default)]
    pub tokens_per_minute: Option<u32>,
    /// Some providers (Gemini's free tier) also cap requests per day.
    #[serde(default)]
    pub requests_per_day: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentConfig {
    pub provider: String,
    /// The provider's model name.
    pub model: String,
    /// Real-time prices, USD per million tokens; the price catalogue's for the provider's
    /// family and `model` when absent; `"unknown"` records costs as unpriced.
    #[serde(default)]
    pub price: Option<PriceSetting>,
    /// Leave out request parameters the provider cannot honour (Anthropic has no `seed`,
    /// Gemini no `parallel_tool_calls: false`, …) instead of failing the job with an error
    /// naming them.
    #[serde(default)]
    pub drop_unsupported_params: bool,
    /// `max_tokens` sent to providers that require one (Anthropic) when the request sets
    /// none; the adapter's documented default when absent.
    #[serde(default)]
    pub default_max_tokens: Option<u32>,
    /// A system-prompt template and parameter overrides for the requests this deployment is
    /// sent (see [`crate::overrides`]).
    #[serde(default)]
    pub overrides: crate::overrides::Overrides,
    /// The provider's batch tier for this model, when jobs may use it.
    #[serde(default)]
    pub batch: Option<BatchTierConfig>,
    /// OpenAI's flex service tier for this model (`service_tier: "flex"`), when `standard`
    /// and `batch` jobs may use it.
    #[serde(default)]
    pub flex: Option<FlexTierConfig>,
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
    #[serde(default = "default_flex_timeout", with = "humantime_serde_compat")]
    pub timeout: Duration,
}

fn default_flex_timeout() -> Duration {
    Duration::from_secs(15 * 60)
}

/// A deployment's `price`: a table of prices, or `"unknown"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PriceSetting {
    Given(Price),
    /// The operator knows no price: costs are recorded flagged as unpriced, amount 0.
    Unknown,
}

impl<'de> Deserialize<'de> for PriceSetting {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // A visitor rather than an untagged enum, so a mistake inside the table keeps
        // serde's precise message (unknown field, bad decimal) instead of "no variant matched".
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = PriceSetting;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a price table like { input = 2.50, output = 10.00 } or \"unknown\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<PriceSetting, E> {
                if v == "unknown" {
                    Ok(PriceSetting::Unknown)
                } else {
                    Err(E::custom(format!(
                        "\"{v}\" is not a price; write a table like {{ input = 2.50, output = 10.00 }} or \"unknown\""
                    )))
                }
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<PriceSetting, A::Error> {
                Price::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(PriceSetting::Given)
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// Where a deployment's price comes from (see [`Config::deployment_price`]).
#[derive(Debug, Clone, Copy)]
pub enum PriceSource {
    /// `price = { … }` in the configuration.
    Configured(Price),
    /// The shipped catalogue's entry for the provider family and model.
    Catalogue(&'static CatalogueEntry),
    /// `price = "unknown"`.
    DeclaredUnknown,
    /// No price anywhere: a configuration error.
    Missing,
}

impl PriceSource {
    /// The real-time price, `None` when unknown.
    pub fn price(&self) -> Option<Price> {
        match self {
            PriceSource::Configured(p) => Some(*p),
            PriceSource::Catalogue(entry) => Some(entry.price()),
            PriceSource::DeclaredUnknown | PriceSource::Missing => None,
        }
    }
}

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
    #[serde(default, with = "humantime_serde_compat::option")]
    pub attempt_timeout: Option<Duration>,
    /// An attempt that has not produced its first token within this long is abandoned as a
    /// `timeout` and the job moves to the next deployment (the call is streamed to know).
    #[serde(default, with = "humantime_serde_compat::option")]
    pub first_token_timeout: Option<Duration>,
    /// An attempt whose answer has begun and then sends nothing for this long is abandoned as
    /// a `timeout` (retried like one) rather than held until `attempt_timeout`: a stalled
    /// stream is a dead connection or a stuck generation, and waiting out the whole call for
    /// it wastes the attempt's time budget. The call is streamed to know. Unset by default:
    /// how long a healthy model may pause mid-answer (reasoning, a long tool argument) varies
    /// by model, so only the route knows a safe bound.
    #[serde(default, with = "humantime_serde_compat::option")]
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
    #[serde(default = "default_realtime_max_wait", with = "humantime_serde_compat")]
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
    #[serde(with = "humantime_serde_compat::option")]
    pub realtime: Option<Duration>,
    #[serde(with = "humantime_serde_compat::option")]
    pub standard: Option<Duration>,
    #[serde(with = "humantime_serde_compat::option")]
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

/// A secret value (API key, token, URL with a password). `Debug` and `Display` hide it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Secret(String::deserialize(d)?))
    }
}

/// One thing wrong with a configuration, at a path such as `routes.smart[1]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{origin}: {message}")]
    Syntax { origin: String, message: String },
    #[error("{origin} has {} problem(s):\n{}", problems.len(), problems.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        origin: String,
        problems: Vec<Problem>,
    },
}

/// The configuration used when no file is given: everything runs against the simulator.
pub const BUILTIN: &str = include_str!("../sluice.example.toml");

impl Config {
    /// The built-in default (see `sluice.example.toml`), validated.
    pub fn builtin() -> Config {
        Config::parse(BUILTIN, "built-in config", &|_| None)
            .and_then(|c| c.validated("built-in config"))
            .expect("the built-in config is valid")
    }

    /// Reads, expands and validates a config file, with the process environment for `${VAR}`.
    /// Relative paths in it are taken from the file's folder.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let origin = path.display().to_string();
        let mut config = Config::from_toml(&text, &origin, &|name| std::env::var(name).ok())?;
        if let Some(folder) = path.parent() {
            config.resolve_paths(folder);
        }
        Ok(config)
    }

    /// Reads a config file for the client commands (`submit`, `bulk`, …), which need only
    /// the server's address and a tenant's token: its types and keys are checked, not the
    /// cross references or the providers' secrets, which a client's machine need not have.
    pub fn load_for_client(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text, &path.display().to_string(), &|name| {
            std::env::var(name).ok()
        })
    }

    /// The problem expanding the secret at `path` (`tenants[0].token`) found, if any.
    pub fn secret_problem(&self, path: &str) -> Option<&Problem> {
        self.secret_problems.iter().find(|p| p.path == path)
    }

    /// Parses and validates TOML text (see [`Config::load`]), listing every problem.
    pub fn from_toml(
        text: &str,
        origin: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let (config, mut problems, complete) = Config::read(text, origin, env)?;
        // A section dropped for a missing or unreadable value would make its references look
        // unknown: the cross references are checked once every section could be read.
        if complete {
            problems.extend(config.validate());
        }
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid {
                origin: origin.to_string(),
                problems,
            })
        }
    }

    /// Parses TOML text, expanding `${VAR}` through `env` (unset variables are reported by
    /// [`Config::validate`], not here, so every problem is listed together). Every type
    /// error and unknown key is reported, not only the first.
    pub fn parse(
        text: &str,
        origin: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let (config, problems, _) = Config::read(text, origin, env)?;
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid {
                origin: origin.to_string(),
                problems,
            })
        }
    }

    /// The configuration in `text`, with every problem of types and keys, and whether every
    /// section could be read (when not, a section left out would make cross references
    /// look wrong). Fails only on text that is not TOML, or that cannot be read at all.
    fn read(
        text: &str,
        origin: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(Config, Vec<Problem>, bool), ConfigError> {
        let table: toml::Table =
            toml::from_str(text).map_err(|e| syntax_error(origin, text, &e))?;
        let (mut config, problems, complete) =
            lenient::deserialize(table).map_err(|problems| ConfigError::Invalid {
                origin: origin.to_string(),
                problems,
            })?;
        config.expand_secrets(env);
        Ok((config, problems, complete))
    }

    /// Makes the relative paths of the configuration relative to `folder` (the config
    /// file's), as most tools read their config files.
    pub fn resolve_paths(&mut self, folder: &Path) {
        for path in [&mut self.server.database, &mut self.scheduler.dir] {
            if path.is_relative() && !folder.as_os_str().is_empty() {
                *path = folder.join(&*path);
            }
        }
    }

    fn validated(self, origin: &str) -> Result<Config, ConfigError> {
        let problems = self.validate();
        if problems.is_empty() {
            Ok(self)
        } else {
            Err(ConfigError::Invalid {
                origin: origin.to_string(),
                problems,
            })
        }
    }

    fn expand_secrets(&mut self, env: &dyn Fn(&str) -> Option<String>) {
        let mut found = Vec::new();
        let mut expand = |s: &mut Secret, path: String| match expand_env(&s.0, env) {
            Ok(value) => s.0 = value,
            Err(message) => found.push(Problem { path, message }),
        };
        for (i, tenant) in self.tenants.iter_mut().enumerate() {
            expand(&mut tenant.token, format!("tenants[{i}].token"));
        }
        for (name, provider) in &mut self.providers {
            for (k, key) in provider.keys.iter_mut().enumerate() {
                expand(
                    &mut key.secret,
                    format!("providers.{name}.keys[{k}].secret"),
                );
            }
        }
        if let Some(url) = &mut self.queue.url {
            expand(url, "queue.url".into());
        }
        self.secret_problems = found;
    }

    /// Every problem in the configuration, each with its path. Empty means valid.
    pub fn validate(&self) -> Vec<Problem> {
        let mut problems = self.secret_problems.clone();
        let mut problem = |path: String, message: String| problems.push(Problem { path, message });

        for (i, tenant) in self.tenants.iter().enumerate() {
            if tenant.name.is_empty() {
                problem(format!("tenants[{i}].name"), "must not be empty".into());
            }
            check_secret(&tenant.token, &format!("tenants[{i}].token"), &mut problem);
            if let Some(j) = self.tenants[..i]
                .iter()
                .position(|t| t.token == tenant.token)
            {
                problem(
                    format!("tenants[{i}].token"),
                    format!("same token as tenants[{j}]; every tenant needs its own"),
                );
            }
            if self.tenants[..i].iter().any(|t| t.name == tenant.name) {
                problem(
                    format!("tenants[{i}].name"),
                    format!("tenant \"{}\" is defined twice", tenant.name),
                );
            }
        }

        for (name, provider) in &self.providers {
            if provider.base_url != "sim"
                && !(provider.base_url.starts_with("http://")
                    || provider.base_url.starts_with("https://"))
            {
                problem(
                    format!("providers.{name}.base_url"),
                    format!(
                        "\"{}\" is not an http(s) URL (or \"sim\" for the simulator)",
                        provider.base_url
                    ),
                );
            } else if let Some(part) = credential_bearing_part(&provider.base_url) {
                // Not echoed: what it carries may be a credential.
                problem(
                    format!("providers.{name}.base_url"),
                    format!(
                        "carries {part}, which Sluice would send, log and store with every \
                         call's address; give the provider's plain address and put keys in \
                         providers.{name}.keys"
                    ),
                );
            }
            if provider.keys.is_empty() {
                problem(
                    format!("providers.{name}.keys"),
                    "needs at least one key".into(),
                );
            }
            for (k, key) in provider.keys.iter().enumerate() {
                check_secret(
                    &key.secret,
                    &format!("providers.{name}.keys[{k}].secret"),
                    &mut problem,
                );
                for (field, value) in [
                    ("requests_per_minute", key.requests_per_minute),
                    ("tokens_per_minute", key.tokens_per_minute),
                    ("requests_per_day", key.requests_per_day),
                ] {
                    if value == Some(0) {
                        problem(
                            format!("providers.{name}.keys[{k}].{field}"),
                            "must be at least 1 (leave it out for no limit)".into(),
                        );
                    }
                }
                if provider.keys[..k].iter().any(|o| o.id == key.id) {
                    problem(
                        format!("providers.{name}.keys[{k}].id"),
                        format!("key id \"{}\" is used twice", key.id),
                    );
                }
            }
        }

        for (name, deployment) in &self.deployments {
            match self.providers.get(&deployment.provider) {
                None => problem(
                    format!("deployments.{name}.provider"),
                    format!(
                        "unknown provider \"{}\"{}",
                        deployment.provider,
                        suggestion(
                            &deployment.provider,
                            self.providers.keys().map(String::as_str)
                        )
                    ),
                ),
                Some(provider) => {
                    let price = self.deployment_price(name);
                    // A discounted tier needs a price only when the real-time one is known.
                    let realtime_known = price.price().is_some();
                    if let PriceSource::Missing = price {
                        problem(
                            format!("deployments.{name}.price"),
                            format!(
                                "no price: the catalogue has none for {} model \"{}\" (see `sluice prices`); add price = {{ input = …, output = … }} in USD per million tokens, or price = \"unknown\" to record its costs as unpriced",
                                provider.kind.as_str(),
                                deployment.model
                            ),
                        );
                    }
                    if let Some(tier) = &deployment.batch {
                        let limits = crate::providers::batch::BatchLimits::of(provider.kind);
                        match tier.max_requests {
                            Some(0) => problem(
                                format!("deployments.{name}.batch.max_requests"),
                                "must be at least 1".into(),
                            ),
                            Some(n) if n > limits.max_requests => problem(
                                format!("deployments.{name}.batch.max_requests"),
                                format!(
                                    "{n} is over {}'s limit of {} requests per batch",
                                    provider.kind.as_str(),
                                    limits.max_requests
                                ),
                            ),
                            _ => {}
                        }
                        if realtime_known && self.deployment_batch_price(name).is_none() {
                            problem(
                                format!("deployments.{name}.batch.price"),
                                format!(
                                    "no batch price: the catalogue has none for {} model \"{}\"; add price = {{ input = …, output = … }} to the batch table",
                                    provider.kind.as_str(),
                                    deployment.model
                                ),
                            );
                        }
                    }
                    if deployment.flex.is_some() {
                        if provider.kind != ProviderKind::Openai {
                            problem(
                                format!("deployments.{name}.flex"),
                                format!(
                                    "the flex service tier is OpenAI's; provider \"{}\" is {}",
                                    deployment.provider,
                                    provider.kind.as_str()
                                ),
                            );
                        } else if realtime_known && self.deployment_flex_price(name).is_none() {
                            problem(
                                format!("deployments.{name}.flex.price"),
                                format!(
                                    "no flex price: the catalogue has no batch price for model \"{}\"; add price = {{ input = …, output = … }} to the flex table",
                                    deployment.model
                                ),
                            );
                        }
                    }
                }
            }
            for found in deployment
                .overrides
                .problems(&format!("deployments.{name}.overrides"))
            {
                problem(found.path, found.message);
            }
        }
        if self.batch.realtime_reserve >= self.batch.safety_margin {
            // A batch is given up `realtime_reserve` before a deadline; a job is sent to one
            // only with turnaround + safety_margin to spare. With the reserve the larger, a
            // batch that keeps its typical turnaround would still be given up.
            problem(
                "batch.realtime_reserve".into(),
                format!(
                    "{} must be shorter than batch.safety_margin ({}), or a batch on time is still given up before it ends",
                    humantime::format_duration(self.batch.realtime_reserve),
                    humantime::format_duration(self.batch.safety_margin)
                ),
            );
        }
        if let Err(e) = crate::schedule::definition::parse_schedule(&self.batch.poll) {
            problem(
                "batch.poll".into(),
                format!("\"{}\" is not a cron expression: {e}", self.batch.poll),
            );
        }

        for (name, route) in &self.routes {
            if route.deployments.is_empty() {
                problem(
                    format!("routes.{name}.deployments"),
                    "needs at least one deployment".into(),
                );
            }
            for (i, deployment) in route.deployments.iter().enumerate() {
                if !self.deployments.contains_key(deployment) {
                    problem(
                        format!("routes.{name}[{i}]"),
                        format!(
                            "unknown deployment \"{deployment}\"{}",
                            suggestion(deployment, self.deployments.keys().map(String::as_str))
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
            if self.queue.effective_backend() == QueueBackend::Embedded {
                if let Some(timeout) = route.attempt_timeout {
                    if timeout >= self.queue.visibility_timeout {
                        problem(
                            format!("routes.{name}.attempt_timeout"),
                            format!(
                                "{} must be shorter than queue.visibility_timeout ({}), or a job still running would be handed to a second worker",
                                humantime::format_duration(timeout),
                                humantime::format_duration(self.queue.visibility_timeout)
                            ),
                        );
                    }
                }
            }
        }

        if !(self.health.error_threshold > 0.0 && self.health.error_threshold <= 1.0) {
            problem(
                "health.error_threshold".into(),
                format!(
                    "{} is not a rate above 0 and at most 1 (0.5 opens the circuit at half the calls failing)",
                    self.health.error_threshold
                ),
            );
        }
        if self.health.window == 0 {
            problem("health.window".into(), "must be at least 1".into());
        }
        if self.health.min_calls > self.health.window {
            problem(
                "health.min_calls".into(),
                format!(
                    "{} is more than health.window ({}), so the circuit could never open",
                    self.health.min_calls, self.health.window
                ),
            );
        }

        for urgency in Urgency::ALL {
            if self.pools.get(urgency).concurrency == 0 {
                problem(
                    format!("pools.{urgency}.concurrency"),
                    "must be at least 1".into(),
                );
            }
        }
        if self.queue.effective_backend() == QueueBackend::Embedded {
            for (name, provider) in &self.providers {
                if provider.timeout >= self.queue.visibility_timeout {
                    problem(
                        "queue.visibility_timeout".into(),
                        format!(
                            "{} must be longer than providers.{name}.timeout ({}), or a job still running would be handed to a second worker",
                            humantime::format_duration(self.queue.visibility_timeout),
                            humantime::format_duration(provider.timeout)
                        ),
                    );
                }
            }
        }
        if self.queue.delivery_limit == 0 {
            problem("queue.delivery_limit".into(), "must be at least 1".into());
        }
        if self.retry.max_attempts == 0 {
            problem("retry.max_attempts".into(), "must be at least 1".into());
        }
        if self.queue.effective_backend() == QueueBackend::Rabbitmq {
            match &self.queue.url {
                None => problem(
                    "queue.url".into(),
                    "the rabbitmq backend needs a url (amqp://user:pass@host:5672/%2f)".into(),
                ),
                Some(url) => {
                    check_secret(url, "queue.url", &mut problem);
                    let url = url.expose();
                    let is_amqp = url.starts_with("amqp://") || url.starts_with("amqps://");
                    if !is_amqp && !url.contains("${") {
                        problem(
                            "queue.url".into(),
                            "must start with amqp:// or amqps://".into(),
                        );
                    }
                }
            }
        }
        for (i, budget) in self.budgets.iter().enumerate() {
            for found in budget.problems(i, self) {
                problem(found.path, found.message);
            }
        }
        // A host name is resolved as `serve` will resolve it when it binds.
        let resolved = std::net::ToSocketAddrs::to_socket_addrs(self.server.listen.as_str())
            .map(|mut addresses| addresses.next());
        if !matches!(resolved, Ok(Some(_))) {
            problem(
                "server.listen".into(),
                format!(
                    "\"{}\" is not an address like 127.0.0.1:8080 or localhost:8080{}",
                    self.server.listen,
                    match resolved {
                        Err(e) => format!(" ({e})"),
                        Ok(_) => " (the name resolves to no address)".into(),
                    }
                ),
            );
        }
        problems
    }

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

    /// Where deployment `name`'s real-time price comes from: its own `price`, else the
    /// shipped catalogue's for its provider family and model. `Missing` for an unknown
    /// deployment or provider too (validation names those separately).
    pub fn deployment_price(&self, name: &str) -> PriceSource {
        let Some(deployment) = self.deployments.get(name) else {
            return PriceSource::Missing;
        };
        match deployment.price {
            Some(PriceSetting::Given(price)) => PriceSource::Configured(price),
            Some(PriceSetting::Unknown) => PriceSource::DeclaredUnknown,
            None => self
                .providers
                .get(&deployment.provider)
                .and_then(|p| Catalogue::shipped().lookup(p.kind, &deployment.model))
                .map_or(PriceSource::Missing, PriceSource::Catalogue),
        }
    }

    /// Deployment `name`'s batch-tier price: its batch table's own `price`, else the
    /// catalogue's batch price for its model. `None` without a batch tier, for a deployment
    /// whose price is `"unknown"`, or when no batch price is known (a config error).
    pub fn deployment_batch_price(&self, name: &str) -> Option<Price> {
        let tier = self.deployments.get(name)?.batch.as_ref()?;
        self.discounted_price(name, tier.price)
    }

    /// Deployment `name`'s flex-tier price: its flex table's own `price`, else the
    /// catalogue's batch price for its model (OpenAI prices flex at Batch API rates). `None`
    /// without a flex tier, for an unknown price, or when no price is known (a config error).
    pub fn deployment_flex_price(&self, name: &str) -> Option<Price> {
        let flex = self.deployments.get(name)?.flex.as_ref()?;
        self.discounted_price(name, flex.price)
    }

    /// A discounted tier's price for deployment `name`: `own` (the tier's table), else the
    /// catalogue's batch price; `None` when the deployment's own price is unknown.
    fn discounted_price(&self, name: &str, own: Option<Price>) -> Option<Price> {
        let deployment = self.deployments.get(name)?;
        match self.deployment_price(name) {
            PriceSource::DeclaredUnknown | PriceSource::Missing => None,
            PriceSource::Configured(_) | PriceSource::Catalogue(_) => own.or_else(|| {
                let provider = self.providers.get(&deployment.provider)?;
                Catalogue::shipped()
                    .lookup(provider.kind, &deployment.model)?
                    .batch_price()
            }),
        }
    }

    /// The tenant a bearer token belongs to. Every tenant's token is compared, each by its
    /// SHA-256 digest in constant time, so the time taken says neither how long the tokens
    /// are, nor how much of one matched, nor which tenant's it was.
    pub fn tenant_for_token(&self, token: &str) -> Option<&TenantConfig> {
        use sha2::{Digest, Sha256};
        use subtle::ConstantTimeEq;
        let presented = Sha256::digest(token.as_bytes());
        self.tenants.iter().fold(None, |found, tenant| {
            let digest = Sha256::digest(tenant.token.expose().as_bytes());
            let equal: bool = digest.as_slice().ct_eq(presented.as_slice()).into();
            found.or(equal.then_some(tenant))
        })
    }

    /// Removes every key's requests and tokens limits, for runs against the simulator (which
    /// has no quota) that measure or test something other than pacing.
    pub fn lift_key_limits(&mut self) {
        for key in self.providers.values_mut().flat_map(|p| p.keys.iter_mut()) {
            key.requests_per_minute = None;
            key.tokens_per_minute = None;
            key.requests_per_day = None;
        }
    }

    pub fn tenant(&self, name: &str) -> Option<&TenantConfig> {
        self.tenants.iter().find(|t| t.name == name)
    }

    /// True when some provider uses the built-in simulator.
    pub fn uses_simulator(&self) -> bool {
        self.providers.values().any(|p| p.base_url == "sim")
    }
}

fn check_secret(secret: &Secret, path: &str, problem: &mut impl FnMut(String, String)) {
    // References were checked when they were expanded (never the value: a secret).
    if secret.0.is_empty() {
        problem(path.to_string(), "must not be empty".into());
    }
}

/// Replaces each `${NAME}` written in `text` by the variable's value. The values are never
/// read again, so a secret holding `${` is taken as it is. An unset variable or a `${` that
/// is not a reference is an error naming the variable at most, never the text around it.
fn expand_env(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut unset = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(name) = after
            .find('}')
            .map(|end| &after[..end])
            .filter(|name| is_var_name(name))
        else {
            return Err(
                "has \"${\" that does not start a reference (write ${NAME} to read the environment variable NAME)"
                    .into(),
            );
        };
        match env(name) {
            Some(value) => out.push_str(&value),
            None => unset.push(name),
        }
        rest = &after[name.len() + 1..];
    }
    out.push_str(rest);
    match unset.as_slice() {
        [] => Ok(out),
        [name] => Err(format!("environment variable {name} is not set")),
        names => Err(format!(
            "environment variables {} are not set",
            names.join(", ")
        )),
    }
}

/// Whether `name` can be an environment variable's name: letters, digits and `_`, not
/// starting with a digit.
fn is_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A file that is not TOML: its line, column and the parser's message, never the line's
/// text (the line may hold a secret).
fn syntax_error(origin: &str, text: &str, error: &toml::de::Error) -> ConfigError {
    let at = error.span().map(|span| {
        let before = &text[..span.start.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        format!(":{line}:{column}")
    });
    ConfigError::Syntax {
        origin: format!("{origin}{}", at.unwrap_or_default()),
        message: error.message().trim_end().to_string(),
    }
}

/// The name nearest to `name` among `known`, if one is near enough to be a likely typo.
pub fn did_you_mean<'a>(name: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    known
        .into_iter()
        .map(|candidate| (strsim::jaro_winkler(name, candidate), candidate))
        .filter(|(similarity, _)| *similarity >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, candidate)| candidate)
}

/// `"; did you mean `x`?"` for `name` among `known`, or nothing.
fn suggestion<'a>(name: &str, known: impl IntoIterator<Item = &'a str>) -> String {
    did_you_mean(name, known)
        .map(|near| format!("; did you mean `{near}`?"))
        .unwrap_or_default()
}

/// The part of an http(s) URL that could carry a credential (`user:password@`, a query
/// string, a fragment), if it has one. The API path is appended to a `base_url`, so none of
/// these can be meant, and a key in one would travel into every address logged or stored.
fn credential_bearing_part(url: &str) -> Option<&'static str> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        Some("a user name or password (user:password@)")
    } else if rest.contains('?') {
        Some("a query string")
    } else if rest.contains('#') {
        Some("a fragment")
    } else {
        None
    }
}

/// Durations written the human way in TOML (`"30s"`, `"5m"`, `"250ms"`).
pub mod humantime_serde_compat {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!(
                "\"{text}\" is not a duration like \"30s\" or \"250ms\": {e}"
            ))
        })
    }

    /// The same for an optional duration (`#[serde(default)]` supplies `None`).
    pub mod option {
        use serde::Deserializer;
        use std::time::Duration;

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            super::deserialize(d).map(Some)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Config {
        Config::parse(text, "test.toml", &|name| {
            (name == "SET").then(|| "value".to_string())
        })
        .unwrap()
    }

    #[test]
    fn builtin_config_is_valid_and_uses_the_simulator() {
        let config = Config::builtin();
        assert!(config.uses_simulator());
        assert_eq!(config.queue.effective_backend(), QueueBackend::Embedded);
        assert!(config.resolve_model("fast").is_some());
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let config = parse(
            r#"
            [[tenants]]
            name = "acme"
            token = "${UNSET_VAR}"

            [providers.oa]
            kind = "openai"
            base_url = "ftp://nope"
            keys = []

            [deployments.small]
            provider = "missing"
            model = "m"
            price = { input = 1, output = 2 }

            [routes.smart]
            deployments = ["small", "gpt-5"]
            "#,
        );
        let problems: Vec<String> = config.validate().iter().map(|p| p.to_string()).collect();
        assert!(
            problems.contains(&"routes.smart[1]: unknown deployment \"gpt-5\"".to_string()),
            "{problems:?}"
        );
        assert!(
            problems.contains(
                &"tenants[0].token: environment variable UNSET_VAR is not set".to_string()
            ),
            "{problems:?}"
        );
        assert!(
            problems
                .contains(&"deployments.small.provider: unknown provider \"missing\"".to_string()),
            "{problems:?}"
        );
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("providers.oa.base_url")),
            "{problems:?}"
        );
        assert!(
            problems.contains(&"providers.oa.keys: needs at least one key".to_string()),
            "{problems:?}"
        );
    }

    /// A `base_url` that would carry a credential into every logged and stored address, and
    /// a half-written `${`, are refused without echoing what they hold.
    #[test]
    fn credentials_in_a_base_url_or_a_broken_secret_are_refused_without_echo() {
        for (url, part) in [
            (
                "https://api.example.com/v1?token=QSECRET888",
                "a query string",
            ),
            (
                "https://user:QSECRET888@api.example.com/v1",
                "a user name or password",
            ),
            ("https://api.example.com/v1#QSECRET888", "a fragment"),
        ] {
            let config = parse(&format!(
                r#"
                [[tenants]]
                name = "acme"
                token = "${{UNCLOSED"

                [providers.oa]
                kind = "openai"
                base_url = "{url}"
                keys = [{{ id = "k", secret = "sk-1" }}]
                "#
            ));
            let problems: Vec<String> = config.validate().iter().map(|p| p.to_string()).collect();
            assert!(
                problems
                    .iter()
                    .any(|p| p.starts_with("providers.oa.base_url: carries") && p.contains(part)),
                "{problems:?}"
            );
            assert!(
                problems
                    .iter()
                    .any(|p| p.starts_with("tenants[0].token: has \"${\" that does not start")),
                "{problems:?}"
            );
            assert!(
                problems
                    .iter()
                    .all(|p| !p.contains("QSECRET888") && !p.contains("UNCLOSED")),
                "{problems:?}"
            );
        }
        assert_eq!(credential_bearing_part("https://api.openai.com/v1"), None);
        assert_eq!(credential_bearing_part("http://127.0.0.1:8000/v1"), None);
    }

    #[test]
    fn batch_tier_problems_are_named_by_path() {
        let config = parse(
            r#"
            [batch]
            safety_margin = "10m"
            realtime_reserve = "1h"
            poll = "every minute"

            [providers.oa]
            kind = "openai"
            base_url = "sim"
            keys = [{ id = "k", secret = "s" }]

            [deployments.mini]
            provider = "oa"
            model = "gpt-4o-mini"
            batch = { max_requests = 60000 }

            [deployments.custom]
            provider = "oa"
            model = "my-finetune"
            price = { input = 1, output = 2 }
            batch = { turnaround = "2h" }
            "#,
        );
        let problems: Vec<String> = config.validate().iter().map(|p| p.to_string()).collect();
        let has = |prefix: &str| problems.iter().any(|p| p.starts_with(prefix));
        assert!(
            problems.contains(
                &"deployments.mini.batch.max_requests: 60000 is over openai's limit of 50000 requests per batch"
                    .to_string()
            ),
            "{problems:?}"
        );
        assert!(
            has("deployments.custom.batch.price: no batch price"),
            "{problems:?}"
        );
        assert!(
            has("batch.realtime_reserve: 1h must be shorter than batch.safety_margin (10m)"),
            "{problems:?}"
        );
        assert!(
            has("batch.poll: \"every minute\" is not a cron expression"),
            "{problems:?}"
        );
        // The catalogue knows gpt-4o-mini's batch price: no problem there.
        assert!(!has("deployments.mini.batch.price"), "{problems:?}");
        assert_eq!(
            config.deployment_batch_price("mini").map(|p| p.input),
            Some(crate::pricing::MicrosPerMillion(75_000))
        );
    }

    #[test]
    fn route_limit_and_health_problems_are_named_by_path() {
        let mut config = Config::builtin();
        let text = r#"
            deployments = ["gpt-4o", "gpt-4o-mini"]
            strategy = "priority"
            weights = [1]
            max_attempts = 0
            first_token_timeout = "10s"
            stream_idle_timeout = "6s"
            attempt_timeout = "5s"
        "#;
        config
            .routes
            .insert("bad".into(), toml::from_str(text).unwrap());
        config.providers.get_mut("openai").unwrap().keys[0].tokens_per_minute = Some(0);
        config.health.error_threshold = 1.5;
        config.health.min_calls = 50;
        let problems: Vec<String> = config.validate().iter().map(|p| p.to_string()).collect();
        for expected in [
            "routes.bad.weights: has 1 weights for 2 deployments",
            "routes.bad.weights: only a route with strategy = \"weighted\" uses weights",
            "routes.bad.max_attempts: must be at least 1",
            "routes.bad.first_token_timeout: 10s is longer than attempt_timeout (5s)",
            "routes.bad.stream_idle_timeout: 6s is longer than attempt_timeout (5s)",
            "providers.openai.keys[0].tokens_per_minute: must be at least 1",
            "health.error_threshold: 1.5 is not a rate",
            "health.min_calls: 50 is more than health.window (20)",
        ] {
            assert!(
                problems.iter().any(|p| p.starts_with(expected)),
                "{expected} not in {problems:?}"
            );
        }
    }

    #[test]
    fn the_builtin_writer_route_falls_back_on_429_or_a_slow_first_token() {
        let config = Config::builtin();
        let writer = &config.routes["writer"];
        assert_eq!(
            writer.deployments,
            ["claude-sonnet", "gpt-4o", "gemini-flash"]
        );
        assert_eq!(writer.strategy, Strategy::Priority);
        assert_eq!(writer.first_token_timeout, Some(Duration::from_secs(5)));
        assert_eq!(
            writer.deadline.get(Urgency::Realtime),
            Some(Duration::from_secs(30))
        );
        assert_eq!(config.routes["balanced"].weights, Some(vec![3, 1]));
    }

    #[test]
    fn env_vars_expand_and_secrets_do_not_print() {
        let config = parse(
            r#"
            [[tenants]]
            name = "acme"
            token = "tok-${SET}"
            "#,
        );
        assert_eq!(config.tenants[0].token.expose(), "tok-value");
        assert!(!format!("{:?}", config).contains("tok-value"));
    }

    #[test]
    fn a_lease_shorter_than_a_call_is_refused() {
        let mut config = Config::builtin();
        config.queue.visibility_timeout = Duration::from_secs(30);
        let problems: Vec<String> = config.validate().iter().map(|p| p.to_string()).collect();
        assert!(
            problems.iter().any(|p| p.starts_with(
                "queue.visibility_timeout: 30s must be longer than providers.openai.timeout"
            )),
            "{problems:?}"
        );
    }

    /// A misspelt key, a wrong type, an unset variable and unknown names are all listed in
    /// one run, each with its path and the nearest known name.
    #[test]
    fn every_problem_of_a_file_is_listed_in_one_run() {
        let text = r#"
            [server]
            listn = "127.0.0.1:9000"

            [pools.realtime]
            concurency = 8

            [retry]
            max_attempts = "five"

            [queue]
            backend = "rabitmq"
            url = "amqp://guest:guest@localhost:5672/%2f"

            [[tenants]]
            name = "acme"
            token = "${SLUICE_TEST_UNSET_TOKEN}"

            [providers.openai]
            kind = "openai"
            base_url = "sim"
            keys = [{ id = "k", secret = "s" }]

            [deployments.gpt-4o-mini]
            provider = "opanai"
            model = "gpt-4o-mini"

            [routes.fast]
            deployments = ["gpt-4o-mni"]
        "#;
        let err = Config::from_toml(text, "t.toml", &|_| None).unwrap_err();
        let ConfigError::Invalid { problems, .. } = &err else {
            panic!("{err}");
        };
        let problems: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        for expected in [
            "server.listn: unknown key `listn`; did you mean `listen`?",
            "pools.realtime.concurency: unknown key `concurency`; did you mean `concurrency`?",
            "retry.max_attempts: invalid type: string \"five\", expected u32",
            "queue.backend: unknown value `rabitmq`; did you mean `rabbitmq`?",
            "tenants[0].token: environment variable SLUICE_TEST_UNSET_TOKEN is not set",
            "deployments.gpt-4o-mini.provider: unknown provider \"opanai\"; did you mean `openai`?",
            "routes.fast[0]: unknown deployment \"gpt-4o-mni\"; did you mean `gpt-4o-mini`?",
        ] {
            assert!(
                problems.contains(&expected.to_string()),
                "{expected} not in {problems:#?}"
            );
        }
        assert_eq!(problems.len(), 7, "{problems:#?}");
    }

    /// A value that is missing leaves its section out: its problem is listed, and the cross
    /// references are not checked (they would name the section's absence).
    #[test]
    fn a_missing_value_is_listed_without_follow_on_problems() {
        let text = r#"
            [pools.batch]
            concurency = 8

            [providers.openai]
            kind = "openai"
            base_url = "sim"
            keys = [{ id = "k", secret = "s" }]

            [deployments.mini]
            provider = "openai"

            [routes.fast]
            deployments = ["mini"]
        "#;
        let err = Config::from_toml(text, "t.toml", &|_| None).unwrap_err();
        let ConfigError::Invalid { problems, .. } = &err else {
            panic!("{err}");
        };
        let mut problems: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        problems.sort();
        assert_eq!(
            problems,
            [
                "deployments.mini: missing field `model`",
                "pools.batch.concurency: unknown key `concurency`; did you mean `concurrency`?",
            ],
        );
    }

    /// No part of a secret is named in a problem: a variable's value holding `${x}` is taken
    /// as it is, and a line that is not TOML is located, not quoted.
    #[test]
    fn secrets_never_appear_in_problems() {
        let env = |name: &str| (name == "TOKEN").then(|| "sk-SECRET${frag}".to_string());
        let text = "[[tenants]]\nname = \"acme\"\ntoken = \"${TOKEN}\"\n";
        let config = Config::from_toml(text, "t.toml", &env).unwrap();
        assert_eq!(config.tenants[0].token.expose(), "sk-SECRET${frag}");

        let text = "[[tenants]]\nname = \"acme\"\ntoken = \"sk-SECRET-123\n";
        let err = Config::from_toml(text, "t.toml", &|_| None)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("t.toml:3:"), "{err}");
        assert!(!err.contains("SECRET"), "{err}");

        let text = "[[tenants]]\nname = \"acme\"\ntoken = \"sk-SECRET${frag\"\n";
        let err = Config::from_toml(text, "t.toml", &|_| None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("tenants[0].token: has \"${\""), "{err}");
        assert!(!err.contains("SECRET") && !err.contains("frag"), "{err}");
    }

    #[test]
    fn listen_takes_a_host_name() {
        let mut config = Config::builtin();
        config.server.listen = "localhost:8080".into();
        assert_eq!(config.validate(), vec![]);
        config.server.listen = "localhost".into();
        let problems = config.validate();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0]
            .to_string()
            .starts_with("server.listen: \"localhost\" is not an address"));
    }

    #[test]
    fn relative_paths_are_taken_from_the_config_folder() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sluice.toml");
        std::fs::write(
            &path,
            "[server]\ndatabase = \"data/s.db\"\n[scheduler]\ndir = \"/abs/jobs\"\n",
        )
        .unwrap();
        let config = Config::load(&path).unwrap();
        assert_eq!(config.server.database, dir.path().join("data/s.db"));
        assert_eq!(config.scheduler.dir, PathBuf::from("/abs/jobs"));
    }

    #[test]
    fn syntax_errors_name_the_file() {
        let err = Config::parse("[server\n", "my.toml", &|_| None).unwrap_err();
        assert!(err.to_string().starts_with("my.toml:"), "{err}");
    }

    #[test]
    fn models_resolve_through_routes_then_deployments() {
        let config = Config::builtin();
        let route: Vec<&str> = config.resolve_model("fast").unwrap();
        assert!(!route.is_empty());
        let direct = config.resolve_model(route[0]).unwrap();
        assert_eq!(direct, vec![route[0]]);
        assert!(config.resolve_model("no-such-model").is_none());
    }

    #[test]
    fn every_provider_kind_is_accepted() {
        let config = parse(
            r#"
            [providers.claude]
            kind = "anthropic"
            base_url = "https://api.anthropic.com"
            keys = [{ id = "a-1", secret = "sk-ant" }]

            [providers.google]
            kind = "gemini"
            base_url = "https://generativelanguage.googleapis.com/v1beta"
            keys = [{ id = "g-1", secret = "AIza" }]

            [deployments.sonnet]
            provider = "claude"
            model = "claude-sonnet-4-5"
            price = { input = 3, output = 15, cached_input = 0.30, cache_write = 3.75 }
            default_max_tokens = 8192

            [deployments.flash]
            provider = "google"
            model = "gemini-2.5-flash"
            price = { input = 0.30, output = 2.50 }
            drop_unsupported_params = true
            "#,
        );
        assert_eq!(config.validate(), vec![]);
        assert_eq!(config.deployments["sonnet"].default_max_tokens, Some(8192));
        assert!(config.deployments["flash"].drop_unsupported_params);
        assert_eq!(
            config
                .deployment_price("sonnet")
                .price()
                .unwrap()
                .cache_write,
            Some(crate::pricing::MicrosPerMillion(3_750_000))
        );
    }

    #[test]
    fn prices_come_from_the_deployment_then_the_catalogue_else_are_a_named_problem() {
        let config = parse(
            r#"
            [providers.oa]
            kind = "openai"
            base_url = "https://api.openai.com/v1"
            keys = [{ id = "k", secret = "s" }]

            [deployments.mini]
            provider = "oa"
            model = "gpt-4o-mini"

            [deployments.mine]
            provider = "oa"
            model = "gpt-4o-mini"
            price = { input = "0.10", output = 0.5 }

            [deployments.newer]
            provider = "oa"
            model = "gpt-4.1"

            [deployments.local]
            provider = "oa"
            model = "llama-3-70b"
            price = "unknown"
            "#,
        );
        assert!(matches!(
            config.deployment_price("mini"),
            PriceSource::Catalogue(e) if e.input.0 == 150_000
        ));
        assert_eq!(
            config.deployment_price("mine").price().unwrap().input.0,
            100_000
        );
        assert!(matches!(
            config.deployment_price("local"),
            PriceSource::DeclaredUnknown
        ));
        let problems: Vec<String> = config.validate().iter().map(|p| p.to_string()).collect();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with(
                "deployments.newer.price: no price: the catalogue has none for openai model \"gpt-4.1\""
            ) && problems[0].contains("price = \"unknown\""),
            "{problems:?}"
        );
        let err = Config::parse(
            "[deployments.x]\nprovider = \"oa\"\nmodel = \"m\"\nprice = \"free\"\n",
            "t.toml",
            &|_| None,
        )
        .unwrap_err();
        assert!(err.to_string().contains("\"free\" is not a price"), "{err}");
    }
}
