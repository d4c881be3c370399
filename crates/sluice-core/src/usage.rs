//! The token counts of one call, in the one shape every provider's answer is read into:
//! what a call is charged on and what the canonical `usage` object says.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Token counts of one call, normalised so costs are computed the same way for every provider:
/// `prompt_tokens` includes `cached_tokens` and `cache_write_tokens` (OpenAI's convention;
/// Anthropic's `input_tokens` excludes both and is added up by its adapter).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    /// Output tokens, reasoning included.
    pub completion_tokens: u64,
    /// Prompt tokens served from the provider's cache (billed at the cached-input price).
    pub cached_tokens: u64,
    /// Prompt tokens written to the provider's cache (Anthropic's `cache_creation_input_tokens`,
    /// billed at the cache-write price).
    #[serde(default)]
    pub cache_write_tokens: u64,
}

impl Usage {
    /// Reads the canonical (OpenAI) `usage` object; `None` unless both required counts are
    /// there.
    pub fn from_canonical(usage: &Value) -> Option<Usage> {
        let detail = |name: &str| {
            usage
                .pointer(&format!("/prompt_tokens_details/{name}"))
                .and_then(Value::as_u64)
                .unwrap_or(0)
        };
        Some(Usage {
            prompt_tokens: usage.get("prompt_tokens")?.as_u64()?,
            completion_tokens: usage.get("completion_tokens")?.as_u64()?,
            cached_tokens: detail("cached_tokens"),
            cache_write_tokens: detail("cache_write_tokens"),
        })
    }

    /// The canonical `usage` object. `cache_write_tokens` appears only when there were some,
    /// as in OpenAI's own answers.
    pub fn to_canonical(&self, reasoning_tokens: Option<u64>) -> Value {
        let mut details = serde_json::json!({"cached_tokens": self.cached_tokens});
        if self.cache_write_tokens > 0 {
            details["cache_write_tokens"] = self.cache_write_tokens.into();
        }
        let mut usage = serde_json::json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": details,
        });
        if let Some(reasoning) = reasoning_tokens {
            usage["completion_tokens_details"] = serde_json::json!({"reasoning_tokens": reasoning});
        }
        usage
    }
}
