//! The router: from the model a client asked for to the deployment and key of one attempt.
//!
//! A model name resolves through a route (an ordered fallback chain of deployments) or names
//! a deployment directly. Attempt *n* of a job goes to the chain's deployment *n − 1* (wrapping
//! round), so a retryable failure on the first choice is retried on the next one. Keys of a
//! deployment are taken in turn. Health tracking, token buckets and weighted strategies build
//! on this (see ARCHITECTURE.md).

use crate::config::{Config, ProviderKind};
use crate::pricing::Price;
use crate::providers::openai::OpenAiProvider;
use crate::providers::{CallOptions, Provider};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
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
    pub model: String,
    pub price: Price,
    pub timeout: Duration,
    /// How requests are translated for this deployment.
    pub options: CallOptions,
    pub adapter: Arc<dyn Provider>,
    keys: Vec<Key>,
    next_key: AtomicUsize,
}

impl Deployment {
    /// The next key, in turn.
    pub fn pick_key(&self) -> &Key {
        let i = self.next_key.fetch_add(1, Ordering::Relaxed);
        &self.keys[i % self.keys.len()]
    }
}

/// Every deployment of a configuration, with routes resolved.
#[derive(Debug)]
pub struct Router {
    deployments: BTreeMap<String, Arc<Deployment>>,
    routes: BTreeMap<String, Vec<Arc<Deployment>>>,
}

impl Router {
    /// Builds the adapters. `sim_base_url` replaces the base URL `sim` (the built-in simulator).
    pub fn new(config: &Config, http: reqwest::Client, sim_base_url: Option<&str>) -> Router {
        let mut deployments = BTreeMap::new();
        for (name, d) in &config.deployments {
            let provider = &config.providers[&d.provider];
            let base_url = match (provider.base_url.as_str(), sim_base_url) {
                ("sim", Some(sim)) => sim.to_string(),
                (url, _) => url.to_string(),
            };
            let adapter: Arc<dyn Provider> = match provider.kind {
                // Config validation admits only the OpenAI family for now.
                ProviderKind::Openai | ProviderKind::Anthropic | ProviderKind::Gemini => {
                    Arc::new(OpenAiProvider::new(base_url, http.clone()))
                }
            };
            let keys = provider
                .keys
                .iter()
                .map(|k| Key {
                    id: k.id.clone(),
                    secret: k.secret.clone(),
                })
                .collect();
            deployments.insert(
                name.clone(),
                Arc::new(Deployment {
                    name: name.clone(),
                    provider_name: d.provider.clone(),
                    model: d.model.clone(),
                    price: d.price,
                    timeout: provider.timeout,
                    options: CallOptions {
                        drop_unsupported_params: d.drop_unsupported_params,
                        default_max_tokens: d.default_max_tokens,
                    },
                    adapter,
                    keys,
                    next_key: AtomicUsize::new(0),
                }),
            );
        }
        let routes = config
            .routes
            .iter()
            .map(|(name, route)| {
                let chain = route
                    .deployments
                    .iter()
                    .map(|d| deployments[d].clone())
                    .collect();
                (name.clone(), chain)
            })
            .collect();
        Router {
            deployments,
            routes,
        }
    }

    /// The fallback chain for a client's model name, or `None` if no route or deployment has
    /// that name.
    pub fn chain(&self, model: &str) -> Option<&[Arc<Deployment>]> {
        self.routes
            .get(model)
            .map(Vec::as_slice)
            .or_else(|| self.deployments.get(model).map(std::slice::from_ref))
    }

    /// The deployment for attempt `number` (1-based) of a job asking for `model`.
    pub fn for_attempt(&self, model: &str, number: u32) -> Option<Arc<Deployment>> {
        let chain = self.chain(model)?;
        let index = (number.max(1) as usize - 1) % chain.len();
        Some(chain[index].clone())
    }
}
