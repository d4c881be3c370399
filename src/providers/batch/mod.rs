//! Provider batch tiers: one trait, one file per API family.
//!
//! OpenAI's Batch API, Anthropic's Message Batches and Gemini's batch mode all run many
//! requests for about half the real-time price within a 24-hour window. They differ in every
//! detail (an uploaded JSONL file or an inline list, `custom_id` or `metadata.key`, three
//! different status vocabularies, result files or inline results), so each family gets a
//! client behind [`BatchApi`], and the rest of Sluice (the collector and tracker in
//! [`crate::batch`]) only ever sees:
//!
//! - a batch is submitted as [`BatchRequest`]s keyed by `custom_id` (Sluice uses the job id);
//! - polling says [`BatchProgress::Running`] or [`BatchProgress::Ended`] (results can be read)
//!   or [`BatchProgress::Failed`] (the batch as a whole was refused: no item ran);
//! - the results are one [`ItemResult`] per request: a canonical [`Completion`] (translated by
//!   the same code as the family's real-time answers), a [`ProviderError`] saying retryable or
//!   not, `Expired` or `Cancelled`.
//!
//! Each request is translated into the provider's format by the family's real-time adapter
//! code (`request_body` of [`super::openai`], [`super::anthropic`], [`super::gemini`]), so a
//! job means the same thing on either tier.

use super::{CallOptions, Completion, ProviderError};
use crate::job::ChatRequest;
use async_trait::async_trait;
use std::time::Duration;

/// One request of a provider batch.
#[derive(Debug, Clone)]
pub struct BatchRequest {
    /// The correlation key the provider echoes back with the result (Sluice: the job id).
    pub custom_id: String,
    /// The canonical request, as this deployment is to be sent it (overrides applied).
    pub request: ChatRequest,
}

/// What every batch call needs: which model, with which key, how long one HTTP call may take.
#[derive(Debug, Clone, Copy)]
pub struct BatchCall<'a> {
    /// The provider's model name (the deployment's `model`).
    pub model: &'a str,
    /// The key's secret. Never logged; scrubbed from every error.
    pub api_key: &'a str,
    /// One HTTP exchange (an upload, a poll, a results download), not the batch's life.
    pub timeout: Duration,
    /// How requests are translated for this deployment.
    pub options: CallOptions,
}

/// What a poll of a submitted batch found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchProgress {
    /// Not finished: still validating, running, finalizing or being cancelled.
    Running {
        /// The provider's own word for the state (`in_progress`, `BATCH_STATE_RUNNING`, …).
        status: String,
    },
    /// Finished (completed, expired or cancelled): [`BatchApi::results`] has an outcome for
    /// every request, including those that expired or were cancelled before they ran.
    Ended { status: String },
    /// Refused as a whole (OpenAI `failed` at validation, Gemini `BATCH_STATE_FAILED`): no
    /// request ran and there are no per-request results.
    Failed { status: String, message: String },
}

/// How one request of an ended batch came out.
#[derive(Debug, Clone)]
pub enum ItemOutcome {
    /// Answered: the canonical response and its usage (charged at the batch price).
    Succeeded(Completion),
    /// The provider answered this request with an error; `kind` says whether running it again
    /// (real-time, or elsewhere) may succeed.
    Failed(ProviderError),
    /// The batch's window closed before this request ran.
    Expired,
    /// The batch was cancelled before this request ran.
    Cancelled,
}

/// One request's outcome, matched to its request by `custom_id`.
#[derive(Debug, Clone)]
pub struct ItemResult {
    pub custom_id: String,
    pub outcome: ItemOutcome,
}

/// What one provider batch may hold, as the provider documents it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    pub max_requests: usize,
    /// The whole submission (OpenAI's input file, Anthropic's create body, Gemini's inline
    /// requests), in bytes.
    pub max_bytes: usize,
}

/// A provider's batch tier.
#[async_trait]
pub trait BatchApi: Send + Sync + std::fmt::Debug {
    /// The provider's documented limits on one batch.
    fn limits(&self) -> BatchLimits;

    /// The request's size in the provider's batch format, in bytes: what counts towards the
    /// provider's per-batch size limit. An error names what the provider cannot take (the
    /// same error a real-time call of the request would give before sending anything), so a
    /// job that can never be sent is failed before it joins a batch.
    fn encoded_len(
        &self,
        model: &str,
        options: CallOptions,
        request: &BatchRequest,
    ) -> Result<usize, ProviderError>;

    /// Submits `requests` as one provider batch and returns the provider's batch id.
    /// `label` (Sluice's own id for the batch) is attached where the provider keeps one
    /// (OpenAI `metadata`, Gemini `displayName`), so a batch can be recognised later.
    async fn submit(
        &self,
        call: BatchCall<'_>,
        requests: &[BatchRequest],
        label: &str,
    ) -> Result<String, ProviderError>;

    /// Where the batch `id` stands.
    async fn poll(&self, call: BatchCall<'_>, id: &str) -> Result<BatchProgress, ProviderError>;

    /// Every request's outcome of an ended batch (in any order: match on `custom_id`).
    async fn results(
        &self,
        call: BatchCall<'_>,
        id: &str,
    ) -> Result<Vec<ItemResult>, ProviderError>;

    /// Asks the provider to cancel the batch. Requests already answered keep their results;
    /// the rest come back `Cancelled` once the batch has ended.
    async fn cancel(&self, call: BatchCall<'_>, id: &str) -> Result<(), ProviderError>;
}
