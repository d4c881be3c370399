//! `[deployments.NAME]`: a model on a provider, with its price (configured, from the
//! shipped catalogue, or declared unknown), its request overrides and its discounted tiers,
//! with the deployments' problems.

use super::batch::{BatchTierConfig, FlexTierConfig};
use super::problem::suggestion;
use super::{Config, Problem};
use crate::pricing::catalogue::{Catalogue, CatalogueEntry};
use crate::pricing::Price;
use crate::provider_kind::{BatchLimits, ProviderKind};
use serde::{Deserialize, Deserializer};
use std::fmt;

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

impl Config {
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
}

/// Every deployment's problems: its provider, its prices (real-time and discounted tiers),
/// its batch limits and its overrides.
pub(super) fn problems(config: &Config) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut problem = |path: String, message: String| problems.push(Problem { path, message });
    for (name, deployment) in &config.deployments {
        match config.providers.get(&deployment.provider) {
            None => problem(
                format!("deployments.{name}.provider"),
                format!(
                    "unknown provider \"{}\"{}",
                    deployment.provider,
                    suggestion(
                        &deployment.provider,
                        config.providers.keys().map(String::as_str)
                    )
                ),
            ),
            Some(provider) => {
                let price = config.deployment_price(name);
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
                    let limits = BatchLimits::of(provider.kind);
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
                    if realtime_known && config.deployment_batch_price(name).is_none() {
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
                    } else if realtime_known && config.deployment_flex_price(name).is_none() {
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
    problems
}
