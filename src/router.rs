//! The router: from the model a client asked for to the deployment and key of one attempt.
//!
//! A model name resolves through a route (an ordered fallback chain of deployments) or names
//! a deployment directly. Attempt *n* of a job goes to the chain's deployment *n − 1* (wrapping
//! round), so a retryable failure on the first choice is retried on the next one. Keys of a
//! deployment are taken in turn. Health tracking, token buckets and weighted strategies build
//! on this (see ARCHITECTURE.md).

use crate::config::{Config, ProviderKind};
use crate::pricing::Price;
use crate::providers::anthropic::AnthropicProvider;
use crate::providers::gemini::GeminiProvider;
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
    /// The API family, named in the errors its adapter reports.
    pub kind: ProviderKind,
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
    /// Builds the adapters. `sim_base_url` gives, for an API family, the base URL that
    /// replaces `sim` (the built-in simulator serves each family at its own path).
    pub fn new(
        config: &Config,
        http: reqwest::Client,
        sim_base_url: Option<&dyn Fn(ProviderKind) -> String>,
    ) -> Router {
        let mut deployments = BTreeMap::new();
        for (name, d) in &config.deployments {
            let provider = &config.providers[&d.provider];
            let base_url = match (provider.base_url.as_str(), sim_base_url) {
                ("sim", Some(sim)) => sim(provider.kind),
                (url, _) => url.to_string(),
            };
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
            deployments.insert(
                name.clone(),
                Arc::new(Deployment {
                    name: name.clone(),
                    provider_name: d.provider.clone(),
                    kind: provider.kind,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_provider_kind_gets_its_adapter() {
        let config = Config::parse(
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
