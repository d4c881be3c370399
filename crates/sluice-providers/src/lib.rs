//! Provider adapters: one trait, one file per API family.
//!
//! The rest of Sluice speaks only the canonical request and response (OpenAI's chat format,
//! see [`sluice_core::job::ChatRequest`]). An adapter turns that into one provider's wire format,
//! makes the HTTP call, and turns the answer — or the failure — back into canonical form. The
//! error side matters as much as the success side: the worker decides retry, park or fail
//! from [`ProviderError::kind`] alone.

pub mod anthropic;
pub mod batch;
pub mod canonical;
pub mod family;
pub mod gemini;
pub mod http;
pub mod openai;
pub mod sse;
pub mod stream;
pub mod wait;

pub use sluice_core::failure::ErrorKind;
pub use sluice_core::usage::Usage;

use async_trait::async_trait;
use serde_json::Value;
use sluice_core::job::ChatRequest;
use std::time::Duration;

/// A successful call.
#[derive(Debug, Clone)]
pub struct Completion {
    /// The canonical response: an OpenAI `chat.completion` object.
    pub response: Value,
    pub usage: Usage,
    /// HTTP status the provider answered with.
    pub status: u16,
    /// Set when the answer's rate-limit headers say the key has nothing left (e.g.
    /// `x-ratelimit-remaining-requests: 0`) until this long from now: the limiter cools the
    /// key down instead of waiting for the next call's 429. A streamed answer's headers say
    /// the same before its first chunk (see [`stream::ChunkStream::key_spent_for`]).
    pub key_spent_for: Option<std::time::Duration>,
}

/// One call to make: which model, with which key, within how long.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    /// The provider's model name (the deployment's `model`, not the client's alias).
    pub model: &'a str,
    /// The secret of the key chosen for this attempt. Never logged.
    pub api_key: &'a str,
    pub request: &'a ChatRequest,
    /// The whole call, connect to last byte.
    pub timeout: Duration,
    /// A streamed call only: the longest its body may go without a byte once the answer has
    /// begun (the route's `stream_idle_timeout`); `None` leaves only `timeout`.
    pub stream_idle_timeout: Option<Duration>,
    /// What the deployment says about translating requests.
    pub options: CallOptions,
}

/// A deployment's choices about how its requests are translated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallOptions {
    /// Leave out parameters the provider cannot honour instead of failing the job
    /// (`drop_unsupported_params` in the deployment's config).
    pub drop_unsupported_params: bool,
    /// `max_tokens` for providers that require one (Anthropic) when the request has none.
    pub default_max_tokens: Option<u32>,
}

/// A failed call: what kind of failure, the provider's own message, and any hint of when to
/// come back.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{provider} {}: {message}", status.map(|s| s.to_string()).unwrap_or_else(|| kind.as_str().to_string()))]
pub struct ProviderError {
    pub kind: ErrorKind,
    /// The HTTP status, when there was a response.
    pub status: Option<u16>,
    /// The provider's message, as it wrote it (never containing the API key).
    pub message: String,
    /// The provider family that answered (`openai`, …), for messages.
    pub provider: &'static str,
    /// From `retry-after` / `retry-after-ms` / `x-ratelimit-reset-*`, when the provider said.
    pub retry_after: Option<Duration>,
    /// The provider's own word on retrying this call (`x-should-retry: true|false`, which
    /// OpenAI's and Anthropic's SDKs obey), overriding what the kind alone would say.
    pub should_retry: Option<bool>,
    /// The request parameter the provider blamed, where its error body names one (OpenAI's
    /// `error.param`, the first field of a Gemini `google.rpc.BadRequest`), so a client of
    /// Sluice's OpenAI endpoint learns which field to fix, as it would from OpenAI itself.
    /// The provider's own name for it (Gemini's differ from OpenAI's); scrubbed like `message`.
    pub param: Option<String>,
}

impl ProviderError {
    pub fn new(
        provider: &'static str,
        kind: ErrorKind,
        status: Option<u16>,
        message: impl Into<String>,
    ) -> Self {
        ProviderError {
            kind,
            status,
            message: message.into(),
            provider,
            retry_after: None,
            should_retry: None,
            param: None,
        }
    }

    /// Whether another attempt of the same call may succeed: the provider's `x-should-retry`
    /// when it sent one, else what the kind says ([`ErrorKind::is_retryable`]).
    pub fn is_retryable(&self) -> bool {
        self.should_retry.unwrap_or(self.kind.is_retryable())
    }
}

/// An API family's adapter.
#[async_trait]
pub trait Provider: Send + Sync + std::fmt::Debug {
    /// A non-streaming chat completion.
    async fn chat(&self, call: Call<'_>) -> Result<Completion, ProviderError>;

    /// A streaming chat completion: canonical `chat.completion.chunk` values as they arrive,
    /// the usage in the last one. An error before the first byte (a 429, a refused request)
    /// is the outer `Err`; one after it (an error event, a stream cut short) ends the stream.
    /// [`stream::collect`] folds the stream into a [`Completion`].
    async fn chat_stream(&self, call: Call<'_>) -> Result<stream::ChunkStream, ProviderError>;
}
