//! What an API family is, written down once: how a call becomes its request, and how its
//! answer, its error, its rate-limit headers and its stream events are read.
//!
//! The three adapters used to hand the shared plumbing three closures each ([`http::exchange`]
//! and [`stream::open`] took the answer parser, the error reader and the header reader one by
//! one). A [`Family`] names all of them together, so a fourth family is one `impl`, the plain
//! and streamed calls read errors and headers the same way by construction, and the batch
//! clients read a batch endpoint's failures with the same family's reader. Every family is a
//! [`Provider`] through the one implementation below.

use super::http::{self, Answer};
use super::stream::{self, ChunkStream, Translate};
use super::{Call, Completion, Provider, ProviderError};
use async_trait::async_trait;
use reqwest::header::HeaderMap;
use std::time::{Duration, SystemTime};

/// One API family's wire format.
pub trait Family: Send + Sync + std::fmt::Debug + 'static {
    /// The family's name in errors and logs (`openai`, `anthropic`, `gemini`).
    const NAME: &'static str;

    /// The family's stream events → canonical chunks.
    type Stream: Translate;

    /// The HTTP request for `call` (URL, key, body), streamed or not; an error names what of
    /// the request the provider cannot take, before anything is sent.
    fn request(
        &self,
        call: &Call<'_>,
        stream: bool,
    ) -> Result<reqwest::RequestBuilder, ProviderError>;

    /// A 2xx body as the canonical completion.
    fn completion(status: u16, body: &[u8], call: &Call<'_>) -> Result<Completion, ProviderError>;

    /// Any other answer as the error it is, with when to come back.
    fn error(answer: &Answer, now: SystemTime) -> ProviderError;

    /// How long the key is spent for, when a successful answer's rate-limit headers (plain or
    /// streamed) say a limit has nothing left.
    fn key_spent_for(headers: &HeaderMap) -> Option<Duration>;

    /// The translator for one streamed answer to `call`.
    fn stream(call: &Call<'_>) -> Self::Stream;
}

#[async_trait]
impl<F: Family> Provider for F {
    async fn chat(&self, call: Call<'_>) -> Result<Completion, ProviderError> {
        let request = self.request(&call, false)?;
        http::exchange::<F>(&call, request).await
    }

    async fn chat_stream(&self, call: Call<'_>) -> Result<ChunkStream, ProviderError> {
        let request = self.request(&call, true)?;
        stream::open::<F>(&call, request).await
    }
}
