//! The API families Sluice speaks, and what each documents about its batch tier: facts
//! about a family that need no call, so configuration, prices and the adapters can all
//! name a family without depending on one another.

use serde::{Deserialize, Serialize};

/// An API family: the wire format a provider speaks (`kind` of `[providers.NAME]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
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

/// What one provider batch may hold, as the provider documents it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    pub max_requests: usize,
    /// The whole submission (OpenAI's input file, Anthropic's create body, Gemini's inline
    /// requests), in bytes.
    pub max_bytes: usize,
}

impl BatchLimits {
    /// The limits of `kind`'s batch API as Sluice uses it (reference §6.6): the documented
    /// caps, less room for the wrapper around the requests where the cap is on a whole body.
    pub const fn of(kind: ProviderKind) -> BatchLimits {
        const MB: usize = 1_000_000;
        match kind {
            // The cap is on the input file: the JSONL lines alone.
            ProviderKind::Openai => BatchLimits {
                max_requests: 50_000,
                max_bytes: 200 * MB,
            },
            // The cap is on the create body: 1 KB for `{"requests":[…]}` around the items.
            ProviderKind::Anthropic => BatchLimits {
                max_requests: 100_000,
                max_bytes: 256 * MB - 1000,
            },
            // Inline requests (the mode Sluice uses) are capped at 20 MB in all. Google
            // documents no count; the answers come back inline in one body every poll reads
            // whole, so the count is kept modest.
            ProviderKind::Gemini => BatchLimits {
                max_requests: 5_000,
                max_bytes: 20 * MB - 1000,
            },
        }
    }
}
