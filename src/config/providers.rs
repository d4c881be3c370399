//! `[providers.NAME]`: an API family, its address, its call timeout and its keys (each with
//! its secret and limits), with the providers' problems.

use super::secret::{empty_secret, Secret};
use super::Problem;
use crate::provider_kind::ProviderKind;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

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
    #[serde(default = "default_attempt_timeout", with = "super::duration")]
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

/// The part of an http(s) URL that could carry a credential (`user:password@`, a query
/// string, a fragment), if it has one. The API path is appended to a `base_url`, so none of
/// these can be meant, and a key in one would travel into every address logged or stored.
pub(super) fn credential_bearing_part(url: &str) -> Option<&'static str> {
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

/// Every provider's problems: its address, its keys and their limits.
pub(super) fn problems(providers: &BTreeMap<String, ProviderConfig>) -> Vec<Problem> {
    let mut problems = Vec::new();
    for (name, provider) in providers {
        if provider.base_url != "sim"
            && !(provider.base_url.starts_with("http://")
                || provider.base_url.starts_with("https://"))
        {
            problems.push(Problem::new(
                format!("providers.{name}.base_url"),
                format!(
                    "\"{}\" is not an http(s) URL (or \"sim\" for the simulator)",
                    provider.base_url
                ),
            ));
        } else if let Some(part) = credential_bearing_part(&provider.base_url) {
            // Not echoed: what it carries may be a credential.
            problems.push(Problem::new(
                format!("providers.{name}.base_url"),
                format!(
                    "carries {part}, which Sluice would send, log and store with every \
                     call's address; give the provider's plain address and put keys in \
                     providers.{name}.keys"
                ),
            ));
        }
        if provider.keys.is_empty() {
            problems.push(Problem::new(
                format!("providers.{name}.keys"),
                "needs at least one key",
            ));
        }
        for (k, key) in provider.keys.iter().enumerate() {
            problems.extend(empty_secret(
                &key.secret,
                &format!("providers.{name}.keys[{k}].secret"),
            ));
            for (field, value) in [
                ("requests_per_minute", key.requests_per_minute),
                ("tokens_per_minute", key.tokens_per_minute),
                ("requests_per_day", key.requests_per_day),
            ] {
                if value == Some(0) {
                    problems.push(Problem::new(
                        format!("providers.{name}.keys[{k}].{field}"),
                        "must be at least 1 (leave it out for no limit)",
                    ));
                }
            }
            if provider.keys[..k].iter().any(|o| o.id == key.id) {
                problems.push(Problem::new(
                    format!("providers.{name}.keys[{k}].id"),
                    format!("key id \"{}\" is used twice", key.id),
                ));
            }
        }
    }
    problems
}
