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

use super::canonical::{
    self, CanonicalRequest, ChoiceParts, CompletionParts, FinishReason, Image, Message,
    OutToolCall, ParamPolicy, Part, ReasoningEffort, ResponseFormat, ToolChoice,
};
use super::http::{self, Answer};
use super::sse;
use super::stream::{self, ChunkHead, ChunkStream, Translate};
use super::wait::{self, LimitState};
use super::{Call, Completion, ErrorKind, Provider, ProviderError, Usage};
use async_trait::async_trait;
use reqwest::header::HeaderMap;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::time::{Duration, SystemTime};

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

    fn post(&self, call: &Call<'_>, body: &Value) -> reqwest::RequestBuilder {
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

#[async_trait]
impl Provider for AnthropicProvider {
    async fn chat(&self, call: Call<'_>) -> Result<Completion, ProviderError> {
        let body = request_body(&call, false)?;
        http::exchange(
            PROVIDER,
            call.api_key,
            call.timeout,
            self.post(&call, &body),
            parse_message,
            |answer| error_from_answer(answer, SystemTime::now()),
            key_spent_for,
        )
        .await
    }

    async fn chat_stream(&self, call: Call<'_>) -> Result<ChunkStream, ProviderError> {
        let body = request_body(&call, true)?;
        stream::open(
            PROVIDER,
            &call,
            self.post(&call, &body),
            |answer| error_from_answer(answer, SystemTime::now()),
            key_spent_for,
            AnthropicStream::new(call.model),
        )
        .await
    }
}

/// Anthropic's event stream → canonical chunks (section 3.3 of the provider reference).
///
/// `message_start` opens the answer (id, model, input usage); each `tool_use` block becomes a
/// tool call with the next OpenAI index, its `input_json_delta` fragments the argument deltas;
/// `message_delta` carries the stop reason and the cumulative usage; `message_stop` ends it.
/// `ping` and event types newer than this code are skipped, as the SDK does.
#[derive(Debug)]
pub struct AnthropicStream {
    head: ChunkHead,
    /// Content block index → the tool call it streams.
    tools: HashMap<u64, StreamedTool>,
    usage: Map<String, Value>,
    stop_reason: Option<String>,
    done: bool,
}

/// A `tool_use` block being streamed.
#[derive(Debug)]
struct StreamedTool {
    /// Its index among the answer's tool calls.
    index: u64,
    /// Whether any argument text arrived: a call without arguments streams only an empty
    /// `partial_json`, and its arguments are `{}` (as the non-streamed answer's `input` says),
    /// not the empty string, which no JSON parser takes.
    has_arguments: bool,
}

impl AnthropicStream {
    pub fn new(model: &str) -> Self {
        AnthropicStream {
            head: ChunkHead {
                id: String::new(),
                created: canonical::unix_now(),
                model: model.to_string(),
            },
            tools: HashMap::new(),
            usage: Map::new(),
            stop_reason: None,
            done: false,
        }
    }

    /// The counts of a `usage` object over those seen so far: `message_delta` counts are
    /// cumulative, so the latest of each wins.
    fn take_usage(&mut self, usage: Option<&Value>) {
        if let Some(Value::Object(counts)) = usage {
            for (name, count) in counts {
                if count.is_u64() {
                    self.usage.insert(name.clone(), count.clone());
                }
            }
        }
    }
}

impl Translate for AnthropicStream {
    fn event(&mut self, event: sse::Event) -> Result<Vec<Value>, ProviderError> {
        let data = stream::event_json(PROVIDER, &event.data)?;
        let kind = data
            .get("type")
            .and_then(Value::as_str)
            .or(event.event.as_deref())
            .unwrap_or_default();
        let head = &self.head;
        let chunks = match kind {
            "message_start" => {
                let message = data.get("message").unwrap_or(&Value::Null);
                if let Some(id) = message.get("id").and_then(Value::as_str) {
                    self.head.id = id.to_string();
                }
                if let Some(model) = message.get("model").and_then(Value::as_str) {
                    self.head.model = model.to_string();
                }
                self.take_usage(message.get("usage"));
                vec![self.head.role(0)]
            }
            "content_block_start" => {
                let block = data.get("content_block").unwrap_or(&Value::Null);
                let at = data.get("index").and_then(Value::as_u64).unwrap_or(0);
                match block.get("type").and_then(Value::as_str) {
                    Some("text") => match block.get("text").and_then(Value::as_str) {
                        Some(text) if !text.is_empty() => vec![head.content(0, text)],
                        _ => Vec::new(),
                    },
                    Some("tool_use") => {
                        let index = self.tools.len() as u64;
                        self.tools.insert(
                            at,
                            StreamedTool {
                                index,
                                has_arguments: false,
                            },
                        );
                        vec![self.head.tool_call(
                            0,
                            json!({"index": index, "id": block.get("id"), "type": "function",
                                   "function": {"name": block.get("name"), "arguments": ""}}),
                        )]
                    }
                    _ => Vec::new(),
                }
            }
            "content_block_delta" => {
                let delta = data.get("delta").unwrap_or(&Value::Null);
                let at = data.get("index").and_then(Value::as_u64).unwrap_or(0);
                match delta.get("type").and_then(Value::as_str) {
                    Some("text_delta") => {
                        let text = delta.get("text").and_then(Value::as_str).unwrap_or("");
                        vec![head.content(0, text)]
                    }
                    Some("input_json_delta") => match self.tools.get_mut(&at) {
                        Some(tool) => {
                            let partial = delta
                                .get("partial_json")
                                .and_then(Value::as_str)
                                .unwrap_or("");
                            tool.has_arguments |= !partial.is_empty();
                            vec![head.tool_call(
                                0,
                                json!({"index": tool.index, "function": {"arguments": partial}}),
                            )]
                        }
                        None => Vec::new(),
                    },
                    // Thinking, signatures and citations have no canonical delta.
                    _ => Vec::new(),
                }
            }
            "content_block_stop" => {
                let at = data.get("index").and_then(Value::as_u64).unwrap_or(0);
                match self.tools.get(&at) {
                    Some(tool) if !tool.has_arguments => vec![head.tool_call(
                        0,
                        json!({"index": tool.index, "function": {"arguments": "{}"}}),
                    )],
                    _ => Vec::new(),
                }
            }
            "message_delta" => {
                if let Some(reason) = data.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    self.stop_reason = Some(reason.to_string());
                }
                self.take_usage(data.get("usage"));
                Vec::new()
            }
            "message_stop" => {
                self.done = true;
                let native = self.stop_reason.clone().ok_or_else(|| {
                    http::invalid(PROVIDER, 200, "the stream ended with no stop_reason")
                })?;
                let reason = FinishReason::from_anthropic(&native)
                    .ok_or_else(|| canonical::unfinished(PROVIDER, 200, &native))?;
                let usage = parse_usage(&Value::Object(self.usage.clone()))
                    .ok_or_else(|| http::invalid(PROVIDER, 200, "the stream carried no usage"))?;
                vec![
                    self.head.finish(0, reason, &native),
                    self.head.usage(&usage, None),
                ]
            }
            "error" => {
                return Err(error_from_json(None, &data).unwrap_or_else(|| {
                    ProviderError::new(PROVIDER, ErrorKind::ServerError, None, "an error event")
                }))
            }
            _ => Vec::new(),
        };
        Ok(chunks)
    }

    fn finished(&self) -> bool {
        self.done
    }

    fn end(&mut self) -> Result<Vec<Value>, ProviderError> {
        if self.done {
            Ok(Vec::new())
        } else {
            Err(stream::incomplete(PROVIDER, "message_stop"))
        }
    }
}

/// The Messages request for a canonical one.
pub fn request_body(call: &Call<'_>, stream: bool) -> Result<Value, ProviderError> {
    let request = CanonicalRequest::read(call.request).map_err(|p| p.into_error(PROVIDER))?;
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

    let mut body = Map::new();
    body.insert("model".into(), call.model.into());
    let max_tokens = request
        .max_tokens
        .or(call.options.default_max_tokens.map(u64::from))
        .unwrap_or(u64::from(DEFAULT_MAX_TOKENS));
    body.insert("max_tokens".into(), max_tokens.into());
    if let Some(system) = &request.system {
        body.insert("system".into(), system.as_str().into());
    }
    body.insert("messages".into(), messages(&request.messages).into());
    if let Some(mut temperature) = request.temperature {
        if temperature > 1.0 {
            policy.unsupported_because(
                "temperature",
                Some(&format!(
                    "{temperature} is above 1; Anthropic's range is 0 to 1"
                )),
            )?;
            temperature = 1.0;
        }
        body.insert("temperature".into(), temperature.into());
    }
    if let Some(top_p) = request.top_p {
        // Anthropic's documentation says to alter one or the other, and its models after the
        // Claude 3 family refuse a request with both ("temperature and top_p cannot both be
        // specified for this model"), which OpenAI clients often send by default.
        let both_refused = request.temperature.is_some() && !call.model.starts_with("claude-3");
        if both_refused {
            policy.unsupported_because(
                "top_p",
                Some("beside temperature; Anthropic's models take one of the two, not both"),
            )?;
        } else {
            body.insert("top_p".into(), top_p.into());
        }
    }
    if let Some(top_k) = request.top_k {
        body.insert("top_k".into(), top_k.into());
    }
    if !request.stop.is_empty() {
        body.insert("stop_sequences".into(), request.stop.clone().into());
    }
    if let Some(user) = &request.user {
        body.insert("metadata".into(), json!({ "user_id": user }));
    }
    if !request.tools.is_empty() {
        let tools: Vec<Value> = request
            .tools
            .iter()
            .map(|tool| {
                let mut t = json!({
                    "name": tool.name,
                    // Required by the API; "no arguments" is an empty object schema.
                    "input_schema": tool.parameters.clone()
                        .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
                });
                if let Some(description) = &tool.description {
                    t["description"] = description.as_str().into();
                }
                // Anthropic's strict tool use: the same promise as OpenAI's.
                if tool.strict {
                    t["strict"] = true.into();
                }
                t
            })
            .collect();
        body.insert("tools".into(), tools.into());
    }
    if let Some(choice) = tool_choice(&request) {
        body.insert("tool_choice".into(), choice);
    }
    let mut output_config = Map::new();
    match &request.response_format {
        None | Some(ResponseFormat::Text) => {}
        Some(ResponseFormat::JsonObject) => policy.unsupported_because(
            "response_format",
            Some("json_object; use json_schema, which maps to output_config.format"),
        )?,
        Some(ResponseFormat::JsonSchema { schema, .. }) => {
            output_config.insert(
                "format".into(),
                json!({"type": "json_schema", "schema": schema}),
            );
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
        Some(effort) => {
            output_config.insert("effort".into(), effort.as_str().into());
        }
    }
    if !output_config.is_empty() {
        body.insert("output_config".into(), output_config.into());
    }
    if stream {
        body.insert("stream".into(), true.into());
    }
    Ok(Value::Object(body))
}

/// `tool_choice`, with `parallel_tool_calls: false` as `disable_parallel_tool_use`.
fn tool_choice(request: &CanonicalRequest) -> Option<Value> {
    let no_parallel = request.parallel_tool_calls == Some(false);
    let mut choice = match &request.tool_choice {
        Some(ToolChoice::None) => return Some(json!({"type": "none"})),
        Some(ToolChoice::Auto) => json!({"type": "auto"}),
        Some(ToolChoice::Required) => json!({"type": "any"}),
        Some(ToolChoice::Function(name)) => json!({"type": "tool", "name": name}),
        None if no_parallel && !request.tools.is_empty() => json!({"type": "auto"}),
        None => return None,
    };
    if no_parallel {
        choice["disable_parallel_tool_use"] = true.into();
    }
    Some(choice)
}

/// The conversation as Messages turns. Consecutive messages of one role become one turn, so
/// every run of `tool` messages (and a user message right after them) is one user message.
fn messages(conversation: &[Message]) -> Vec<Value> {
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for message in conversation {
        let (role, blocks) = match message {
            Message::User(parts) => (
                "user",
                parts
                    .iter()
                    .filter(|part| !matches!(part, Part::Text(text) if is_blank(text)))
                    .map(user_block)
                    .collect(),
            ),
            Message::Assistant { text, tool_calls } => {
                let mut blocks = Vec::new();
                if let Some(text) = text.as_deref().filter(|text| !is_blank(text)) {
                    blocks.push(json!({"type": "text", "text": text}));
                }
                for call in tool_calls {
                    blocks.push(json!({
                        "type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments,
                    }));
                }
                ("assistant", blocks)
            }
            Message::Tool {
                tool_call_id,
                content,
            } => (
                "user",
                vec![
                    json!({"type": "tool_result", "tool_use_id": tool_call_id, "content": content}),
                ],
            ),
        };
        // An empty turn is refused by the API and says nothing.
        if blocks.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some((last, existing)) if *last == role => existing.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    turns
        .into_iter()
        .map(|(role, content)| json!({"role": role, "content": content}))
        .collect()
}

/// Text the API refuses as a block ("text content blocks must contain non-whitespace
/// text"), which OpenAI takes and which says nothing: such a block is left out.
fn is_blank(text: &str) -> bool {
    text.trim().is_empty()
}

fn user_block(part: &Part) -> Value {
    match part {
        Part::Text(text) => json!({"type": "text", "text": text}),
        Part::Image(Image::Url(url)) => {
            json!({"type": "image", "source": {"type": "url", "url": url}})
        }
        Part::Image(Image::Base64 { media_type, data }) => json!({
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        }),
    }
}

/// A 2xx body: a `message` with content blocks, a stop reason and usage.
pub fn parse_message(status: u16, body: &[u8]) -> Result<Completion, ProviderError> {
    message_from_json(status, &http::json_body(PROVIDER, status, body)?)
}

/// [`parse_message`] for a message already read as JSON (a batch result's `message`).
pub fn message_from_json(status: u16, message: &Value) -> Result<Completion, ProviderError> {
    let invalid = |message: String| http::invalid(PROVIDER, status, message);
    if message.get("type").and_then(Value::as_str) == Some("error") {
        let text = message
            .pointer("/error/message")
            .and_then(Value::as_str)
            .unwrap_or("no message");
        return Err(invalid(format!(
            "a success status carrying an error: {text}"
        )));
    }
    let blocks = message
        .get("content")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("the response has no \"content\" blocks".into()))?;
    let usage = message.get("usage").and_then(parse_usage).ok_or_else(|| {
        invalid("the response has no valid \"usage\" (input_tokens, output_tokens)".into())
    })?;
    let stop_reason = message
        .get("stop_reason")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("the response has no \"stop_reason\"".into()))?;
    let finish_reason = FinishReason::from_anthropic(stop_reason)
        .ok_or_else(|| canonical::unfinished(PROVIDER, status, stop_reason))?;
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for block in blocks {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(block.get("text").and_then(Value::as_str).unwrap_or("")),
            Some("tool_use") => tool_calls.push(OutToolCall {
                id: block
                    .get("id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                name: block
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                arguments: block
                    .get("input")
                    .cloned()
                    .unwrap_or_else(|| json!({}))
                    .to_string(),
                extra_content: None,
            }),
            // Thinking and server-tool blocks have no place in the canonical message.
            _ => {}
        }
    }
    let content = if text.is_empty() && !tool_calls.is_empty() {
        None
    } else {
        Some(text)
    };
    let str_field = |name: &str| {
        message
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let parts = CompletionParts {
        id: str_field("id"),
        created: canonical::unix_now(),
        model: str_field("model"),
        choices: vec![ChoiceParts {
            index: 0,
            content,
            refusal: None,
            tool_calls,
            finish_reason,
            native_finish_reason: Some(stop_reason.to_string()),
        }],
        usage,
        reasoning_tokens: None,
    };
    Ok(parts.into_completion(status))
}

/// Anthropic's usage in the canonical buckets (see the module doc for the arithmetic).
pub fn parse_usage(usage: &Value) -> Option<Usage> {
    let count = |name: &str| usage.get(name).and_then(Value::as_u64);
    let written = count("cache_creation_input_tokens").unwrap_or(0);
    let read = count("cache_read_input_tokens").unwrap_or(0);
    Some(Usage {
        prompt_tokens: count("input_tokens")? + written + read,
        completion_tokens: count("output_tokens")?,
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

/// An `{"type":"error","error":{"type","message"}}` object (a body, or a stream event) as a
/// [`ProviderError`].
pub fn error_from_json(status: Option<u16>, json: &Value) -> Option<ProviderError> {
    let error = json.get("error")?;
    let message = error
        .get("message")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())?;
    let spend_cap = error.pointer("/details/error_code").and_then(Value::as_str)
        == Some("enforced_spend_limit_reached");
    let kind = if spend_cap {
        ErrorKind::QuotaExhausted
    } else {
        classify(status, error.get("type").and_then(Value::as_str), message)
    };
    Some(ProviderError::new(PROVIDER, kind, status, message))
}

/// A non-2xx answer, classified, with Anthropic's message and when to come back.
pub(crate) fn error_from_answer(answer: &Answer, now: SystemTime) -> ProviderError {
    let error = http::error_of(PROVIDER, answer, error_from_json);
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

/// How long the key is spent for, when a successful answer's headers (plain or streamed) say
/// a limit has nothing left.
fn key_spent_for(headers: &HeaderMap) -> Option<Duration> {
    wait::exhausted_for(&limit_states(headers, SystemTime::now()))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::ChatRequest;
    use crate::providers::http::tests::headers;
    use crate::providers::CallOptions;
    use reqwest::StatusCode;

    fn body_for(request: Value, options: CallOptions) -> Result<Value, ProviderError> {
        body_on("claude-sonnet-4-5", request, options)
    }

    fn body_on(model: &str, request: Value, options: CallOptions) -> Result<Value, ProviderError> {
        let request: ChatRequest = serde_json::from_value(request).unwrap();
        request_body(
            &Call {
                model,
                api_key: "k",
                request: &request,
                timeout: Duration::from_secs(1),
                stream_idle_timeout: None,
                options,
            },
            false,
        )
    }

    fn body(request: Value) -> Value {
        body_for(request, CallOptions::default()).unwrap()
    }

    #[test]
    fn a_plain_request_hoists_the_system_prompt_and_sets_max_tokens() {
        let b = body(json!({"model": "smart", "messages": [
            {"role": "system", "content": "Be terse."},
            {"role": "developer", "content": "No emojis."},
            {"role": "user", "content": "Hello"},
        ], "temperature": 0.3, "stop": ["END"], "top_k": 40, "user": "u-1"}));
        assert_eq!(
            b,
            json!({
                "model": "claude-sonnet-4-5",
                "max_tokens": DEFAULT_MAX_TOKENS,
                "system": "Be terse.\n\nNo emojis.",
                "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}],
                "temperature": 0.3,
                "top_k": 40,
                "stop_sequences": ["END"],
                "metadata": {"user_id": "u-1"},
            })
        );
        let b = body_for(
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}),
            CallOptions {
                default_max_tokens: Some(1000),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(b["max_tokens"], 1000);
        let b = body(
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "max_completion_tokens": 50}),
        );
        assert_eq!(b["max_tokens"], 50);
    }

    #[test]
    fn images_become_image_blocks() {
        let b = body(
            json!({"model": "m", "messages": [{"role": "user", "content": [
                {"type": "text", "text": "What is it?"},
                {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
            ]}]}),
        );
        assert_eq!(
            b["messages"][0]["content"],
            json!([
                {"type": "text", "text": "What is it?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQ"}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
            ])
        );
    }

    #[test]
    fn a_tool_conversation_merges_results_and_keeps_ids() {
        let b = body(json!({"model": "m", "messages": [
            {"role": "user", "content": "Weather in Oslo and Bergen?"},
            {"role": "assistant", "content": "Checking both.", "tool_calls": [
                {"id": "toolu_01A", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}},
                {"id": "toolu_01B", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Bergen\"}"}},
            ]},
            {"role": "tool", "tool_call_id": "toolu_01A", "content": "3 C"},
            {"role": "tool", "tool_call_id": "toolu_01B", "content": "7 C"},
            {"role": "user", "content": "Which is warmer?"},
        ],
        "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather now",
                   "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}],
        "tool_choice": "required", "parallel_tool_calls": false}));
        assert_eq!(
            b["messages"],
            json!([
                {"role": "user", "content": [{"type": "text", "text": "Weather in Oslo and Bergen?"}]},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "Checking both."},
                    {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"city": "Oslo"}},
                    {"type": "tool_use", "id": "toolu_01B", "name": "get_weather", "input": {"city": "Bergen"}},
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_01A", "content": "3 C"},
                    {"type": "tool_result", "tool_use_id": "toolu_01B", "content": "7 C"},
                    {"type": "text", "text": "Which is warmer?"},
                ]},
            ])
        );
        assert_eq!(
            b["tools"],
            json!([{"name": "get_weather", "description": "Weather now",
                    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}])
        );
        assert_eq!(
            b["tool_choice"],
            json!({"type": "any", "disable_parallel_tool_use": true})
        );
    }

    /// OpenAI's `strict` on a function is Anthropic's `strict` on the tool; a `strict` that
    /// is not a boolean is a field error.
    #[test]
    fn a_strict_tool_stays_strict() {
        let tools = |strict: Value| {
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
                   "tools": [{"type": "function", "function": {"name": "now", "strict": strict}}]})
        };
        assert_eq!(body(tools(json!(true)))["tools"][0]["strict"], true);
        assert!(body(tools(json!(false)))["tools"][0]
            .get("strict")
            .is_none());
        let e = body_for(tools(json!("yes")), CallOptions::default()).unwrap_err();
        assert!(
            e.message.contains("tools[0].function.strict") && e.message.contains("true or false"),
            "{}",
            e.message
        );
    }

    #[test]
    fn tool_choices_map() {
        let with = |choice: Value| {
            body(
                json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
                "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": choice}),
            )
        };
        assert_eq!(with(json!("auto"))["tool_choice"], json!({"type": "auto"}));
        assert_eq!(with(json!("none"))["tool_choice"], json!({"type": "none"}));
        assert_eq!(
            with(json!({"type": "function", "function": {"name": "f"}}))["tool_choice"],
            json!({"type": "tool", "name": "f"})
        );
        assert_eq!(
            with(json!("auto"))["tools"][0]["input_schema"],
            json!({"type": "object", "properties": {}})
        );
    }

    #[test]
    fn json_schema_goes_to_output_config_and_json_object_is_refused() {
        let schema = json!({"type": "object", "properties": {"a": {"type": "integer"}}});
        let b = body(
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": schema}}}),
        );
        assert_eq!(
            b["output_config"],
            json!({"format": {"type": "json_schema", "schema": schema}})
        );
        let e = body_for(
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
                "response_format": {"type": "json_object"}}),
            CallOptions::default(),
        )
        .unwrap_err();
        assert!(
            e.message
                .starts_with("anthropic does not support \"response_format\""),
            "{}",
            e.message
        );
    }

    /// `reasoning_effort` from low up is Anthropic's `output_config.effort`, beside a JSON
    /// schema's format; `none` and `minimal` have no counterpart and are refused by name.
    #[test]
    fn reasoning_effort_becomes_output_config_effort() {
        let schema = json!({"type": "object"});
        let b = body(
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
            "reasoning_effort": "medium",
            "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": schema}}}),
        );
        assert_eq!(
            b["output_config"],
            json!({"format": {"type": "json_schema", "schema": schema}, "effort": "medium"})
        );
        let b = body(
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
            "reasoning_effort": "xhigh"}),
        );
        assert_eq!(b["output_config"], json!({"effort": "xhigh"}));
        for effort in ["none", "minimal"] {
            let e = body_for(
                json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
                    "reasoning_effort": effort}),
                CallOptions::default(),
            )
            .unwrap_err();
            assert!(
                e.message.starts_with(&format!(
                    "anthropic does not support \"reasoning_effort\" ({effort}; "
                )),
                "{}",
                e.message
            );
        }
    }

    /// Anthropic refuses text blocks that are empty or only whitespace, which OpenAI
    /// takes: they are left out, and a turn left with nothing is left out with them.
    #[test]
    fn blank_text_blocks_are_left_out() {
        let b = body(json!({"model": "m", "messages": [
            {"role": "user", "content": ""},
            {"role": "user", "content": [{"type": "text", "text": " \n"}, {"type": "text", "text": "Time?"}]},
            {"role": "assistant", "content": "  ", "tool_calls": [{"id": "call_1", "type": "function",
                "function": {"name": "now", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "noon"},
        ]}));
        assert_eq!(
            b["messages"],
            json!([
                {"role": "user", "content": [{"type": "text", "text": "Time?"}]},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "call_1", "name": "now", "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_1", "content": "noon"}]},
            ])
        );
    }

    /// Models after Claude 3 refuse `temperature` and `top_p` together: `top_p` is refused
    /// by name beside `temperature` (or dropped), alone it passes, and Claude 3 takes both.
    #[test]
    fn top_p_beside_temperature_is_refused_after_claude_3() {
        let both = json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
                          "temperature": 0.5, "top_p": 0.9});
        let e = body_for(both.clone(), CallOptions::default()).unwrap_err();
        assert!(
            e.message
                .starts_with("anthropic does not support \"top_p\" (beside temperature"),
            "{}",
            e.message
        );
        let dropped = body_for(
            both.clone(),
            CallOptions {
                drop_unsupported_params: true,
                ..CallOptions::default()
            },
        )
        .unwrap();
        assert_eq!(dropped["temperature"], 0.5);
        assert!(dropped.get("top_p").is_none());
        let alone = body(
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
                                "top_p": 0.9}),
        );
        assert_eq!(alone["top_p"], 0.9);
        let older = body_on("claude-3-5-haiku-latest", both, CallOptions::default()).unwrap();
        assert_eq!(
            (older["temperature"].clone(), older["top_p"].clone()),
            (json!(0.5), json!(0.9))
        );
    }

    #[test]
    fn unsupported_parameters_are_refused_unless_dropped() {
        let request = |extra: Value| {
            let mut r = json!({"model": "m", "messages": [{"role": "user", "content": "x"}]});
            r.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            r
        };
        for (extra, name) in [
            (json!({"logit_bias": {"1": 5}}), "logit_bias"),
            (json!({"n": 2}), "n"),
            (json!({"seed": 3}), "seed"),
            (json!({"frequency_penalty": 0.5}), "frequency_penalty"),
            (json!({"logprobs": true}), "logprobs"),
            (json!({"temperature": 1.5}), "temperature"),
        ] {
            let e = body_for(request(extra.clone()), CallOptions::default()).unwrap_err();
            assert_eq!(e.kind, ErrorKind::BadRequest);
            assert!(
                e.message
                    .starts_with(&format!("anthropic does not support \"{name}\"")),
                "{}",
                e.message
            );
            let lenient = CallOptions {
                drop_unsupported_params: true,
                ..Default::default()
            };
            let b = body_for(request(extra), lenient).unwrap();
            assert!(b.get(name).is_none() || name == "temperature", "{b}");
        }
        let lenient = CallOptions {
            drop_unsupported_params: true,
            ..Default::default()
        };
        let b = body_for(request(json!({"temperature": 1.5})), lenient).unwrap();
        assert_eq!(b["temperature"], 1.0);
        // Defaults ask for nothing and are accepted.
        body(request(
            json!({"n": 1, "logprobs": false, "presence_penalty": 0, "store": true}),
        ));
    }

    /// The documented example response with a tool call.
    const TOOL_USE: &str = r#"{"id":"msg_01Aq9w938a90dw8q","type":"message","role":"assistant",
        "model":"claude-sonnet-4-5","content":[{"type":"text","text":"I'll check."},
        {"type":"tool_use","id":"toolu_01A09q90qw90lq917835lq9","name":"get_weather","input":{"city":"Oslo"}}],
        "stop_reason":"tool_use","stop_sequence":null,
        "usage":{"input_tokens":412,"output_tokens":57,"cache_creation_input_tokens":1000,"cache_read_input_tokens":2000}}"#;

    #[test]
    fn a_tool_use_answer_becomes_tool_calls_with_the_ids_given() {
        let c = parse_message(200, TOOL_USE.as_bytes()).unwrap();
        let r = &c.response;
        assert_eq!(r["object"], "chat.completion");
        assert_eq!(r["id"], "msg_01Aq9w938a90dw8q");
        assert_eq!(r["model"], "claude-sonnet-4-5");
        let choice = &r["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls");
        assert_eq!(choice["native_finish_reason"], "tool_use");
        assert_eq!(choice["message"]["content"], "I'll check.");
        let call = &choice["message"]["tool_calls"][0];
        assert_eq!(call["id"], "toolu_01A09q90qw90lq917835lq9");
        assert_eq!(call["function"]["name"], "get_weather");
        assert_eq!(call["function"]["arguments"], "{\"city\":\"Oslo\"}");
        // The cache arithmetic: 412 + 1000 + 2000 prompt tokens, 2000 of them cache reads.
        assert_eq!(
            c.usage,
            Usage {
                prompt_tokens: 3412,
                completion_tokens: 57,
                cached_tokens: 2000,
                cache_write_tokens: 1000,
            }
        );
        assert_eq!(r["usage"]["total_tokens"], 3469);
        assert_eq!(r["usage"]["prompt_tokens_details"]["cached_tokens"], 2000);

        // The answer's tool call goes back out with the same id on the next turn.
        let mut next = vec![
            json!({"role": "user", "content": "Weather in Oslo?"}),
            choice["message"].clone(),
        ];
        next.push(json!({"role": "tool", "tool_call_id": call["id"], "content": "3 C"}));
        let b = body(json!({"model": "m", "messages": next}));
        assert_eq!(
            b["messages"][1]["content"][1]["id"],
            "toolu_01A09q90qw90lq917835lq9"
        );
        assert_eq!(
            b["messages"][2]["content"][0]["tool_use_id"],
            "toolu_01A09q90qw90lq917835lq9"
        );
    }

    #[test]
    fn stop_reasons_map_and_pause_turn_is_retried() {
        let with = |reason: &str| {
            let text = TOOL_USE.replace(
                "\"tool_use\",\"stop_sequence\"",
                &format!("\"{reason}\",\"stop_sequence\""),
            );
            parse_message(200, text.as_bytes())
        };
        assert_eq!(
            with("end_turn").unwrap().response["choices"][0]["finish_reason"],
            "stop"
        );
        assert_eq!(
            with("max_tokens").unwrap().response["choices"][0]["finish_reason"],
            "length"
        );
        assert_eq!(
            with("refusal").unwrap().response["choices"][0]["finish_reason"],
            "content_filter"
        );
        let e = with("pause_turn").unwrap_err();
        assert!(e.kind.is_retryable());
        assert!(e.message.contains("pause_turn"), "{}", e.message);
        let e = parse_message(200, br#"{"type":"message","content":[]}"#).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidResponse);
    }

    fn answer(status: u16, headers: HeaderMap, body: &str) -> Answer {
        Answer {
            status: StatusCode::from_u16(status).unwrap(),
            headers,
            body: bytes::Bytes::copy_from_slice(body.as_bytes()),
        }
    }

    fn error_body(kind: &str, message: &str) -> String {
        json!({"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_1"})
            .to_string()
    }

    #[test]
    fn every_error_class() {
        use ErrorKind::*;
        let now = SystemTime::now();
        for (status, kind, message, expected) in [
            (400, "invalid_request_error", "messages: field required", BadRequest),
            (401, "authentication_error", "invalid x-api-key", Unauthorized),
            (403, "permission_error", "no access", Unauthorized),
            (404, "not_found_error", "model: claude-x", NotFound),
            (413, "request_too_large", "too big", BadRequest),
            (429, "rate_limit_error", "Number of requests has exceeded your rate limit", RateLimited),
            (500, "api_error", "Internal server error", ServerError),
            (529, "overloaded_error", "Overloaded", ServerError),
            (402, "billing_error", "Payment required", QuotaExhausted),
            (400, "invalid_request_error", "Your credit balance is too low to access the Anthropic API.", QuotaExhausted),
            (400, "invalid_request_error", "You have reached your specified API usage limits. You will regain access on 2026-12-01 at 00:00 UTC.", QuotaExhausted),
        ] {
            let e = error_from_answer(&answer(status, HeaderMap::new(), &error_body(kind, message)), now);
            assert_eq!(e.kind, expected, "{status} {kind}");
            assert_eq!(e.message, message);
            assert_eq!(e.status, Some(status));
            assert_eq!(e.provider, "anthropic");
            // Anthropic's error object has no param, and none is guessed from the message.
            assert_eq!(e.param, None);
        }
        let spend_cap = json!({"type": "error", "error": {"type": "rate_limit_error",
            "message": "monthly limit", "details": {"error_code": "enforced_spend_limit_reached"}}});
        let e = error_from_answer(&answer(429, HeaderMap::new(), &spend_cap.to_string()), now);
        assert_eq!(e.kind, QuotaExhausted);
        let e = error_from_answer(
            &answer(502, HeaderMap::new(), "<html>bad gateway</html>"),
            now,
        );
        assert_eq!(
            (e.kind, e.message.as_str()),
            (ServerError, "<html>bad gateway</html>")
        );
    }

    #[test]
    fn rate_limits_say_when_to_come_back() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000); // 2023-11-14T22:13:20Z
        let body = error_body("rate_limit_error", "slow down");
        let h = headers(&[("retry-after", "7")]);
        let e = error_from_answer(&answer(429, h, &body), now);
        assert_eq!(e.retry_after, Some(Duration::from_secs(7)));
        let h = headers(&[
            ("anthropic-ratelimit-requests-remaining", "10"),
            ("anthropic-ratelimit-requests-reset", "2023-11-14T22:13:21Z"),
            ("anthropic-ratelimit-input-tokens-remaining", "0"),
            (
                "anthropic-ratelimit-input-tokens-reset",
                "2023-11-14T22:13:50Z",
            ),
        ]);
        let e = error_from_answer(&answer(429, h.clone(), &body), now);
        assert_eq!(e.retry_after, Some(Duration::from_secs(30)));
        // Not a rate limit: the reset times say nothing about this failure.
        let e = error_from_answer(
            &answer(529, h, &error_body("overloaded_error", "Overloaded")),
            now,
        );
        assert_eq!(e.retry_after, None);
    }

    /// The documented streaming example with text and a tool call (and a ping).
    const STREAM: &str = concat!(
        "event: message_start\n",
        "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_014p7gG3wDgGV9EUtLvnow3U\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5\",\"stop_sequence\":null,\"usage\":{\"input_tokens\":472,\"output_tokens\":2,\"cache_creation_input_tokens\":100,\"cache_read_input_tokens\":50},\"content\":[],\"stop_reason\":null}}\n\n",
        "event: content_block_start\n",
        "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        "event: ping\n",
        "data: {\"type\": \"ping\"}\n\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Okay, let's check\"}}\n\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\" the weather.\"}}\n\n",
        "event: content_block_stop\n",
        "data: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        "event: content_block_start\n",
        "data: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_01T1x1fJ34qAmk2tNTrN7Up6\",\"name\":\"get_weather\",\"input\":{}}}\n\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\"}}\n\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"location\\\":\"}}\n\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\" \\\"San Francisco, CA\\\"}\"}}\n\n",
        "event: content_block_stop\n",
        "data: {\"type\":\"content_block_stop\",\"index\":1}\n\n",
        "event: message_delta\n",
        "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":89}}\n\n",
        "event: message_stop\n",
        "data: {\"type\":\"message_stop\"}\n\n",
    );

    #[tokio::test]
    async fn the_event_stream_becomes_canonical_chunks_with_tool_call_deltas() {
        let items =
            stream::replay_all_splits(|| AnthropicStream::new("m"), STREAM.as_bytes()).await;
        let chunks: Vec<Value> = items.iter().map(|i| i.clone().unwrap()).collect();
        assert_eq!(chunks[0]["object"], "chat.completion.chunk");
        assert_eq!(chunks[0]["id"], "msg_014p7gG3wDgGV9EUtLvnow3U");
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        let tool_deltas: Vec<&Value> = chunks
            .iter()
            .filter_map(|c| c.pointer("/choices/0/delta/tool_calls/0"))
            .collect();
        assert_eq!(tool_deltas[0]["id"], "toolu_01T1x1fJ34qAmk2tNTrN7Up6");
        assert_eq!(tool_deltas[0]["function"]["name"], "get_weather");
        assert!(tool_deltas.iter().all(|d| d["index"] == 0));
        assert_eq!(tool_deltas[2]["function"]["arguments"], "{\"location\":");
        let last = chunks.last().unwrap();
        assert_eq!(last["choices"], json!([]));
        assert_eq!(last["usage"]["prompt_tokens"], 622);

        let done = stream::fold(items).await.unwrap();
        let choice = &done.response["choices"][0];
        assert_eq!(
            choice["message"]["content"],
            "Okay, let's check the weather."
        );
        assert_eq!(
            choice["message"]["tool_calls"][0]["function"]["arguments"],
            "{\"location\": \"San Francisco, CA\"}"
        );
        assert_eq!(choice["finish_reason"], "tool_calls");
        assert_eq!(choice["native_finish_reason"], "tool_use");
        assert_eq!(
            done.usage,
            Usage {
                prompt_tokens: 622,
                completion_tokens: 89,
                cached_tokens: 50,
                cache_write_tokens: 100
            }
        );
    }

    /// A tool without parameters streams one empty `partial_json`; its arguments are `{}`,
    /// as the same answer unstreamed has them, not an empty string no JSON parser takes.
    #[tokio::test]
    async fn a_tool_call_without_arguments_streams_an_empty_object() {
        let stream = concat!(
            "event: message_start\n",
            "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"m\",\"stop_reason\":null,\"usage\":{\"input_tokens\":40,\"output_tokens\":1}}}\n\n",
            "event: content_block_start\n",
            "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"get_time\",\"input\":{}}}\n\n",
            "event: content_block_delta\n",
            "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\"}}\n\n",
            "event: content_block_stop\n",
            "data: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
            "event: message_delta\n",
            "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"},\"usage\":{\"output_tokens\":12}}\n\n",
            "event: message_stop\n",
            "data: {\"type\":\"message_stop\"}\n\n",
        );
        let items = stream::replay(AnthropicStream::new("m"), &[stream.as_bytes()]).await;
        let done = stream::fold(items).await.unwrap();
        let call = &done.response["choices"][0]["message"]["tool_calls"][0];
        assert_eq!(call["function"]["name"], "get_time");
        assert_eq!(call["function"]["arguments"], "{}");
    }

    #[tokio::test]
    async fn an_error_event_or_a_missing_message_stop_fails_the_stream() {
        let start = STREAM.split("event: content_block_start").next().unwrap();
        let overloaded = format!(
            "{start}event: error\ndata: {{\"type\":\"error\",\"error\":{{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}}}\n\n"
        );
        let items = stream::replay(AnthropicStream::new("m"), &[overloaded.as_bytes()]).await;
        let e = items.last().unwrap().clone().unwrap_err();
        assert_eq!(
            (e.kind, e.message.as_str()),
            (ErrorKind::ServerError, "Overloaded")
        );

        let cut = &STREAM[..STREAM.find("event: message_delta").unwrap()];
        let items = stream::replay(AnthropicStream::new("m"), &[cut.as_bytes()]).await;
        let e = items.last().unwrap().clone().unwrap_err();
        assert!(
            e.kind.is_retryable() && e.message.contains("message_stop"),
            "{}",
            e.message
        );
        assert!(stream::fold(items).await.is_err());
    }
}
