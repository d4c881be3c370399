//! The simulator's OpenAI Chat Completions endpoint: `POST /v1/chat/completions`, plain and
//! streamed.
//!
//! Everything here follows OpenAI's documented wire format (the `chat.completion` object
//! and its `chat.completion.chunk` stream ending in `data: [DONE]`, the
//! `{"error": {message, type, param, code}}` body, `x-request-id` and `x-ratelimit-*`
//! headers), because the official SDKs and Sluice's own adapter must accept it unchanged.
//! Error messages imitate OpenAI's wording so logs read the same as in production. What the
//! answer says is `answer`'s business; this module only reads OpenAI's
//! request into a [`Conversation`] and writes the [`Answer`] back in OpenAI's shape.

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
use serde_json::{json, Map, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the `x-ratelimit-limit-*` headers announce. Reported, not enforced: limits are
/// simulated with faults, which tests can aim.
pub(super) const LIMITS: Limits = Limits {
    requests: 10_000,
    tokens: 30_000_000,
};
const ROLES: [&str; 6] = [
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "function",
];

pub(crate) fn routes() -> Router<Arc<SimState>> {
    Router::new().route(
        "/v1/chat/completions",
        post(chat_completions).fallback(unknown_route),
    )
}

/// Any other path or method: OpenAI's "Invalid URL" 404.
pub(crate) async fn unknown_route(
    State(state): State<Arc<SimState>>,
    method: Method,
    uri: Uri,
) -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("Invalid URL ({method} {})", uri.path()),
        "invalid_request_error",
    )
    .respond(&state, Instant::now())
}

async fn chat_completions(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    state.count_request(Family::OpenAi, &headers, None);
    match complete(&state, &headers, &body, started).await {
        Ok(response) => response,
        Err(error) => {
            state.count_error();
            error.respond(&state, started)
        }
    }
}

/// Validates the request, runs the call, and renders its outcome.
async fn complete(
    state: &Arc<SimState>,
    headers: &HeaderMap,
    raw: &[u8],
    started: Instant,
) -> Result<Response, ApiError> {
    check_auth(headers)?;
    let body: Value = serde_json::from_slice(raw).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "We could not parse the JSON body of your request. (HINT: This likely means you \
             aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, \
             but what was sent was not valid JSON.)",
            "invalid_request_error",
        )
    })?;
    let Some(request) = body.as_object() else {
        return Err(ApiError::wrong_type("body", "an object", &body));
    };
    state.log_request(body.clone());
    let parsed = validate(request)?;
    let texts = texts(&parsed);
    let outcome = call::run(
        state,
        headers,
        call::Request {
            body: request,
            texts,
            conversation: parsed.conversation.clone(),
            stream: parsed.stream.is_some(),
        },
    )
    .await;
    match outcome {
        Outcome::Answer { answer, stream } => Ok(render(state, &parsed, &answer, stream, started)),
        Outcome::Fail(fault) => Err(fault_error(state, fault, parsed.model)),
        Outcome::BadDirective(error) => Err(bad_directive(error)),
        Outcome::Shutdown => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "The simulator is shutting down.",
            "server_error",
        )),
    }
}

/// A batch item: the body of a batch input line, answered as a realtime call of it would be
/// (the `chat.completion`, or the error), or failed by its `batch=` directive.
pub(super) fn batch_item(state: &SimState, body: &Value) -> batches::Outcome {
    state.log_request(body.clone());
    let answered = || -> Result<batches::Outcome, ApiError> {
        let Some(request) = body.as_object() else {
            return Err(ApiError::wrong_type("body", "an object", body));
        };
        let parsed = validate(request)?;
        if parsed.stream.is_some() {
            return Err(ApiError::invalid(
                "stream",
                "invalid_value",
                "Streaming is not supported for batch requests.",
            ));
        }
        match call::batched(&texts(&parsed), &parsed.conversation).map_err(bad_directive)? {
            Batched::Answer(answer) => Ok(batches::Outcome::Answered {
                body: completion(&parsed, &answer),
                usage: batches::Usage {
                    prompt_tokens: answer.prompt_tokens,
                    completion_tokens: answer.completion_tokens * parsed.n,
                    cached_tokens: answer.cached_tokens,
                },
            }),
            Batched::Fail(fault) => Err(fault_error(state, fault, parsed.model)),
            Batched::Expire => Ok(batches::Outcome::Expires),
        }
    };
    answered().unwrap_or_else(|error| batches::Outcome::Failed {
        status: error.status.as_u16(),
        body: error.body(),
    })
}

/// Every piece of text in the messages, to look for directives in.
fn texts<'a>(parsed: &Parsed<'a>) -> Vec<&'a str> {
    parsed
        .messages
        .iter()
        .flat_map(|message| faults::content_texts(message.get("content")))
        .collect()
}

fn bad_directive(error: faults::DirectiveError) -> ApiError {
    ApiError::invalid("messages", "invalid_value", error.to_string())
}

/// An OpenAI error response.
#[derive(Debug)]
pub(super) struct ApiError {
    status: StatusCode,
    message: String,
    kind: &'static str,
    param: Option<String>,
    code: Option<&'static str>,
    retry_after: Option<Duration>,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, message: impl Into<String>, kind: &'static str) -> Self {
        ApiError {
            status,
            message: message.into(),
            kind,
            param: None,
            code: None,
            retry_after: None,
        }
    }

    pub(super) fn invalid(
        param: impl Into<String>,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        ApiError {
            param: Some(param.into()),
            code: Some(code),
            ..ApiError::new(StatusCode::BAD_REQUEST, message, "invalid_request_error")
        }
    }

    pub(super) fn missing(param: &str) -> Self {
        ApiError::invalid(
            param,
            "missing_required_parameter",
            format!("Missing required parameter: '{param}'."),
        )
    }

    pub(super) fn wrong_type(param: &str, expected: &str, got: &Value) -> Self {
        ApiError::invalid(
            param,
            "invalid_type",
            format!(
                "Invalid type for '{param}': expected {expected}, but got {} instead.",
                json_kind(got)
            ),
        )
    }

    /// The error response, with OpenAI's headers and, for a 429, `retry-after`.
    pub(super) fn respond(&self, state: &SimState, started: Instant) -> Response {
        let rate = match self.retry_after {
            Some(retry_after) => RateHeaders::exhausted(LIMITS, retry_after),
            None => RateHeaders::counted(state, LIMITS, 0),
        };
        let mut response = (self.status, axum::Json(self.body())).into_response();
        decorate(&mut response, rate, started);
        if let Some(retry_after) = self.retry_after {
            let headers = response.headers_mut();
            // OpenAI's SDKs read `retry-after-ms` first; whole seconds (rounded up, so a
            // client never comes back early) serve everyone else.
            let seconds = retry_after.as_millis().div_ceil(1000);
            headers.insert("retry-after", HeaderValue::from(seconds as u64));
            headers.insert(
                "retry-after-ms",
                HeaderValue::from(retry_after.as_millis() as u64),
            );
        }
        response
    }

    pub(super) fn body(&self) -> Value {
        json!({
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        })
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a decimal",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

pub(super) fn check_auth(headers: &HeaderMap) -> Result<(), ApiError> {
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or_default();
    if token.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "You didn't provide an API key. You need to provide your API key in an \
             Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            "invalid_request_error",
        ));
    }
    Ok(())
}

/// The fields of a request the simulator acts on, checked.
struct Parsed<'a> {
    model: &'a str,
    messages: &'a [Value],
    n: u64,
    service_tier: &'a str,
    /// `Some` when the answer is streamed.
    stream: Option<Streaming>,
    conversation: Conversation,
}

#[derive(Debug, Clone, Copy)]
struct Streaming {
    /// `stream_options.include_usage`: a last chunk with the usage and no choices.
    include_usage: bool,
}

/// The answer as a `chat.completion`, or as its stream of chunks.
fn render(
    state: &Arc<SimState>,
    parsed: &Parsed<'_>,
    answer: &Answer,
    plan: StreamPlan,
    started: Instant,
) -> Response {
    let completion_tokens = answer.completion_tokens * parsed.n;
    if plan.fault.is_none() {
        state.count_completion(
            answer.prompt_tokens,
            completion_tokens,
            parsed.stream.is_some(),
        );
    } else {
        state.count_error();
    }
    let rate = RateHeaders::counted(state, LIMITS, answer.prompt_tokens + completion_tokens);
    let mut response = match parsed.stream {
        None => stream::json(
            state.clone(),
            StatusCode::OK,
            &completion(parsed, answer),
            plan,
        ),
        Some(streaming) => stream::sse(
            state.clone(),
            chunks(parsed, answer, streaming),
            plan,
            // What OpenAI's SDKs raise as an APIError: an `error` object in a data line.
            Event::new(
                None,
                &ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "The server had an error while processing your request. Sorry about that!",
                    "server_error",
                )
                .body(),
                false,
            ),
        ),
    };
    decorate(&mut response, rate, started);
    response
}

fn finish_reason(finish: &Finish) -> &'static str {
    match finish {
        Finish::Stop | Finish::StopSequence(_) => "stop",
        Finish::Length => "length",
        Finish::ToolCalls => "tool_calls",
    }
}

fn tool_call_id(call: &answer::ToolCall) -> String {
    format!("call_{}", call.id)
}

fn usage(parsed: &Parsed<'_>, answer: &Answer) -> Value {
    let completion_tokens = answer.completion_tokens * parsed.n;
    json!({
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": answer.prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": answer.cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    })
}

/// The `chat.completion` object: `n` identical choices.
fn completion(parsed: &Parsed<'_>, answer: &Answer) -> Value {
    let mut message = json!({
        "role": "assistant",
        "content": if answer.tool_calls.is_empty() { json!(answer.text) } else { Value::Null },
        "refusal": null,
        "annotations": [],
    });
    if !answer.tool_calls.is_empty() {
        message["tool_calls"] = answer
            .tool_calls
            .iter()
            .map(|call| {
                json!({
                    "id": tool_call_id(call),
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments.to_string()},
                })
            })
            .collect();
    }
    let choices: Vec<Value> = (0..parsed.n)
        .map(|index| {
            json!({
                "index": index,
                "message": message,
                "logprobs": null,
                "finish_reason": finish_reason(&answer.finish),
            })
        })
        .collect();
    json!({
        "id": format!("chatcmpl-{}", uuid::Uuid::new_v4().simple()),
        "object": "chat.completion",
        "created": chrono::Utc::now().timestamp(),
        "model": parsed.model,
        "choices": choices,
        "usage": usage(parsed, answer),
        "service_tier": parsed.service_tier,
        "system_fingerprint": "fp_sluice_sim",
    })
}

/// The `chat.completion.chunk`s of a streamed answer, then `data: [DONE]`: per choice a
/// role chunk, the text in word groups (or each tool call's name, then its arguments in
/// pieces, by `index`), and a chunk with the finish reason; with `include_usage`, a last
/// chunk with empty `choices` and the usage (and `"usage": null` on all the others).
fn chunks(parsed: &Parsed<'_>, answer: &Answer, streaming: Streaming) -> Vec<Event> {
    let id = format!("chatcmpl-{}", uuid::Uuid::new_v4().simple());
    let created = chrono::Utc::now().timestamp();
    let chunk = |choices: Value, usage: Value| {
        let mut chunk = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": parsed.model,
            "service_tier": parsed.service_tier,
            "system_fingerprint": "fp_sluice_sim",
            "choices": choices,
        });
        if streaming.include_usage {
            chunk["usage"] = usage;
        }
        chunk
    };
    let delta = |index: u64, delta: Value, finish: Option<&str>| {
        chunk(
            json!([{"index": index, "delta": delta, "logprobs": null, "finish_reason": finish}]),
            Value::Null,
        )
    };
    let mut events = Vec::new();
    for index in 0..parsed.n {
        let content = if answer.tool_calls.is_empty() {
            json!("")
        } else {
            Value::Null
        };
        let role = json!({"role": "assistant", "content": content, "refusal": null});
        events.push(Event::new(None, &delta(index, role, None), false));
        for piece in answer.text_pieces() {
            let piece = delta(index, json!({"content": piece}), None);
            events.push(Event::new(None, &piece, true));
        }
        for (position, call) in answer.tool_calls.iter().enumerate() {
            let start = json!({"tool_calls": [{
                "index": position,
                "id": tool_call_id(call),
                "type": "function",
                "function": {"name": call.name, "arguments": ""},
            }]});
            events.push(Event::new(None, &delta(index, start, None), true));
            let arguments = call.arguments.to_string();
            for piece in answer::fragments(&arguments, 16) {
                let piece =
                    json!({"tool_calls": [{"index": position, "function": {"arguments": piece}}]});
                events.push(Event::new(None, &delta(index, piece, None), true));
            }
        }
        let finish = delta(index, json!({}), Some(finish_reason(&answer.finish)));
        events.push(Event::new(None, &finish, false));
    }
    if streaming.include_usage {
        let last = chunk(json!([]), usage(parsed, answer));
        events.push(Event::new(None, &last, false));
    }
    events.push(Event::raw("data: [DONE]\n\n"));
    events
}

/// Checks what OpenAI checks before generating, with its wording.
fn validate(request: &Map<String, Value>) -> Result<Parsed<'_>, ApiError> {
    let model = match request.get("model") {
        None => return Err(ApiError::missing("model")),
        Some(Value::String(model)) if !model.is_empty() => model.as_str(),
        Some(Value::String(_)) => {
            return Err(ApiError::invalid(
                "model",
                "invalid_value",
                "Invalid 'model': empty string. Expected a model name.",
            ))
        }
        Some(other) => return Err(ApiError::wrong_type("model", "a string", other)),
    };
    let messages = match request.get("messages") {
        None => return Err(ApiError::missing("messages")),
        Some(Value::Array(messages)) if messages.is_empty() => {
            return Err(ApiError::invalid(
                "messages",
                "empty_array",
                "Invalid 'messages': empty array. Expected an array with minimum length 1, \
                 but got an empty array instead.",
            ))
        }
        Some(Value::Array(messages)) => messages.as_slice(),
        Some(other) => return Err(ApiError::wrong_type("messages", "an array", other)),
    };
    for (i, message) in messages.iter().enumerate() {
        let Some(object) = message.as_object() else {
            return Err(ApiError::wrong_type(
                &format!("messages[{i}]"),
                "an object",
                message,
            ));
        };
        let role = match object.get("role") {
            None => return Err(ApiError::missing(&format!("messages[{i}].role"))),
            Some(Value::String(role)) => role.as_str(),
            Some(other) => {
                return Err(ApiError::wrong_type(
                    &format!("messages[{i}].role"),
                    "a string",
                    other,
                ))
            }
        };
        if !ROLES.contains(&role) {
            return Err(ApiError::invalid(
                format!("messages[{i}].role"),
                "invalid_value",
                format!(
                    "Invalid value: '{role}'. Supported values are: 'system', 'assistant', \
                     'user', 'function', 'tool', and 'developer'."
                ),
            ));
        }
        let needs_content = matches!(role, "system" | "developer" | "user" | "tool");
        if needs_content && !object.contains_key("content") {
            return Err(ApiError::missing(&format!("messages[{i}].content")));
        }
        if role == "tool" && !object.contains_key("tool_call_id") {
            return Err(ApiError::missing(&format!("messages[{i}].tool_call_id")));
        }
    }

    let stream_options = request.get("stream_options").filter(|v| !v.is_null());
    let stream = match request.get("stream").and_then(Value::as_bool) {
        Some(true) => Some(Streaming {
            include_usage: stream_options
                .and_then(|options| options.get("include_usage"))
                .and_then(Value::as_bool)
                == Some(true),
        }),
        _ if stream_options.is_some() => {
            return Err(ApiError::invalid(
                "stream_options",
                "invalid_value",
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            ))
        }
        _ => None,
    };

    let n = positive_integer(request, "n")?.unwrap_or(1);
    if n > 128 {
        return Err(ApiError::invalid(
            "n",
            "integer_above_max_value",
            format!(
                "Invalid 'n': integer above maximum value. Expected a value <= 128, but got {n} instead."
            ),
        ));
    }
    // `max_completion_tokens` replaced `max_tokens`; when both come, the newer one rules.
    let max_tokens = match positive_integer(request, "max_completion_tokens")? {
        Some(max) => Some(max),
        None => positive_integer(request, "max_tokens")?,
    };
    // "auto" (and anything unknown) is served by the default tier, as OpenAI reports it.
    let service_tier = request
        .get("service_tier")
        .and_then(Value::as_str)
        .filter(|tier| ["default", "flex", "priority", "scale"].contains(tier))
        .unwrap_or("default");
    let tools_value = request.get("tools").filter(|tools| !tools.is_null());
    let tools = tools_of(tools_value)?;
    let conversation = Conversation {
        question: question(messages),
        tool_results: tool_results(messages),
        tool_choice: tool_choice(request.get("tool_choice"), &tools)?,
        tools,
        format: format(request.get("response_format"), messages)?,
        max_tokens,
        stop: match request.get("stop") {
            Some(Value::String(stop)) => vec![stop.clone()],
            Some(Value::Array(stops)) => stops
                .iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect(),
            _ => Vec::new(),
        },
        prompt_tokens: tokens::count_prompt(messages, tools_value),
    };
    Ok(Parsed {
        model,
        messages,
        n,
        service_tier,
        stream,
        conversation,
    })
}

/// The text of the last user message (or of the last message, when no user spoke).
fn question(messages: &[Value]) -> String {
    messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .or_else(|| messages.last())
        .map(|m| faults::content_texts(m.get("content")).join(" "))
        .unwrap_or_default()
}

/// The `tool` messages that end the conversation, named after the calls they answer.
fn tool_results(messages: &[Value]) -> Vec<ToolResult> {
    let trailing = messages
        .iter()
        .rev()
        .take_while(|m| m.get("role").and_then(Value::as_str) == Some("tool"))
        .count();
    let name_of = |id: &str| {
        messages
            .iter()
            .filter_map(|m| m.get("tool_calls").and_then(Value::as_array))
            .flatten()
            .find(|call| call.get("id").and_then(Value::as_str) == Some(id))
            .and_then(|call| call.pointer("/function/name"))
            .and_then(Value::as_str)
            .map(String::from)
    };
    messages[messages.len() - trailing..]
        .iter()
        .map(|m| ToolResult {
            name: m
                .get("tool_call_id")
                .and_then(Value::as_str)
                .and_then(name_of),
            content: faults::content_texts(m.get("content")).join(" "),
        })
        .collect()
}

/// `tools`: function tools by name, with their parameter schemas.
fn tools_of(tools: Option<&Value>) -> Result<Vec<Tool>, ApiError> {
    let Some(tools) = tools else {
        return Ok(Vec::new());
    };
    let Some(tools) = tools.as_array() else {
        return Err(ApiError::wrong_type("tools", "an array", tools));
    };
    let mut out = Vec::new();
    for (i, tool) in tools.iter().enumerate() {
        if tool.get("type").and_then(Value::as_str) != Some("function") {
            continue;
        }
        let Some(name) = tool.pointer("/function/name").and_then(Value::as_str) else {
            return Err(ApiError::missing(&format!("tools[{i}].function.name")));
        };
        out.push(Tool {
            name: name.to_string(),
            schema: tool
                .pointer("/function/parameters")
                .cloned()
                .unwrap_or(Value::Null),
        });
    }
    Ok(out)
}

/// `tool_choice`: `none`, `auto`, `required` or `{"type": "function", "function": {"name"}}`.
fn tool_choice(choice: Option<&Value>, tools: &[Tool]) -> Result<ToolChoice, ApiError> {
    let choice = match choice {
        None | Some(Value::Null) => return Ok(ToolChoice::Auto),
        Some(choice) => choice,
    };
    if tools.is_empty() {
        return Err(ApiError::invalid(
            "tool_choice",
            "invalid_value",
            "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are              specified.",
        ));
    }
    match choice {
        Value::String(mode) if mode == "none" => Ok(ToolChoice::None),
        Value::String(mode) if mode == "auto" => Ok(ToolChoice::Auto),
        Value::String(mode) if mode == "required" => Ok(ToolChoice::Forced(None)),
        Value::Object(_) => match choice.pointer("/function/name").and_then(Value::as_str) {
            Some(name) if tools.iter().any(|tool| tool.name == name) => {
                Ok(ToolChoice::Forced(Some(name.to_string())))
            }
            Some(name) => Err(ApiError::invalid(
                "tool_choice",
                "invalid_value",
                format!("Invalid value for 'tool_choice': tool '{name}' is not in 'tools'."),
            )),
            None => Err(ApiError::missing("tool_choice.function.name")),
        },
        other => Err(ApiError::invalid(
            "tool_choice",
            "invalid_value",
            format!(
                "Invalid value: {other}. Supported values are: 'none', 'auto', 'required', or                  a named function."
            ),
        )),
    }
}

/// `response_format`: text, `json_object` (which OpenAI only takes when the messages say
/// "json"), or `json_schema`.
fn format(response_format: Option<&Value>, messages: &[Value]) -> Result<Format, ApiError> {
    let kind = response_format
        .and_then(|format| format.get("type"))
        .and_then(Value::as_str);
    match kind {
        Some("json_object") => {
            let mentions_json = messages.iter().any(|m| {
                faults::content_texts(m.get("content"))
                    .iter()
                    .any(|text| text.to_lowercase().contains("json"))
            });
            if !mentions_json {
                return Err(ApiError::invalid(
                    "messages",
                    "invalid_value",
                    "'messages' must contain the word 'json' in some form, to use                      'response_format' of type 'json_object'.",
                ));
            }
            Ok(Format::JsonObject)
        }
        Some("json_schema") => {
            let spec = response_format.and_then(|format| format.get("json_schema"));
            if spec.and_then(|spec| spec.get("name")).is_none() {
                return Err(ApiError::missing("response_format.json_schema.name"));
            }
            Ok(match spec.and_then(|spec| spec.get("schema")) {
                Some(schema) => Format::JsonSchema(schema.clone()),
                None => Format::JsonObject,
            })
        }
        _ => Ok(Format::Text),
    }
}

/// An optional integer field that must be at least 1.
fn positive_integer(request: &Map<String, Value>, field: &str) -> Result<Option<u64>, ApiError> {
    match request.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => match value.as_i64() {
            Some(n) if n >= 1 => Ok(Some(n as u64)),
            Some(n) => Err(ApiError::invalid(
                field,
                "integer_below_min_value",
                format!(
                    "Invalid '{field}': integer below minimum value. Expected a value >= 1, \
                     but got {n} instead."
                ),
            )),
            None => Err(ApiError::wrong_type(field, "an integer", value)),
        },
    }
}

/// The error OpenAI would send for this status, with its usual wording.
fn fault_error(state: &SimState, fault: Fault, model: &str) -> ApiError {
    if fault == Fault::Quota {
        return ApiError {
            code: Some("insufficient_quota"),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "You exceeded your current quota, please check your plan and billing \
                 details. For more information on this error, read the docs: \
                 https://platform.openai.com/docs/guides/error-codes/api-errors.",
                "insufficient_quota",
            )
        };
    }
    let status = fault.status(503);
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match status {
        429 => {
            let retry_after = state.config.retry_after;
            ApiError {
                code: Some("rate_limit_exceeded"),
                retry_after: Some(retry_after),
                ..ApiError::new(
                    code,
                    format!(
                        "Rate limit reached for {model} (simulated) on requests per min (RPM): \
                         Limit {limit}, Used {limit}, Requested 1. Please try again in {}.",
                        format_go_duration(retry_after),
                        limit = LIMITS.requests,
                    ),
                    "requests",
                )
            }
        }
        400 => ApiError::new(
            code,
            "Simulated invalid request: this request carries a [sim fail=400] or [sim batch=invalid] directive.",
            "invalid_request_error",
        ),
        401 => ApiError {
            code: Some("invalid_api_key"),
            ..ApiError::new(
                code,
                "Incorrect API key provided (simulated by a [sim fail=401] fault).",
                "invalid_request_error",
            )
        },
        404 => ApiError {
            code: Some("model_not_found"),
            ..ApiError::new(
                code,
                format!("The model `{model}` does not exist or you do not have access to it."),
                "invalid_request_error",
            )
        },
        500 => ApiError::new(
            code,
            "The server had an error while processing your request. Sorry about that!",
            "server_error",
        ),
        503 | 529 => ApiError::new(
            code,
            "The engine is currently overloaded, please try again later.",
            "server_error",
        ),
        status if status >= 500 => ApiError::new(
            code,
            format!("Simulated server error {status}."),
            "server_error",
        ),
        status => ApiError::new(
            code,
            format!("Simulated client error {status}."),
            "invalid_request_error",
        ),
    }
}

/// Adds the headers OpenAI puts on every answer.
pub(super) fn decorate(response: &mut Response, rate: RateHeaders, started: Instant) {
    let headers = response.headers_mut();
    let request_id = format!("req_{}", uuid::Uuid::new_v4().simple());
    let text = |s: String| HeaderValue::from_str(&s).unwrap_or(HeaderValue::from_static("0"));
    headers.insert("x-request-id", text(request_id));
    headers.insert("openai-version", HeaderValue::from_static("2020-10-01"));
    headers.insert(
        "openai-processing-ms",
        HeaderValue::from(started.elapsed().as_millis() as u64),
    );
    headers.insert(
        "x-ratelimit-limit-requests",
        HeaderValue::from(rate.limits.requests),
    );
    headers.insert(
        "x-ratelimit-limit-tokens",
        HeaderValue::from(rate.limits.tokens),
    );
    headers.insert(
        "x-ratelimit-remaining-requests",
        HeaderValue::from(rate.remaining_requests),
    );
    headers.insert(
        "x-ratelimit-remaining-tokens",
        HeaderValue::from(rate.remaining_tokens),
    );
    headers.insert(
        "x-ratelimit-reset-requests",
        text(format_go_duration(rate.reset_requests)),
    );
    headers.insert(
        "x-ratelimit-reset-tokens",
        text(format_go_duration(rate.reset_tokens)),
    );
}

/// Formats a duration the way Go's `time.Duration.String` does (`6m0s`, `1.5s`, `12ms`),
/// which is what OpenAI's `x-ratelimit-reset-*` headers carry.
pub fn format_go_duration(duration: Duration) -> String {
    let nanos = duration.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    if nanos < 1_000_000 {
        return format!("{}µs", trim_fraction(nanos, 1_000));
    }
    if nanos < 1_000_000_000 {
        return format!("{}ms", trim_fraction(nanos, 1_000_000));
    }
    let total_seconds = duration.as_secs();
    let hours = total_seconds / 3600;
    let minutes = (total_seconds % 3600) / 60;
    let seconds_nanos =
        u128::from(total_seconds % 60) * 1_000_000_000 + u128::from(duration.subsec_nanos());
    let seconds = format!("{}s", trim_fraction(seconds_nanos, 1_000_000_000));
    if hours > 0 {
        format!("{hours}h{minutes}m{seconds}")
    } else if minutes > 0 {
        format!("{minutes}m{seconds}")
    } else {
        seconds
    }
}

/// `value / unit` as a decimal without trailing zeros (`1500, 1000` → `1.5`).
fn trim_fraction(value: u128, unit: u128) -> String {
    let whole = value / unit;
    let fraction = value % unit;
    if fraction == 0 {
        return whole.to_string();
    }
    let digits = unit.ilog10() as usize;
    let fraction = format!("{fraction:0digits$}");
    format!("{whole}.{}", fraction.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_format_like_go() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(5), "5ns"),
            (Duration::from_micros(12), "12µs"),
            (Duration::from_millis(12), "12ms"),
            (Duration::from_micros(1500), "1.5ms"),
            (Duration::from_secs(1), "1s"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_secs(360), "6m0s"),
            (Duration::from_millis(3_723_500), "1h2m3.5s"),
            (Duration::from_secs(7200), "2h0m0s"),
        ];
        for (duration, text) in cases {
            assert_eq!(format_go_duration(duration), text);
        }
    }

    /// The headers carry whole milliseconds (see `RateHeaders::counted`): each unit's
    /// boundaries, written out as Go writes them. (That Sluice's adapter reads them back is
    /// checked against a live header in the integration tests, `sim_openai`.)
    #[test]
    fn whole_milliseconds_format_like_go_at_every_unit_boundary() {
        let cases = [
            (1, "1ms"),
            (999, "999ms"),
            (1000, "1s"),
            (1001, "1.001s"),
            (59_999, "59.999s"),
            (60_000, "1m0s"),
            (3_599_999, "59m59.999s"),
            (3_600_000, "1h0m0s"),
        ];
        for (millis, text) in cases {
            assert_eq!(
                format_go_duration(Duration::from_millis(millis)),
                text,
                "{millis}ms"
            );
        }
    }

    fn parsed(body: Value) -> Result<(), ApiError> {
        let map: Map<String, Value> = serde_json::from_value(body).unwrap();
        validate(&map).map(|_| ())
    }

    #[test]
    fn validation_names_the_parameter_like_openai() {
        let err = parsed(json!({"model": "m"})).unwrap_err();
        assert_eq!(err.param.as_deref(), Some("messages"));
        assert_eq!(err.code, Some("missing_required_parameter"));
        assert_eq!(err.message, "Missing required parameter: 'messages'.");

        let err = parsed(json!({"model": "m", "messages": []})).unwrap_err();
        assert_eq!(err.code, Some("empty_array"));

        let err = parsed(json!({"model": "m", "messages": [{"role": "robot", "content": "x"}]}))
            .unwrap_err();
        assert_eq!(err.param.as_deref(), Some("messages[0].role"));

        let err = parsed(json!({"model": 3, "messages": [{"role": "user", "content": "x"}]}))
            .unwrap_err();
        assert_eq!(
            err.message,
            "Invalid type for 'model': expected a string, but got an integer instead."
        );

        let ok =
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0});
        assert_eq!(
            parsed(ok).unwrap_err().code,
            Some("integer_below_min_value")
        );

        let ok = json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "stream_options": {"include_usage": true}});
        assert!(parsed(json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": true, "stream_options": {"include_usage": true}})).is_ok());
        assert_eq!(
            parsed(ok).unwrap_err().param.as_deref(),
            Some("stream_options")
        );

        assert!(parsed(
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "frobnicate": 1})
        )
        .is_ok());

        let user = json!([{"role": "user", "content": "x"}]);
        let err =
            parsed(json!({"model": "m", "messages": user, "tool_choice": "required"})).unwrap_err();
        assert_eq!(err.param.as_deref(), Some("tool_choice"));
        let err = parsed(
            json!({"model": "m", "messages": user, "response_format": {"type": "json_object"}}),
        )
        .unwrap_err();
        assert!(
            err.message.contains("must contain the word 'json'"),
            "{}",
            err.message
        );
    }
}
