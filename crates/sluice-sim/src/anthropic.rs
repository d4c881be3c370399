//! The simulator's Anthropic Messages endpoint: `POST /v1/messages`, plain and streamed.
//!
//! It follows Anthropic's documented wire format, so the official SDK and Sluice's Anthropic
//! adapter accept it unchanged: `x-api-key` and `anthropic-version` headers required, a
//! required `max_tokens`, a top-level `system`, content blocks (`text`, `image`,
//! `tool_use`, `tool_result`, …), the `Message` object whose `usage.input_tokens` *excludes*
//! cache reads and writes, the named-event stream (`message_start` … `message_stop`, with
//! `ping` and mid-stream `error` events), errors as
//! `{"type": "error", "error": {"type", "message"}}` with Anthropic's error types, and the
//! `request-id`, `anthropic-ratelimit-*` (RFC 3339 resets) and `retry-after` headers.
//! What the answer says is `answer`'s business; this module only reads the
//! request into a [`Conversation`] and writes the [`Answer`] back in Anthropic's shape.

use super::answer::{self, Answer, Conversation, Finish, Format, Tool, ToolChoice, ToolResult};
use super::batches;
use super::call::{self, Batched, Outcome, StreamPlan};
use super::faults::{self, Fault};
use super::stream::{self, Event};
use super::{tokens, Family, Limits, RateHeaders, SimState};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use chrono::{SecondsFormat, Utc};
use serde_json::{json, Map, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the `anthropic-ratelimit-*-limit` headers announce (reported, not enforced).
pub(super) const LIMITS: Limits = Limits {
    requests: 4_000,
    tokens: 2_400_000,
};
/// The content block types a request may carry.
const BLOCK_TYPES: [&str; 10] = [
    "text",
    "image",
    "document",
    "tool_use",
    "tool_result",
    "thinking",
    "redacted_thinking",
    "search_result",
    "server_tool_use",
    "web_search_tool_result",
];

pub(crate) fn routes() -> Router<Arc<SimState>> {
    Router::new().route("/v1/messages", post(messages).fallback(unknown_route))
}

/// Any other path or method: Anthropic's `not_found_error`.
pub(crate) async fn unknown_route(
    State(state): State<Arc<SimState>>,
    method: Method,
    uri: Uri,
) -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found_error",
        format!("Not found: {method} {}", uri.path()),
    )
    .respond(&state, Instant::now())
}

async fn messages(State(state): State<Arc<SimState>>, headers: HeaderMap, body: Bytes) -> Response {
    let started = Instant::now();
    state.count_request(Family::Anthropic, &headers, None);
    match complete(&state, &headers, &body, started).await {
        Ok(response) => response,
        Err(error) => {
            state.count_error();
            error.respond(&state, started)
        }
    }
}

/// A batch item: the `params` of a batch request, answered as a realtime call of them would
/// be (the `Message`, billed at the batch tier, or the error), or failed by its `batch=`
/// directive. Anthropic checks a batch's params only when it runs them, so a bad request is
/// an errored item here, not a 400 for the batch.
pub(super) fn batch_item(state: &SimState, params: &Value) -> batches::Outcome {
    state.log_request(params.clone());
    let answered = || -> Result<batches::Outcome, ApiError> {
        let Some(request) = params.as_object() else {
            return Err(ApiError::invalid(
                "params: Input should be a valid dictionary",
            ));
        };
        let parsed = validate(request)?;
        if parsed.stream {
            return Err(ApiError::invalid(
                "stream: streaming is not supported for batch requests",
            ));
        }
        let texts = texts(request, &parsed);
        match call::batched(&texts, &parsed.conversation).map_err(bad_directive)? {
            Batched::Answer(answer) => {
                let mut message = whole_message(&parsed, &answer);
                message["usage"]["service_tier"] = json!("batch");
                Ok(batches::Outcome::Answered {
                    body: message,
                    usage: batches::Usage {
                        prompt_tokens: answer.prompt_tokens,
                        completion_tokens: answer.completion_tokens,
                        cached_tokens: answer.cached_tokens,
                    },
                })
            }
            Batched::Fail(fault) => Err(fault_error(state, fault)),
            Batched::Expire => Ok(batches::Outcome::Expires),
        }
    };
    answered().unwrap_or_else(|error| batches::Outcome::Failed {
        status: error.status.as_u16(),
        body: error.body(&request_id()),
    })
}

/// The system prompt's text and every message's, to look for directives in.
fn texts<'a>(request: &'a Map<String, Value>, parsed: &Parsed<'a>) -> Vec<&'a str> {
    let mut texts = faults::content_texts(request.get("system"));
    for message in parsed.messages {
        texts.extend(faults::content_texts(message.get("content")));
    }
    texts
}

fn bad_directive(error: faults::DirectiveError) -> ApiError {
    ApiError::invalid(error.to_string())
}

/// An Anthropic error response.
#[derive(Debug)]
pub(super) struct ApiError {
    status: StatusCode,
    /// Anthropic's `error.type`: `invalid_request_error`, `rate_limit_error`, ….
    kind: &'static str,
    pub(super) message: String,
    retry_after: Option<Duration>,
    /// A spend cap, which Anthropic tells apart by `error.details.error_code`.
    spend_cap: bool,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            kind,
            message: message.into(),
            retry_after: None,
            spend_cap: false,
        }
    }

    pub(super) fn invalid(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    fn body(&self, request_id: &str) -> Value {
        let mut error = json!({"type": self.kind, "message": self.message});
        if self.spend_cap {
            error["details"] = json!({"error_code": "enforced_spend_limit_reached"});
        }
        json!({"type": "error", "error": error, "request_id": request_id})
    }

    pub(super) fn respond(&self, state: &SimState, started: Instant) -> Response {
        let request_id = request_id();
        let rate = match self.retry_after {
            Some(retry_after) => RateHeaders::exhausted(LIMITS, retry_after),
            None => RateHeaders::counted(state, LIMITS, 0),
        };
        let mut response = (self.status, axum::Json(self.body(&request_id))).into_response();
        decorate(&mut response, &request_id, rate, started);
        if let Some(retry_after) = self.retry_after {
            // Whole seconds, rounded up so a client never comes back early.
            let seconds = retry_after.as_millis().div_ceil(1000) as u64;
            response
                .headers_mut()
                .insert("retry-after", HeaderValue::from(seconds));
        }
        response
    }
}

pub(super) fn request_id() -> String {
    format!("req_{}", uuid::Uuid::new_v4().simple())
}

/// Validates the request, runs the call, and renders its outcome.
async fn complete(
    state: &Arc<SimState>,
    headers: &HeaderMap,
    raw: &[u8],
    started: Instant,
) -> Result<Response, ApiError> {
    check_headers(headers)?;
    let body: Value = serde_json::from_slice(raw).map_err(|e| {
        ApiError::invalid(format!("There was an error parsing the body as JSON: {e}"))
    })?;
    let Some(request) = body.as_object() else {
        return Err(ApiError::invalid(
            "body: Input should be a valid dictionary",
        ));
    };
    state.log_request(body.clone());
    let parsed = validate(request)?;
    let texts = texts(request, &parsed);
    let outcome = call::run(
        state,
        headers,
        call::Request {
            body: request,
            texts,
            conversation: parsed.conversation.clone(),
            stream: parsed.stream,
        },
    )
    .await;
    match outcome {
        Outcome::Answer { answer, stream } => Ok(render(state, &parsed, &answer, stream, started)),
        Outcome::Fail(fault) => Err(fault_error(state, fault)),
        Outcome::BadDirective(error) => Err(bad_directive(error)),
        Outcome::Shutdown => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "api_error",
            "The simulator is shutting down.",
        )),
    }
}

/// The key (`x-api-key`, or a bearer token for OAuth) and the API version, as Anthropic
/// requires them.
pub(super) fn check_headers(headers: &HeaderMap) -> Result<(), ApiError> {
    let header = |name| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::trim)
            .filter(|value| !value.is_empty())
    };
    let bearer = header(axum::http::header::AUTHORIZATION.as_str())
        .and_then(|value| value.strip_prefix("Bearer "));
    if header("x-api-key").is_none() && bearer.is_none() {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "x-api-key header is required",
        ));
    }
    if header("anthropic-version").is_none() {
        return Err(ApiError::invalid("anthropic-version: header is required"));
    }
    Ok(())
}

/// The fields of a request the simulator acts on, checked.
struct Parsed<'a> {
    model: &'a str,
    messages: &'a [Value],
    stream: bool,
    conversation: Conversation,
}

/// Checks what Anthropic checks before generating, in its `field: problem` wording.
fn validate(request: &Map<String, Value>) -> Result<Parsed<'_>, ApiError> {
    let model = match request.get("model") {
        None => return Err(ApiError::invalid("model: Field required")),
        Some(Value::String(model)) if !model.is_empty() => model.as_str(),
        Some(_) => {
            return Err(ApiError::invalid(
                "model: Input should be a valid, non-empty string",
            ))
        }
    };
    let max_tokens = match request.get("max_tokens") {
        None => return Err(ApiError::invalid("max_tokens: Field required")),
        Some(value) => match value.as_i64() {
            Some(max) if max >= 1 => max as u64,
            Some(_) => {
                return Err(ApiError::invalid(
                    "max_tokens: Input should be greater than or equal to 1",
                ))
            }
            None => {
                return Err(ApiError::invalid(
                    "max_tokens: Input should be a valid integer",
                ))
            }
        },
    };
    let messages = match request.get("messages") {
        None => return Err(ApiError::invalid("messages: Field required")),
        Some(Value::Array(messages)) if messages.is_empty() => {
            return Err(ApiError::invalid(
                "messages: at least one message is required",
            ))
        }
        Some(Value::Array(messages)) => messages.as_slice(),
        Some(_) => return Err(ApiError::invalid("messages: Input should be a valid list")),
    };
    for (i, message) in messages.iter().enumerate() {
        let last = i + 1 == messages.len();
        validate_message(i, message, last)?;
    }
    // Anthropic's models after the Claude 3 family take one of the two, not both.
    let sampling = |name: &str| request.get(name).is_some_and(|v| !v.is_null());
    if sampling("temperature") && sampling("top_p") && !model.starts_with("claude-3") {
        return Err(ApiError::invalid(
            "temperature and top_p cannot both be specified for this model. Please use only one.",
        ));
    }
    match request.get("system") {
        None | Some(Value::String(_)) => {}
        Some(Value::Array(blocks)) => {
            for (j, block) in blocks.iter().enumerate() {
                if block.get("type").and_then(Value::as_str) != Some("text") {
                    return Err(ApiError::invalid(format!(
                        "system.{j}.type: Input should be 'text'"
                    )));
                }
            }
        }
        Some(_) => return Err(ApiError::invalid("system: Input should be a valid string")),
    }
    let tools = tools_of(request.get("tools"))?;
    let stop = match request.get("stop_sequences") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(stops)) => stops
            .iter()
            .filter_map(Value::as_str)
            .map(String::from)
            .collect(),
        Some(_) => {
            return Err(ApiError::invalid(
                "stop_sequences: Input should be a valid list",
            ))
        }
    };
    let format = match request.get("output_config").and_then(|c| c.get("format")) {
        None | Some(Value::Null) => Format::Text,
        Some(format) if format.get("type").and_then(Value::as_str) == Some("json_schema") => {
            match format.get("schema") {
                Some(schema) => Format::JsonSchema(schema.clone()),
                None => {
                    return Err(ApiError::invalid(
                        "output_config.format.schema: Field required",
                    ))
                }
            }
        }
        Some(_) => {
            return Err(ApiError::invalid(
                "output_config.format.type: Input should be 'json_schema'",
            ))
        }
    };
    // The system prompt is one more message to the tokenizer.
    let mut counted = messages.to_vec();
    if let Some(system) = request.get("system") {
        counted.push(json!({"role": "system", "content": system}));
    }
    let conversation = Conversation {
        question: question(messages),
        tool_results: tool_results(messages),
        tool_choice: tool_choice(request.get("tool_choice"), &tools)?,
        tools,
        format,
        max_tokens: Some(max_tokens),
        stop,
        prompt_tokens: tokens::count_prompt(&counted, request.get("tools")),
    };
    Ok(Parsed {
        model,
        messages,
        stream: request.get("stream").and_then(Value::as_bool) == Some(true),
        conversation,
    })
}

/// One message, as Anthropic checks it: its role, its content (empty only in a final
/// assistant turn, a prefill), and each content block's type, required fields and text.
fn validate_message(i: usize, message: &Value, last: bool) -> Result<(), ApiError> {
    match message.get("role").and_then(Value::as_str) {
        Some("user" | "assistant") => {}
        None if message.get("role").is_none() => {
            return Err(ApiError::invalid(format!(
                "messages.{i}.role: Field required"
            )))
        }
        _ => {
            return Err(ApiError::invalid(format!(
                "messages.{i}.role: Input should be 'user' or 'assistant'"
            )))
        }
    }
    let blocks = match message.get("content") {
        None => {
            return Err(ApiError::invalid(format!(
                "messages.{i}.content: Field required"
            )))
        }
        Some(Value::String(text)) => {
            let prefill = last && message.get("role").and_then(Value::as_str) == Some("assistant");
            if text.is_empty() && !prefill {
                return Err(ApiError::invalid(format!(
                    "messages.{i}: all messages must have non-empty content except for the \
                     optional final assistant message"
                )));
            }
            return Ok(());
        }
        Some(Value::Array(blocks)) => blocks,
        Some(_) => {
            return Err(ApiError::invalid(format!(
                "messages.{i}.content: Input should be a valid string or list of content blocks"
            )))
        }
    };
    for (j, block) in blocks.iter().enumerate() {
        let at = format!("messages.{i}.content.{j}");
        let kind = block.get("type").and_then(Value::as_str).unwrap_or("");
        if !BLOCK_TYPES.contains(&kind) {
            return Err(ApiError::invalid(format!(
                "{at}.type: Input tag '{kind}' found using 'type' does not match any of the \
                 expected tags: {}",
                BLOCK_TYPES.map(|t| format!("'{t}'")).join(", ")
            )));
        }
        let required: &[&str] = match kind {
            "text" => &["text"],
            "image" | "document" => &["source"],
            "tool_use" => &["id", "name", "input"],
            "tool_result" => &["tool_use_id"],
            _ => &[],
        };
        if let Some(missing) = required.iter().find(|field| block.get(**field).is_none()) {
            return Err(ApiError::invalid(format!(
                "{at}.{kind}.{missing}: Field required"
            )));
        }
        if kind == "text" {
            let text = block
                .get("text")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if text.is_empty() {
                return Err(ApiError::invalid(
                    "messages: text content blocks must be non-empty",
                ));
            }
            if text.trim().is_empty() {
                return Err(ApiError::invalid(
                    "messages: text content blocks must contain non-whitespace text",
                ));
            }
        }
    }
    Ok(())
}

/// The text blocks of the last user message (tool results are not questions).
fn question(messages: &[Value]) -> String {
    messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .map(|m| faults::content_texts(m.get("content")).join(" "))
        .unwrap_or_default()
}

/// The `tool_result` blocks of a last user message, named after the `tool_use` they answer.
fn tool_results(messages: &[Value]) -> Vec<ToolResult> {
    let Some(last) = messages.last() else {
        return Vec::new();
    };
    if last.get("role").and_then(Value::as_str) != Some("user") {
        return Vec::new();
    }
    let blocks = |m: &'_ Value| -> Vec<Value> {
        m.get("content")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let name_of = |id: &str| {
        messages
            .iter()
            .flat_map(blocks)
            .find(|b| {
                b.get("type").and_then(Value::as_str) == Some("tool_use")
                    && b.get("id").and_then(Value::as_str) == Some(id)
            })
            .and_then(|b| b.get("name").and_then(Value::as_str).map(String::from))
    };
    blocks(last)
        .iter()
        .filter(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))
        .map(|b| ToolResult {
            name: b
                .get("tool_use_id")
                .and_then(Value::as_str)
                .and_then(name_of),
            content: faults::content_texts(b.get("content")).join(" "),
        })
        .collect()
}

/// `tools`: client tools with an `input_schema`; server tools (with a versioned `type`)
/// are accepted and never called.
fn tools_of(tools: Option<&Value>) -> Result<Vec<Tool>, ApiError> {
    let tools = match tools {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(tools)) => tools,
        Some(_) => return Err(ApiError::invalid("tools: Input should be a valid list")),
    };
    let mut out = Vec::new();
    for (i, tool) in tools.iter().enumerate() {
        let custom = matches!(
            tool.get("type").and_then(Value::as_str),
            None | Some("custom")
        );
        if !custom {
            continue;
        }
        let Some(name) = tool.get("name").and_then(Value::as_str) else {
            return Err(ApiError::invalid(format!(
                "tools.{i}.custom.name: Field required"
            )));
        };
        let Some(schema) = tool.get("input_schema") else {
            return Err(ApiError::invalid(format!(
                "tools.{i}.custom.input_schema: Field required"
            )));
        };
        out.push(Tool {
            name: name.to_string(),
            schema: schema.clone(),
        });
    }
    Ok(out)
}

/// `tool_choice`: `{"type": "auto" | "any" | "tool" (with `name`) | "none"}`.
fn tool_choice(choice: Option<&Value>, tools: &[Tool]) -> Result<ToolChoice, ApiError> {
    let Some(choice) = choice.filter(|c| !c.is_null()) else {
        return Ok(ToolChoice::Auto);
    };
    let kind = choice.get("type").and_then(Value::as_str);
    if tools.is_empty() && kind != Some("none") {
        return Err(ApiError::invalid(
            "tool_choice: tool_choice may only be specified while providing tools",
        ));
    }
    match kind {
        Some("auto") => Ok(ToolChoice::Auto),
        Some("none") => Ok(ToolChoice::None),
        Some("any") => Ok(ToolChoice::Forced(None)),
        Some("tool") => match choice.get("name").and_then(Value::as_str) {
            Some(name) if tools.iter().any(|tool| tool.name == name) => {
                Ok(ToolChoice::Forced(Some(name.to_string())))
            }
            Some(name) => Err(ApiError::invalid(format!(
                "tool_choice: Tool '{name}' not found in provided tools"
            ))),
            None => Err(ApiError::invalid("tool_choice.tool.name: Field required")),
        },
        _ => Err(ApiError::invalid(
            "tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none'",
        )),
    }
}

/// The error Anthropic would send for this fault, with its error type and usual wording.
fn fault_error(state: &SimState, fault: Fault) -> ApiError {
    // A workspace spend cap: a 429 that waiting a minute does not fix, so no
    // `retry-after`, and the code that tells it apart from a rate limit.
    if fault == Fault::Quota {
        let next_month = next_month_start();
        return ApiError {
            spend_cap: true,
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                format!(
                    "You have reached your specified API usage limits. You will regain \
                     access on {next_month} at 00:00 UTC."
                ),
            )
        };
    }
    let status = fault.status(529);
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let (kind, message) = match status {
        429 => {
            return ApiError {
                retry_after: Some(state.config.retry_after),
                ..ApiError::new(
                    code,
                    "rate_limit_error",
                    format!(
                        "This request would exceed the rate limit for your organization \
                         (simulated) of {} requests per minute. For details, refer to: \
                         https://docs.claude.com/en/api/rate-limits. You can see the response \
                         headers for current usage.",
                        LIMITS.requests
                    ),
                )
            }
        }
        400 => (
            "invalid_request_error",
            "Simulated invalid request: this request carries a [sim fail=400] or [sim batch=invalid] directive.".into(),
        ),
        401 => ("authentication_error", "invalid x-api-key".into()),
        402 => (
            "billing_error",
            "Your credit balance is too low to access the Anthropic API.".into(),
        ),
        403 => (
            "permission_error",
            "Your API key does not have permission to use the specified resource.".into(),
        ),
        404 => (
            "not_found_error",
            "The requested resource was not found.".into(),
        ),
        413 => (
            "request_too_large",
            "Request exceeds the maximum allowed number of bytes.".into(),
        ),
        504 => ("timeout_error", "Request timed out.".into()),
        529 => ("overloaded_error", "Overloaded".into()),
        500 => ("api_error", "Internal server error".into()),
        status if status >= 500 => ("api_error", format!("Simulated server error {status}.")),
        status => (
            "invalid_request_error",
            format!("Simulated client error {status}."),
        ),
    };
    ApiError::new(code, kind, message)
}

/// The first day of next month (UTC), as a date: when a monthly spend cap lifts.
fn next_month_start() -> String {
    use chrono::Datelike;
    let today = Utc::now().date_naive();
    let (year, month) = match today.month() {
        12 => (today.year() + 1, 1),
        month => (today.year(), month + 1),
    };
    format!("{year:04}-{month:02}-01")
}

/// The answer as a `Message`, or as its event stream.
fn render(
    state: &Arc<SimState>,
    parsed: &Parsed<'_>,
    answer: &Answer,
    plan: StreamPlan,
    started: Instant,
) -> Response {
    if plan.fault.is_none() {
        state.count_completion(
            answer.prompt_tokens,
            answer.completion_tokens,
            parsed.stream,
        );
    } else {
        state.count_error();
    }
    let rate = RateHeaders::counted(
        state,
        LIMITS,
        answer.prompt_tokens + answer.completion_tokens,
    );
    let mut response = if parsed.stream {
        let error = json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}});
        stream::sse(
            state.clone(),
            events(parsed, answer, &message_id()),
            plan,
            Event::new(Some("error"), &error, false),
        )
    } else {
        stream::json(
            state.clone(),
            StatusCode::OK,
            &whole_message(parsed, answer),
            plan,
        )
    };
    decorate(&mut response, &request_id(), rate, started);
    response
}

/// Anthropic's `usage`: `input_tokens` excludes the cached prompt tokens, which are
/// reported as cache reads.
fn usage(answer: &Answer, output_tokens: u64) -> Value {
    json!({
        "input_tokens": answer.prompt_tokens - answer.cached_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": answer.cached_tokens,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
        "output_tokens": output_tokens,
        "service_tier": "standard",
    })
}

fn stop_reason(finish: &Finish) -> (&'static str, Option<&str>) {
    match finish {
        Finish::Stop => ("end_turn", None),
        Finish::StopSequence(stop) => ("stop_sequence", Some(stop.as_str())),
        Finish::Length => ("max_tokens", None),
        Finish::ToolCalls => ("tool_use", None),
    }
}

fn message_id() -> String {
    format!("msg_{}", uuid::Uuid::new_v4().simple())
}

/// The whole `Message` of a non-streamed answer.
fn whole_message(parsed: &Parsed<'_>, answer: &Answer) -> Value {
    let usage = usage(answer, answer.completion_tokens);
    let mut message = message(parsed, answer, &message_id(), usage);
    message["content"] = Value::Array(blocks(answer));
    message
}

/// The `Message` without content.
fn message(parsed: &Parsed<'_>, answer: &Answer, id: &str, usage: Value) -> Value {
    let (stop_reason, stop_sequence) = stop_reason(&answer.finish);
    json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": parsed.model,
        "content": [],
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": usage,
    })
}

fn tool_use_id(call: &answer::ToolCall) -> String {
    format!("toolu_{}", call.id)
}

/// The content blocks: the text, or the `tool_use` blocks.
fn blocks(answer: &Answer) -> Vec<Value> {
    if answer.tool_calls.is_empty() {
        return vec![json!({"type": "text", "text": answer.text})];
    }
    answer
        .tool_calls
        .iter()
        .map(|call| {
            json!({"type": "tool_use", "id": tool_use_id(call), "name": call.name, "input": call.arguments})
        })
        .collect()
}

/// The event stream of an answer: `message_start` (input usage), `ping`, per content block
/// `content_block_start`, deltas (`text_delta` in word groups, `input_json_delta` in
/// pieces) and `content_block_stop`, then `message_delta` (stop reason, cumulative usage)
/// and `message_stop`.
fn events(parsed: &Parsed<'_>, answer: &Answer, id: &str) -> Vec<Event> {
    let mut start = message(parsed, answer, id, usage(answer, 1));
    start["stop_reason"] = Value::Null;
    start["stop_sequence"] = Value::Null;
    let mut events = vec![
        Event::new(
            Some("message_start"),
            &json!({"type": "message_start", "message": start}),
            false,
        ),
        Event::new(Some("ping"), &json!({"type": "ping"}), false),
    ];
    let block_event = |name: &str, index: usize, field: &str, value: Value, content: bool| {
        let mut data = json!({"type": name, "index": index});
        if !field.is_empty() {
            data[field] = value;
        }
        Event::new(Some(name), &data, content)
    };
    let delta = |index: usize, delta: Value| {
        block_event("content_block_delta", index, "delta", delta, true)
    };
    if answer.tool_calls.is_empty() {
        let empty = json!({"type": "text", "text": ""});
        events.push(block_event(
            "content_block_start",
            0,
            "content_block",
            empty,
            false,
        ));
        for piece in answer.text_pieces() {
            events.push(delta(0, json!({"type": "text_delta", "text": piece})));
        }
        events.push(block_event("content_block_stop", 0, "", Value::Null, false));
    }
    for (index, call) in answer.tool_calls.iter().enumerate() {
        let block =
            json!({"type": "tool_use", "id": tool_use_id(call), "name": call.name, "input": {}});
        events.push(block_event(
            "content_block_start",
            index,
            "content_block",
            block,
            true,
        ));
        let arguments = call.arguments.to_string();
        for piece in answer::fragments(&arguments, 16) {
            events.push(delta(
                index,
                json!({"type": "input_json_delta", "partial_json": piece}),
            ));
        }
        events.push(block_event(
            "content_block_stop",
            index,
            "",
            Value::Null,
            false,
        ));
    }
    let (stop_reason, stop_sequence) = stop_reason(&answer.finish);
    events.push(Event::new(
        Some("message_delta"),
        &json!({
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
            "usage": usage(answer, answer.completion_tokens),
        }),
        false,
    ));
    events.push(Event::new(
        Some("message_stop"),
        &json!({"type": "message_stop"}),
        false,
    ));
    events
}

/// Adds the headers Anthropic puts on every answer: `request-id` and the rate limits, whose
/// resets are RFC 3339 instants.
pub(super) fn decorate(
    response: &mut Response,
    request_id: &str,
    rate: RateHeaders,
    started: Instant,
) {
    let headers = response.headers_mut();
    let text = |s: String| HeaderValue::from_str(&s).unwrap_or(HeaderValue::from_static("0"));
    let at = |after: Duration| {
        let instant = Utc::now() + chrono::Duration::from_std(after).unwrap_or_default();
        text(instant.to_rfc3339_opts(SecondsFormat::Secs, true))
    };
    headers.insert("request-id", text(request_id.to_string()));
    headers.insert(
        "anthropic-organization-id",
        HeaderValue::from_static("00000000-0000-4000-8000-00000000515d"),
    );
    headers.insert(
        "x-envoy-upstream-service-time",
        HeaderValue::from(started.elapsed().as_millis() as u64),
    );
    let limits = rate.limits;
    for (prefix, limit, remaining, reset) in [
        (
            "requests",
            limits.requests,
            rate.remaining_requests,
            rate.reset_requests,
        ),
        (
            "tokens",
            limits.tokens,
            rate.remaining_tokens,
            rate.reset_tokens,
        ),
        (
            "input-tokens",
            limits.tokens,
            rate.remaining_tokens,
            rate.reset_tokens,
        ),
        (
            "output-tokens",
            limits.tokens / 5,
            rate.remaining_tokens / 5,
            rate.reset_tokens,
        ),
    ] {
        let name = |what: &str| format!("anthropic-ratelimit-{prefix}-{what}");
        for (what, value) in [
            ("limit", HeaderValue::from(limit)),
            ("remaining", HeaderValue::from(remaining)),
            ("reset", at(reset)),
        ] {
            if let Ok(name) = axum::http::HeaderName::from_bytes(name(what).as_bytes()) {
                headers.insert(name, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(body: Value) -> Result<(), String> {
        let map: Map<String, Value> = serde_json::from_value(body).unwrap();
        validate(&map).map(|_| ()).map_err(|e| e.message)
    }

    #[test]
    fn validation_names_the_field_like_anthropic() {
        let user = json!([{"role": "user", "content": "hi"}]);
        assert_eq!(
            check(json!({"model": "m", "messages": user})),
            Err("max_tokens: Field required".into())
        );
        assert_eq!(
            check(json!({"model": "m", "max_tokens": 0, "messages": user})),
            Err("max_tokens: Input should be greater than or equal to 1".into())
        );
        assert_eq!(
            check(
                json!({"model": "m", "max_tokens": 9, "messages": [{"role": "system", "content": "x"}]})
            ),
            Err("messages.0.role: Input should be 'user' or 'assistant'".into())
        );
        assert_eq!(
            check(
                json!({"model": "m", "max_tokens": 9, "messages": [{"role": "user", "content": [{"type": "tool_result"}]}]})
            ),
            Err("messages.0.content.0.tool_result.tool_use_id: Field required".into())
        );
        assert_eq!(
            check(
                json!({"model": "m", "max_tokens": 9, "messages": user, "tools": [{"name": "f"}]})
            ),
            Err("tools.0.custom.input_schema: Field required".into())
        );
        assert!(check(json!({"model": "m", "max_tokens": 9, "messages": user, "system": [{"type": "text", "text": "be brief"}]})).is_ok());
    }

    #[test]
    fn tool_results_are_named_after_their_tool_use() {
        let messages = [
            json!({"role": "user", "content": "weather?"}),
            json!({"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}]}),
            json!({"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "3 degrees"}]}),
        ];
        assert_eq!(
            tool_results(&messages),
            [ToolResult {
                name: Some("get_weather".into()),
                content: "3 degrees".into()
            }]
        );
        assert_eq!(question(&messages), "");
    }
}
