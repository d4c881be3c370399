//! `sluice.toml`: providers and their keys, deployments and their prices, routes, tenants,
//! budgets, the queue backend, the worker pools and telemetry.
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
//! Relative paths (`server.database`, `server.files`, `scheduler.dir`) are relative to the folder of the
//! config file ([`Config::load`]), not to the current directory.
//!
//! A [`Config`] is what the file says; a process runs on a [`ResolvedConfig`], which only
//! [`Config::resolve`] (or [`Config::load`]) builds, after every problem was listed: load →
//! parse → validate → resolve, as ripgrep turns its low-level arguments into high-level ones.
//!
//! [`Config::builtin`] is the default configuration: every deployment points at the simulator,
//! so `sluice demo` and a fresh `sluice serve` run with no file and no keys.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

mod batch;
pub(crate) mod budgets;
mod deployments;
mod duration;
mod lenient;
mod operators;
mod problem;
mod providers;
mod queue;
mod resolved;
mod routes;
mod secret;
mod server;
mod telemetry;
mod tenants;
#[cfg(test)]
mod tests;
mod workers;

pub use crate::problem::Problem;
pub use crate::provider_kind::ProviderKind;
pub use batch::{BatchConfig, BatchTierConfig, FlexTierConfig};
pub use budgets::{BudgetConfig, OnExceed, Tag};
pub use deployments::{DeploymentConfig, PriceSetting, PriceSource};
pub use operators::OperatorConfig;
pub use problem::{did_you_mean, ConfigError};
pub use providers::{KeyConfig, ProviderConfig};
pub use queue::{QueueBackend, QueueConfig};
pub use resolved::{
    ResolvedBatchTier, ResolvedConfig, ResolvedDeployment, ResolvedFlexTier, ResolvedProvider,
    ResolvedQueue, ResolvedRoute,
};
pub use routes::{unknown_model_message, RouteConfig, Strategy, UrgencyDeadlines};
pub use secret::{redact_url, Secret};
pub use server::{
    Database, DatabaseError, FileBytes, PostgresUrl, SchedulerConfig, ServerConfig,
    DEFAULT_DATABASE_CONNECTIONS,
};
/// `[sim]` is the simulator's own settings type.
pub use sluice_sim::{SimConfig, SimConfigError};
pub use telemetry::{LogFormat, TelemetryConfig};
pub use tenants::TenantConfig;
pub use workers::{HealthConfig, PoolConfig, PoolsConfig, RetryConfig};

use problem::{suggestion, syntax_error};

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
    /// Who may read every tenant's data on the dashboard (see [`operators`]).
    #[serde(default)]
    pub operators: Vec<OperatorConfig>,
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
    pub budgets: Vec<BudgetConfig>,
    /// Metrics, logs and traces (see [`TelemetryConfig`]).
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// What expanding `${VAR}` in the secrets found (unset variables, a broken reference),
    /// reported by [`Config::validate`] with the other problems.
    #[serde(skip)]
    secret_problems: Vec<Problem>,
}

/// The configuration used when no file is given: everything runs against the simulator.
pub const BUILTIN: &str = include_str!("../../sluice.example.toml");

impl Config {
    /// The built-in default (see `sluice.example.toml`), validated.
    pub fn builtin() -> Config {
        Config::parse(BUILTIN, "built-in config", &|_| None)
            .and_then(|c| c.validated("built-in config"))
            .expect("the built-in config is valid")
    }

    /// Reads, expands, validates and resolves a config file, with the process environment for
    /// `${VAR}`. Relative paths in it are taken from the file's folder.
    pub fn load(path: &Path) -> Result<ResolvedConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let origin = path.display().to_string();
        let mut config = Config::from_toml(&text, &origin, &|name| std::env::var(name).ok())?;
        if let Some(folder) = path.parent() {
            config.resolve_paths(folder);
        }
        config.resolve_from(&origin)
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
        config.secret_problems = secret::expand_secrets(&mut config, env);
        Ok((config, problems, complete))
    }

    /// Makes the relative paths of the configuration relative to `folder` (the config
    /// file's), as most tools read their config files.
    pub fn resolve_paths(&mut self, folder: &Path) {
        let database = self.server.database.sqlite_path_mut();
        let files = self.server.files.as_mut();
        for path in database
            .into_iter()
            .chain(files)
            .chain([&mut self.scheduler.dir])
        {
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

    /// Every problem in the configuration, each with its path, section by section. Empty
    /// means valid.
    pub fn validate(&self) -> Vec<Problem> {
        let mut problems = self.secret_problems.clone();
        problems.extend(tenants::problems(&self.tenants));
        problems.extend(operators::problems(&self.operators, &self.tenants));
        problems.extend(providers::problems(&self.providers));
        problems.extend(deployments::problems(self));
        problems.extend(self.batch.problems());
        problems.extend(routes::problems(
            &self.routes,
            &self.deployments,
            &self.queue,
        ));
        problems.extend(self.health.problems());
        problems.extend(self.pools.problems());
        problems.extend(self.queue.lease_problems(&self.providers));
        problems.extend(self.server.database_problems(&self.queue));
        problems.extend(self.retry.problems());
        problems.extend(self.queue.url_problems());
        for (i, budget) in self.budgets.iter().enumerate() {
            problems.extend(budget.problems(i, self));
        }
        problems.extend(self.server.problems());
        problems.extend(self.telemetry.problems());
        problems
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
