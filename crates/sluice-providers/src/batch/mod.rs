//! Provider batch tiers: one trait, one file per API family.
//!
//! OpenAI's Batch API, Anthropic's Message Batches and Gemini's batch mode all run many
//! requests for about half the real-time price within a 24-hour window. They differ in every
//! detail (an uploaded JSONL file or an inline list, `custom_id` or `metadata.key`, three
//! different status vocabularies, result files or inline results), so each family gets a
//! client behind [`BatchApi`], and the rest of Sluice (the collector and tracker in
//! `sluice::batch`) only ever sees:
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
//! job means the same thing on either tier; answers and per-request errors are read by the
//! same adapters' parsers and classifiers, and the batch endpoints' own failures (401, 429,
//! 5xx, a refused connection) become [`ProviderError`]s exactly as a real-time call's do.
//!
//! The clients: [`openai::OpenAiBatch`], [`anthropic::AnthropicBatch`],
//! [`gemini::GeminiBatch`]. Each takes the same base URL as its family's real-time adapter.
//! The plumbing below this trait is what the three share: one exchange under the deadline
//! with the key scrubbed, JSONL reading, required-field errors, the size check.

pub mod anthropic;
pub mod gemini;
pub mod openai;

use super::family::Family;
use super::http::{self, Answer};
use super::{Call, CallOptions, Completion, ErrorKind, ProviderError};
use async_trait::async_trait;
use serde_json::Value;
use sluice_core::job::ChatRequest;
pub use sluice_core::provider_kind::BatchLimits;
use sluice_core::provider_kind::ProviderKind;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

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
    /// Finished (completed, expired or cancelled): [`BatchApi::results`] can be read. It has
    /// an outcome for every request the provider reports on, including those that expired or
    /// were cancelled before they ran (see there for a request it says nothing about).
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

/// The batch client of API family `kind`, at the same base URL as its real-time adapter.
pub fn client(kind: ProviderKind, base_url: &str, http: reqwest::Client) -> Arc<dyn BatchApi> {
    match kind {
        ProviderKind::Openai => Arc::new(openai::OpenAiBatch::new(base_url, http)),
        ProviderKind::Anthropic => Arc::new(anthropic::AnthropicBatch::new(base_url, http)),
        ProviderKind::Gemini => Arc::new(gemini::GeminiBatch::new(base_url, http)),
    }
}

/// A provider's batch tier.
#[async_trait]
pub trait BatchApi: Send + Sync + std::fmt::Debug {
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
    ///
    /// The list is what the provider reported. All three document an outcome for every
    /// request (OpenAI writes unrun ones to the error file as `batch_expired` /
    /// `batch_cancelled`), but should a submitted `custom_id` be absent, the caller must treat
    /// that request as **not run**: never answered, never charged, to be run again. (Only the
    /// caller knows every id it submitted; the providers bill only answered requests.)
    ///
    /// A result that cannot be attributed to a request (a line with no `custom_id`, an
    /// inline response with no `metadata.key`) fails the whole call with `InvalidResponse`
    /// rather than being dropped, since dropping it would run an answered request twice.
    /// Calling this on a batch that has not ended is an error (`BadRequest`).
    async fn results(
        &self,
        call: BatchCall<'_>,
        id: &str,
    ) -> Result<Vec<ItemResult>, ProviderError>;

    /// Asks the provider to cancel the batch. Requests already answered keep their results;
    /// the rest come back `Cancelled` once the batch has ended.
    async fn cancel(&self, call: BatchCall<'_>, id: &str) -> Result<(), ProviderError>;
}

/// The real-time [`Call`] a batch item is translated with. The translators read only the
/// model, the request and the options; the key and the deadline belong to the batch's own
/// HTTP calls, so they are left empty here.
fn translation_call<'a>(
    model: &'a str,
    options: CallOptions,
    request: &'a BatchRequest,
) -> Call<'a> {
    Call {
        model,
        api_key: "",
        request: &request.request,
        timeout: Duration::ZERO,
        stream_idle_timeout: None,
        options,
    }
}

/// One exchange with a batch endpoint of family `F`: the 2xx answer, or the family's reading
/// of any other ([`Family::error`], the real-time adapter's, so a 429's `retry-after` and a
/// 401 mean the same as on a real-time call); under `call.timeout`, the key scrubbed from
/// any error.
async fn fetch<F: Family>(
    call: &BatchCall<'_>,
    request: reqwest::RequestBuilder,
) -> Result<Answer, ProviderError> {
    http::guarded(F::NAME, call.api_key, call.timeout, async {
        let answer = http::send(F::NAME, request.timeout(call.timeout), call.timeout).await?;
        if answer.status.is_success() {
            Ok(answer)
        } else {
            Err(F::error(&answer, SystemTime::now()))
        }
    })
    .await
}

/// [`fetch`] for an endpoint that answers with a JSON object (a batch, a file, an operation).
/// A body that is not one is quoted in the error, the key scrubbed from it as from any other.
async fn fetch_json<F: Family>(
    call: &BatchCall<'_>,
    request: reqwest::RequestBuilder,
) -> Result<Value, ProviderError> {
    let provider = F::NAME;
    let answer = fetch::<F>(call, request).await?;
    let status = answer.status.as_u16();
    let object = http::json_body(provider, status, &answer.body).and_then(|json| {
        if json.is_object() {
            Ok(json)
        } else {
            Err(http::invalid(
                provider,
                status,
                format!("expected a JSON object, got {json}"),
            ))
        }
    });
    object.map_err(|error| http::redact(error, call.api_key))
}

/// A string field the provider documents as always there, or an `InvalidResponse` naming it.
fn required_str<'v>(
    provider: &'static str,
    value: &'v Value,
    pointer: &str,
    what: &str,
) -> Result<&'v str, ProviderError> {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            http::invalid(
                provider,
                200,
                format!(
                    "{what} has no \"{}\"",
                    pointer.trim_start_matches('/').replace('/', ".")
                ),
            )
        })
}

/// The lines of a JSONL results file, numbered from 1, blank lines skipped. The whole file is
/// in memory (a 50,000-request output can be hundreds of MB: acceptable for now, streaming it
/// is the next step), but each line is parsed on its own so only one line's `Value` is alive
/// at a time. A line that is not JSON is quoted in its error, `api_key` scrubbed from it.
fn jsonl_lines<'a>(
    provider: &'static str,
    api_key: &'a str,
    what: &'a str,
    body: &'a [u8],
) -> impl Iterator<Item = Result<Value, ProviderError>> + 'a {
    body.split(|&b| b == b'\n')
        .enumerate()
        .filter(|(_, line)| !line.trim_ascii().is_empty())
        .map(move |(at, line)| {
            serde_json::from_slice(line).map_err(|e| {
                let error = http::invalid(
                    provider,
                    200,
                    format!(
                        "{what} line {} is not JSON ({e}): {}",
                        at + 1,
                        String::from_utf8_lossy(line)
                    ),
                );
                http::redact(error, api_key)
            })
        })
}

/// Refuses a submission the provider would refuse as a whole: empty, or over its limits.
/// The collector sizes batches with [`BatchApi::encoded_len`]; this is the backstop.
fn check_size(
    provider: &'static str,
    limits: BatchLimits,
    requests: usize,
    bytes: usize,
) -> Result<(), ProviderError> {
    let problem = if requests == 0 {
        "a batch needs at least one request".to_string()
    } else if requests > limits.max_requests {
        format!(
            "{requests} requests; a batch holds at most {}",
            limits.max_requests
        )
    } else if bytes > limits.max_bytes {
        format!("{bytes} bytes; a batch holds at most {}", limits.max_bytes)
    } else {
        return Ok(());
    };
    Err(ProviderError::new(
        provider,
        ErrorKind::BadRequest,
        None,
        problem,
    ))
}

/// `results` may only be read once the batch has ended; anything else is the caller's mistake.
fn require_ended(
    provider: &'static str,
    id: &str,
    progress: BatchProgress,
) -> Result<(), ProviderError> {
    match progress {
        BatchProgress::Ended { .. } => Ok(()),
        BatchProgress::Running { status } | BatchProgress::Failed { status, .. } => {
            Err(ProviderError::new(
                provider,
                ErrorKind::BadRequest,
                None,
                format!("batch {id} is {status}: results are read once it has ended"),
            ))
        }
    }
}

/// A create body that carries the requests inline (Anthropic, Gemini): each request
/// translated and serialised by `item`, the list between `open` and `close` (the envelope's
/// JSON around it), so its size can be checked against the provider's limit before sending.
fn inline_body(
    provider: &'static str,
    limits: BatchLimits,
    requests: &[BatchRequest],
    item: impl Fn(&BatchRequest) -> Result<Vec<u8>, ProviderError>,
    (open, close): (&str, &str),
) -> Result<Vec<u8>, ProviderError> {
    let mut body = open.as_bytes().to_vec();
    for (at, request) in requests.iter().enumerate() {
        if at > 0 {
            body.push(b',');
        }
        body.extend(item(request)?);
    }
    body.extend_from_slice(close.as_bytes());
    check_size(provider, limits, requests.len(), body.len())?;
    Ok(body)
}

/// A result the provider wrote that Sluice could not read, as that request's failure:
/// retryable (`InvalidResponse`), like a real-time answer that is not what the docs say.
fn unreadable(
    provider: &'static str,
    custom_id: &str,
    problem: impl std::fmt::Display,
) -> ItemOutcome {
    ItemOutcome::Failed(http::invalid(
        provider,
        200,
        format!("the result for {custom_id} {problem}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_checked_against_the_limits() {
        let limits = BatchLimits {
            max_requests: 2,
            max_bytes: 100,
        };
        assert!(check_size("openai", limits, 2, 100).is_ok());
        for (requests, bytes, says) in [
            (0, 0, "at least one"),
            (3, 10, "3 requests"),
            (1, 101, "101 bytes"),
        ] {
            let e = check_size("openai", limits, requests, bytes).unwrap_err();
            assert_eq!(e.kind, ErrorKind::BadRequest);
            assert!(e.message.contains(says), "{}", e.message);
        }
    }

    #[test]
    fn jsonl_lines_skip_blanks_and_name_a_bad_line() {
        let body = b"{\"a\":1}\n\n  \n{\"b\":2}\r\nnot json\n";
        let lines: Vec<_> = jsonl_lines("openai", "", "file f", body).collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[1].as_ref().unwrap()["b"], 2);
        let e = lines[2].clone().unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidResponse);
        assert!(
            e.message.starts_with("file f line 5 is not JSON"),
            "{}",
            e.message
        );
    }

    #[test]
    fn results_need_an_ended_batch() {
        let ended = BatchProgress::Ended {
            status: "ended".into(),
        };
        assert!(require_ended("anthropic", "b1", ended).is_ok());
        let running = BatchProgress::Running {
            status: "in_progress".into(),
        };
        let e = require_ended("anthropic", "b1", running).unwrap_err();
        assert_eq!(e.kind, ErrorKind::BadRequest);
        assert!(e.message.contains("b1 is in_progress"), "{}", e.message);
    }
}
