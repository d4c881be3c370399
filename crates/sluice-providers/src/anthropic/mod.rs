//! The Anthropic Messages adapter: `POST {base}/v1/messages`.
//!
//! Written against Anthropic's documentation (provider reference, sections 3 and 6), not the
//! simulator. The canonical request is read by [`CanonicalRequest`] and rebuilt the Messages
//! way: system prompts hoisted to `system`, content as blocks, tool calls as `tool_use` blocks,
//! every run of tool results merged into one user message (the API wants the results for one
//! assistant turn together), `max_tokens` always set because the API requires it.
//!
//! Decisions worth knowing:
//! - `temperature` above 1 (OpenAI allows up to 2, Anthropic 0–1) is refused naming the
//!   parameter; a deployment with `drop_unsupported_params = true` clamps it to 1 instead.
//!   Scaling (1.5 → 0.75) would quietly change every other value's meaning too.
//! - `max_tokens`: the request's, else the deployment's `default_max_tokens`, else
//!   [`DEFAULT_MAX_TOKENS`].
//! - Tool-call ids are kept exactly as given both ways, so a conversation that goes back and
//!   forth keeps matching `tool_use` to `tool_result`.
//! - Usage is normalised to OpenAI's convention: prompt tokens are
//!   `input_tokens + cache_creation_input_tokens + cache_read_input_tokens`, of which the
//!   reads are `cached_tokens` and the writes `cache_write_tokens`.

mod stream;
#[cfg(test)]
mod tests;
pub mod wire;

pub use stream::AnthropicStream;

use super::canonical::{
    self, CanonicalRequest, ChoiceParts, CompletionParts, FinishReason, Image, Message,
    OutToolCall, ParamPolicy, Part, ReasoningEffort, ResponseFormat, ToolChoice,
};
use super::family::Family;
use super::http::{self, Answer};
use super::wait::{self, LimitState};
use super::{Call, Completion, ErrorKind, ProviderError, Usage};
use reqwest::header::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::borrow::Cow;
use std::time::{Duration, SystemTime};
use wire::{
    ContentBlock, ErrorBody, ErrorDetail, ImageSource, InputBlock, InputMessage, MessagesRequest,
    Metadata, OutputConfig, OutputFormat, Role, ToolChoiceParam, ToolParam,
};

const PROVIDER: &str = "anthropic";
/// The API version this adapter speaks (the one the official SDKs pin).
pub const API_VERSION: &str = "2023-06-01";
/// `max_tokens` when neither the request nor the deployment sets one: large enough for a long
/// answer on every current model, small enough to be accepted by all of them.
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

/// Calls `POST {base_url}/v1/messages`.
#[derive(Debug, Clone)]
pub struct AnthropicProvider {
    endpoint: String,
    http: reqwest::Client,
}

impl AnthropicProvider {
    /// `base_url` is the API root without the version path, e.g. `https://api.anthropic.com`;
    /// a trailing `/` is ignored.
    pub fn new(base_url: impl Into<String>, http: reqwest::Client) -> Self {
        let base_url = base_url.into();
        AnthropicProvider {
            endpoint: format!("{}/v1/messages", base_url.trim_end_matches('/')),
            http,
        }
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn post(&self, call: &Call<'_>, body: &impl Serialize) -> reqwest::RequestBuilder {
        authorized(self.http.post(&self.endpoint), call.api_key)
            .timeout(call.timeout)
            .json(body)
    }
}

/// The key and API version every Anthropic endpoint wants (Messages, Message Batches, a
/// batch's `results_url`).
pub(crate) fn authorized(
    request: reqwest::RequestBuilder,
    api_key: &str,
) -> reqwest::RequestBuilder {
    request
        .header("x-api-key", http::key_header(api_key))
        .header("anthropic-version", API_VERSION)
}

impl Family for AnthropicProvider {
    const NAME: &'static str = PROVIDER;
    type Stream = AnthropicStream;

    fn request(
        &self,
        call: &Call<'_>,
        stream: bool,
    ) -> Result<reqwest::RequestBuilder, ProviderError> {
        let request = read(call)?;
        Ok(self.post(call, &request_body(call, &request, stream)?))
    }

    fn completion(status: u16, body: &[u8], _: &Call<'_>) -> Result<Completion, ProviderError> {
        parse_message(status, body)
    }

    fn error(answer: &Answer, now: SystemTime) -> ProviderError {
        error_from_answer(answer, now)
    }

    fn key_spent_for(headers: &HeaderMap) -> Option<Duration> {
        wait::exhausted_for(&limit_states(headers, SystemTime::now()))
    }

    fn stream(call: &Call<'_>) -> AnthropicStream {
        AnthropicStream::new(call.model)
    }
}

/// The call's request read for translation, a field error naming what cannot be read.
pub fn read(call: &Call<'_>) -> Result<CanonicalRequest, ProviderError> {
    CanonicalRequest::read(call.request).map_err(|p| p.into_error(PROVIDER))
}

/// The Messages request for a canonical one (read from the call by [`read`]), borrowing
/// from it.
pub fn request_body<'a>(
    call: &Call<'a>,
    request: &'a CanonicalRequest,
    stream: bool,
) -> Result<MessagesRequest<'a>, ProviderError> {
    let policy = ParamPolicy {
        provider: PROVIDER,
        drop_unsupported: call.options.drop_unsupported_params,
    };
    policy.check_rest(&request.rest)?;
    if request.n.is_some() {
        policy.unsupported_because("n", Some("one answer per call; send several jobs"))?;
    }
    if request.seed.is_some() {
        policy.unsupported("seed")?;
    }
    if request.frequency_penalty.is_some() {
        policy.unsupported("frequency_penalty")?;
    }
    if request.presence_penalty.is_some() {
        policy.unsupported("presence_penalty")?;
    }

    let max_tokens = request
        .max_tokens
        .or(call.options.default_max_tokens.map(u64::from))
        .unwrap_or(u64::from(DEFAULT_MAX_TOKENS));
    let mut temperature = request.temperature;
    if let Some(t) = temperature.filter(|t| *t > 1.0) {
        policy.unsupported_because(
            "temperature",
            Some(&format!("{t} is above 1; Anthropic's range is 0 to 1")),
        )?;
        temperature = Some(1.0);
    }
    let mut top_p = request.top_p;
    if top_p.is_some() {
        // Anthropic's documentation says to alter one or the other, and its models after the
        // Claude 3 family refuse a request with both ("temperature and top_p cannot both be
        // specified for this model"), which OpenAI clients often send by default.
        let both_refused = request.temperature.is_some() && !call.model.starts_with("claude-3");
        if both_refused {
            policy.unsupported_because(
                "top_p",
                Some("beside temperature; Anthropic's models take one of the two, not both"),
            )?;
            top_p = None;
        }
    }
    let tools = request
        .tools
        .iter()
        .map(|tool| ToolParam {
            name: &tool.name,
            input_schema: tool.parameters.as_ref().map_or_else(
                || Cow::Owned(json!({"type": "object", "properties": {}})),
                Cow::Borrowed,
            ),
            description: tool.description.as_deref(),
            strict: tool.strict,
        })
        .collect();
    let mut output_config = OutputConfig::default();
    match &request.response_format {
        None | Some(ResponseFormat::Text) => {}
        Some(ResponseFormat::JsonObject) => policy.unsupported_because(
            "response_format",
            Some("json_object; use json_schema, which maps to output_config.format"),
        )?,
        Some(ResponseFormat::JsonSchema { schema, .. }) => {
            output_config.format = Some(OutputFormat::JsonSchema { schema });
        }
    }
    // Anthropic's `effort` spends fewer or more tokens on the whole answer, thinking
    // included, from `low` up; it has no level that turns thinking down to nothing.
    match request.reasoning_effort {
        None => {}
        Some(effort @ (ReasoningEffort::None | ReasoningEffort::Minimal)) => {
            let why = format!(
                "{}; Anthropic's output_config.effort starts at low",
                effort.as_str()
            );
            policy.unsupported_because("reasoning_effort", Some(&why))?
        }
        Some(effort) => output_config.effort = Some(effort.as_str()),
    }
    Ok(MessagesRequest {
        model: call.model,
        max_tokens,
        system: request.system.as_deref(),
        messages: messages(&request.messages),
        temperature,
        top_p,
        top_k: request.top_k,
        stop_sequences: &request.stop,
        metadata: request.user.as_deref().map(|user_id| Metadata { user_id }),
        tools,
        tool_choice: tool_choice(request),
        output_config,
        stream,
    })
}

/// `tool_choice`, with `parallel_tool_calls: false` as `disable_parallel_tool_use`.
fn tool_choice(request: &CanonicalRequest) -> Option<ToolChoiceParam<'_>> {
    let disable_parallel_tool_use = request.parallel_tool_calls == Some(false);
    Some(match &request.tool_choice {
        Some(ToolChoice::None) => ToolChoiceParam::None,
        Some(ToolChoice::Auto) => ToolChoiceParam::Auto {
            disable_parallel_tool_use,
        },
        Some(ToolChoice::Required) => ToolChoiceParam::Any {
            disable_parallel_tool_use,
        },
        Some(ToolChoice::Function(name)) => ToolChoiceParam::Tool {
            name,
            disable_parallel_tool_use,
        },
        None if disable_parallel_tool_use && !request.tools.is_empty() => ToolChoiceParam::Auto {
            disable_parallel_tool_use,
        },
        None => return None,
    })
}

/// The conversation as Messages turns. Consecutive messages of one role become one turn, so
/// every run of `tool` messages (and a user message right after them) is one user message.
fn messages(conversation: &[Message]) -> Vec<InputMessage<'_>> {
    let mut turns: Vec<InputMessage<'_>> = Vec::new();
    for message in conversation {
        let (role, blocks) = match message {
            Message::User(parts) => (
                Role::User,
                parts
                    .iter()
                    .filter(|part| !matches!(part, Part::Text(text) if is_blank(text)))
                    .map(user_block)
                    .collect(),
            ),
            Message::Assistant { text, tool_calls } => {
                let mut blocks = Vec::with_capacity(tool_calls.len() + 1);
                if let Some(text) = text.as_deref().filter(|text| !is_blank(text)) {
                    blocks.push(InputBlock::Text { text });
                }
                blocks.extend(tool_calls.iter().map(|call| InputBlock::ToolUse {
                    id: &call.id,
                    name: &call.name,
                    input: &call.arguments,
                }));
                (Role::Assistant, blocks)
            }
            Message::Tool {
                tool_call_id,
                content,
            } => (
                Role::User,
                vec![InputBlock::ToolResult {
                    tool_use_id: tool_call_id,
                    content,
                }],
            ),
        };
        // An empty turn is refused by the API and says nothing.
        if blocks.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some(last) if last.role == role => last.content.extend(blocks),
            _ => turns.push(InputMessage {
                role,
                content: blocks,
            }),
        }
    }
    turns
}

/// Text the API refuses as a block ("text content blocks must contain non-whitespace
/// text"), which OpenAI takes and which says nothing: such a block is left out.
fn is_blank(text: &str) -> bool {
    text.trim().is_empty()
}

fn user_block(part: &Part) -> InputBlock<'_> {
    match part {
        Part::Text(text) => InputBlock::Text { text },
        Part::Image(Image::Url(url)) => InputBlock::Image {
            source: ImageSource::Url { url },
        },
        Part::Image(Image::Base64 { media_type, data }) => InputBlock::Image {
            source: ImageSource::Base64 { media_type, data },
        },
    }
}

/// A 2xx body: a `message` with content blocks, a stop reason and usage.
pub fn parse_message(status: u16, body: &[u8]) -> Result<Completion, ProviderError> {
    completion_of(status, http::typed_body(PROVIDER, status, body)?)
}

/// [`parse_message`] for a message already read as JSON (a batch result's `message`).
pub fn message_from_json(status: u16, message: &Value) -> Result<Completion, ProviderError> {
    completion_of(status, http::typed_value(PROVIDER, status, message)?)
}

/// A typed `Message` as the canonical completion.
fn completion_of(status: u16, message: wire::Message) -> Result<Completion, ProviderError> {
    let invalid = |message: &str| http::invalid(PROVIDER, status, message);
    if message.kind.as_deref() == Some("error") {
        let text = message
            .error
            .as_ref()
            .and_then(|e| e.message.as_deref())
            .unwrap_or("no message");
        return Err(invalid(&format!(
            "a success status carrying an error: {text}"
        )));
    }
    let blocks = message
        .content
        .ok_or_else(|| invalid("the response has no \"content\" blocks"))?;
    let usage = message.usage.and_then(canonical_usage).ok_or_else(|| {
        invalid("the response has no valid \"usage\" (input_tokens, output_tokens)")
    })?;
    let stop_reason = message
        .stop_reason
        .ok_or_else(|| invalid("the response has no \"stop_reason\""))?;
    let finish_reason = FinishReason::from_anthropic(&stop_reason)
        .ok_or_else(|| canonical::unfinished(PROVIDER, status, &stop_reason))?;
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for block in blocks {
        match block {
            ContentBlock::Text { text: piece } => text.push_str(&piece),
            ContentBlock::ToolUse { id, name, input } => tool_calls.push(OutToolCall {
                id,
                name,
                arguments: input.to_string(),
                extra_content: None,
            }),
            // Thinking and server-tool blocks have no place in the canonical message.
            ContentBlock::Other => {}
        }
    }
    let content = if text.is_empty() && !tool_calls.is_empty() {
        None
    } else {
        Some(text)
    };
    let parts = CompletionParts {
        id: message.id,
        created: canonical::unix_now(),
        model: message.model,
        choices: vec![ChoiceParts {
            index: 0,
            content,
            refusal: None,
            tool_calls,
            finish_reason,
            native_finish_reason: Some(stop_reason),
        }],
        usage,
        reasoning_tokens: None,
    };
    Ok(parts.into_completion(status))
}

/// Anthropic's usage in the canonical buckets (see the module doc for the arithmetic);
/// `None` unless both required counts are there.
pub fn canonical_usage(usage: wire::Usage) -> Option<Usage> {
    let written = usage.cache_creation_input_tokens.unwrap_or(0);
    let read = usage.cache_read_input_tokens.unwrap_or(0);
    Some(Usage {
        prompt_tokens: usage.input_tokens? + written + read,
        completion_tokens: usage.output_tokens?,
        cached_tokens: read,
        cache_write_tokens: written,
    })
}

/// What an `error.type` means, with the HTTP status when there was one.
pub fn classify(status: Option<u16>, error_type: Option<&str>, message: &str) -> ErrorKind {
    // A spend cap or an empty credit balance: waiting does not help (a 429 with
    // `enforced_spend_limit_reached`, or a 400 saying so).
    let lower = message.to_ascii_lowercase();
    let no_credit = lower.contains("credit balance")
        || lower.contains("spend limit")
        || lower.contains("usage limits");
    match error_type {
        Some("billing_error") => ErrorKind::QuotaExhausted,
        _ if no_credit && matches!(status, None | Some(400 | 402 | 403 | 429)) => {
            ErrorKind::QuotaExhausted
        }
        Some("rate_limit_error") => ErrorKind::RateLimited,
        Some("overloaded_error" | "api_error") => ErrorKind::ServerError,
        Some("timeout_error") => ErrorKind::Timeout,
        Some("authentication_error" | "permission_error") => ErrorKind::Unauthorized,
        Some("not_found_error") => ErrorKind::NotFound,
        Some("invalid_request_error" | "request_too_large") => ErrorKind::BadRequest,
        _ => status.map_or(ErrorKind::ServerError, http::classify_status),
    }
}

/// An error object (`error` of an error body, a stream's error event, a batch result) as a
/// [`ProviderError`]; `None` without a message.
pub fn error_from_detail(status: Option<u16>, error: &ErrorDetail) -> Option<ProviderError> {
    let message = error.message.as_deref().filter(|m| !m.is_empty())?;
    let spend_cap = error.details.as_ref().and_then(|d| d.error_code.as_deref())
        == Some("enforced_spend_limit_reached");
    let kind = if spend_cap {
        ErrorKind::QuotaExhausted
    } else {
        classify(status, error.kind.as_deref(), message)
    };
    Some(ProviderError::new(PROVIDER, kind, status, message))
}

/// An `{"type":"error","error":{"type","message"}}` object already read as JSON (a batch
/// result's `error`) as a [`ProviderError`].
pub fn error_from_json(status: Option<u16>, json: &Value) -> Option<ProviderError> {
    let body = ErrorBody::deserialize(json).ok()?;
    error_from_detail(status, &body.error)
}

/// A non-2xx answer, classified, with Anthropic's message and when to come back.
pub(crate) fn error_from_answer(answer: &Answer, now: SystemTime) -> ProviderError {
    let error = http::error_of(PROVIDER, answer, |status, body: ErrorBody| {
        error_from_detail(status, &body.error)
    });
    ProviderError {
        retry_after: retry_after(&answer.headers, error.kind == ErrorKind::RateLimited, now),
        should_retry: http::should_retry(&answer.headers),
        ..error
    }
}

/// `retry-after` (and `retry-after-ms`), then for a rate limit the
/// `anthropic-ratelimit-*-reset` times (RFC 3339) of the limits that ran out.
pub fn retry_after(headers: &HeaderMap, rate_limited: bool, now: SystemTime) -> Option<Duration> {
    if let Some(wait) = wait::retry_after_headers(headers, now) {
        return Some(wait);
    }
    if !rate_limited {
        return None;
    }
    wait::wait_from_limits(&limit_states(headers, now))
}

/// The `anthropic-ratelimit-*-remaining` / `-reset` pairs of an answer.
fn limit_states(headers: &HeaderMap, now: SystemTime) -> [LimitState; 4] {
    let limit = |kind: &str| LimitState {
        exhausted: http::header(headers, &format!("anthropic-ratelimit-{kind}-remaining"))
            .and_then(|v| v.parse::<u64>().ok())
            == Some(0),
        reset: http::header(headers, &format!("anthropic-ratelimit-{kind}-reset"))
            .and_then(|v| wait::until_rfc3339(v, now)),
    };
    [
        limit("requests"),
        limit("tokens"),
        limit("input-tokens"),
        limit("output-tokens"),
    ]
}
