//! The simulator's OpenAI Chat Completions endpoint: `POST /v1/chat/completions`.
//!
//! Everything here follows OpenAI's documented wire format (the `chat.completion` object,
//! the `{"error": {message, type, param, code}}` body, `x-request-id` and `x-ratelimit-*`
//! headers), because the official SDKs and Sluice's own adapter must accept it unchanged.
//! Error messages imitate OpenAI's wording so logs read the same as in production.

use super::faults::{self, Directives, Fault};
use super::tokens;
use super::SimState;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Map, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the `x-ratelimit-limit-*` headers announce. Reported, not enforced: limits are
/// simulated with faults, which tests can aim.
const LIMIT_REQUESTS: u64 = 10_000;
const LIMIT_TOKENS: u64 = 30_000_000;
/// How long a `timeout` fault holds a request when nobody shuts the simulator down.
const HOLD: Duration = Duration::from_secs(600);
/// Requests carry whole documents and base64 images; axum's 2 MB default is too small.
const BODY_LIMIT: usize = 64 * 1024 * 1024;
const ROLES: [&str; 6] = [
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "function",
];

pub(crate) fn routes() -> Router<Arc<SimState>> {
    Router::new()
        .route(
            "/v1/chat/completions",
            post(chat_completions).fallback(unknown_route),
        )
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
}

/// Any other path or method: OpenAI's "Invalid URL" 404.
pub(crate) async fn unknown_route(
    State(state): State<Arc<SimState>>,
    method: Method,
    uri: Uri,
) -> Response {
    let error = ApiError::new(
        StatusCode::NOT_FOUND,
        format!("Invalid URL ({method} {})", uri.path()),
        "invalid_request_error",
    );
    respond(
        error.status,
        error.body(),
        RateHeaders::counted(&state, 0),
        Instant::now(),
    )
}

async fn chat_completions(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    state.count_request();
    match complete(&state, &headers, &body).await {
        Ok(answer) => {
            state.count_completion(answer.prompt_tokens, answer.completion_tokens);
            let rate =
                RateHeaders::counted(&state, answer.prompt_tokens + answer.completion_tokens);
            respond(StatusCode::OK, answer.body, rate, started)
        }
        Err(Failure::Error(error)) => {
            state.count_error();
            let rate = match error.retry_after {
                Some(retry_after) => RateHeaders::exhausted(retry_after),
                None => RateHeaders::counted(&state, 0),
            };
            let mut response = respond(error.status, error.body(), rate, started);
            if let Some(retry_after) = error.retry_after {
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
        Err(Failure::Shutdown) => {
            let error = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "The simulator is shutting down.",
                "server_error",
            );
            respond(
                error.status,
                error.body(),
                RateHeaders::counted(&state, 0),
                started,
            )
        }
    }
}

/// A successful answer and its token counts.
struct Answer {
    body: Value,
    prompt_tokens: u64,
    completion_tokens: u64,
}

enum Failure {
    Error(ApiError),
    /// A held request released by shutdown.
    Shutdown,
}

impl From<ApiError> for Failure {
    fn from(error: ApiError) -> Self {
        Failure::Error(error)
    }
}

/// An OpenAI error response.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
    kind: &'static str,
    param: Option<String>,
    code: Option<&'static str>,
    retry_after: Option<Duration>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>, kind: &'static str) -> Self {
        ApiError {
            status,
            message: message.into(),
            kind,
            param: None,
            code: None,
            retry_after: None,
        }
    }

    fn invalid(param: impl Into<String>, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            param: Some(param.into()),
            code: Some(code),
            ..ApiError::new(StatusCode::BAD_REQUEST, message, "invalid_request_error")
        }
    }

    fn missing(param: &str) -> Self {
        ApiError::invalid(
            param,
            "missing_required_parameter",
            format!("Missing required parameter: '{param}'."),
        )
    }

    fn wrong_type(param: &str, expected: &str, got: &Value) -> Self {
        ApiError::invalid(
            param,
            "invalid_type",
            format!(
                "Invalid type for '{param}': expected {expected}, but got {} instead.",
                json_kind(got)
            ),
        )
    }

    fn body(&self) -> Value {
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

/// Validates the request, applies its faults, and builds the completion.
async fn complete(state: &SimState, headers: &HeaderMap, raw: &[u8]) -> Result<Answer, Failure> {
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
        return Err(ApiError::wrong_type("body", "an object", &body).into());
    };
    state.log_request(body.clone());
    let parsed = validate(request)?;

    let mut directives = Directives::from_messages(parsed.messages).map_err(directive_error)?;
    let fault_header = match headers.get("x-sim-fault") {
        Some(value) => {
            let value = value.to_str().map_err(|_| {
                directive_error(faults::DirectiveError(
                    "x-sim-fault is not visible ASCII".into(),
                ))
            })?;
            directives.apply_header(value).map_err(directive_error)?;
            Some(value)
        }
        None => None,
    };

    let fault = match &directives.fail {
        Some(plan) => plan.fault_for_call(state.next_call(request_key(request, fault_header))),
        // Random faults only hit requests that did not script their own behaviour.
        None => random_fault(state),
    };

    let latency = directives.latency.unwrap_or(state.config.latency);
    if !latency.is_zero() {
        tokio::select! {
            _ = tokio::time::sleep(latency) => {}
            _ = state.shutting_down() => return Err(Failure::Shutdown),
        }
    }

    match fault {
        None => Ok(answer(&parsed, &directives)),
        Some(Fault::Timeout) => {
            state.count_hung();
            tokio::select! {
                _ = tokio::time::sleep(HOLD) => {}
                _ = state.shutting_down() => {}
            }
            Err(Failure::Shutdown)
        }
        Some(fault) => Err(fault_error(state, fault, parsed.model).into()),
    }
}

fn directive_error(error: faults::DirectiveError) -> ApiError {
    ApiError::invalid("messages", "invalid_value", error.to_string())
}

fn check_auth(headers: &HeaderMap) -> Result<(), ApiError> {
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
    tools: Option<&'a Value>,
    n: u64,
    max_tokens: Option<u64>,
    service_tier: &'a str,
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

    let stream = request.get("stream").and_then(Value::as_bool) == Some(true);
    if stream {
        return Err(ApiError::invalid(
            "stream",
            "unsupported_value",
            "The simulator does not stream yet: send 'stream': false.",
        ));
    }
    if request.get("stream_options").is_some_and(|v| !v.is_null()) {
        return Err(ApiError::invalid(
            "stream_options",
            "invalid_value",
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
        ));
    }

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
    Ok(Parsed {
        model,
        messages,
        tools: request.get("tools").filter(|tools| !tools.is_null()),
        n,
        max_tokens,
        service_tier,
    })
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

/// One seeded draw decides the random fault of a call, so a run with a seed is repeatable
/// (in call order).
fn random_fault(state: &SimState) -> Option<Fault> {
    let config = &state.config;
    if config.rate_429 + config.rate_500 + config.rate_timeout <= 0.0 {
        return None;
    }
    let draw = state.draw();
    if draw < config.rate_429 {
        Some(Fault::Status(429))
    } else if draw < config.rate_429 + config.rate_500 {
        Some(Fault::Status(500))
    } else if draw < config.rate_429 + config.rate_500 + config.rate_timeout {
        Some(Fault::Timeout)
    } else {
        None
    }
}

/// The error OpenAI would send for this status, with its usual wording.
fn fault_error(state: &SimState, fault: Fault, model: &str) -> ApiError {
    let status = match fault {
        Fault::Status(status) => status,
        Fault::Quota => {
            return ApiError {
                code: Some("insufficient_quota"),
                ..ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "You exceeded your current quota, please check your plan and billing \
                     details. For more information on this error, read the docs: \
                     https://platform.openai.com/docs/guides/error-codes/api-errors.",
                    "insufficient_quota",
                )
            }
        }
        // Handled before an error is built; an error is the safe answer should that change.
        Fault::Timeout => 504,
    };
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
                         Limit {LIMIT_REQUESTS}, Used {LIMIT_REQUESTS}, Requested 1. Please try \
                         again in {}.",
                        format_go_duration(retry_after)
                    ),
                    "requests",
                )
            }
        }
        400 => ApiError::new(
            code,
            "Simulated invalid request: this request carries a [sim fail=400] fault.",
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

/// The completion: deterministic content, real token counts.
fn answer(parsed: &Parsed<'_>, directives: &Directives) -> Answer {
    let prompt_tokens = tokens::count_prompt(parsed.messages, parsed.tools);
    let full = reply_text(parsed.messages);
    let (content, cut) = match parsed.max_tokens {
        Some(max) => tokens::truncate(&full, max),
        None => (full.as_str(), false),
    };
    let content_tokens = tokens::count(content);
    let completion_tokens = content_tokens * parsed.n;
    let cached_tokens = directives.cached.unwrap_or(0).min(prompt_tokens);
    let choices: Vec<Value> = (0..parsed.n)
        .map(|index| {
            json!({
                "index": index,
                "message": {"role": "assistant", "content": content, "refusal": null, "annotations": []},
                "logprobs": null,
                "finish_reason": if cut { "length" } else { "stop" },
            })
        })
        .collect();
    let body = json!({
        "id": format!("chatcmpl-{}", uuid::Uuid::new_v4().simple()),
        "object": "chat.completion",
        "created": chrono::Utc::now().timestamp(),
        "model": parsed.model,
        "choices": choices,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": cached_tokens, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        },
        "service_tier": parsed.service_tier,
        "system_fingerprint": "fp_sluice_sim",
    });
    Answer {
        body,
        prompt_tokens,
        completion_tokens,
    }
}

/// Filler vocabulary: plain words so answers look like prose and tokenise like it.
const WORDS: [&str; 48] = [
    "the",
    "queue",
    "model",
    "answer",
    "request",
    "token",
    "worker",
    "simulated",
    "provider",
    "result",
    "quickly",
    "carefully",
    "every",
    "job",
    "deadline",
    "batch",
    "route",
    "cost",
    "is",
    "was",
    "will",
    "can",
    "should",
    "often",
    "record",
    "retry",
    "delay",
    "stable",
    "steady",
    "a",
    "of",
    "to",
    "and",
    "with",
    "for",
    "each",
    "message",
    "limit",
    "reply",
    "system",
    "bounded",
    "durable",
    "precise",
    "latency",
    "budget",
    "tier",
    "key",
    "clear",
];

/// The reply to a conversation: a function of its last user message (directives stripped)
/// and nothing else, so a retried or re-routed job gets the same text.
pub fn reply_text(messages: &[Value]) -> String {
    let source = messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .or_else(|| messages.last())
        .map(|m| faults::strip(&faults::message_texts(m).join(" ")))
        .unwrap_or_default();
    let words: Vec<&str> = source.split_whitespace().collect();
    let mut quote = words.iter().take(12).copied().collect::<Vec<_>>().join(" ");
    if words.len() > 12 {
        quote.push('…');
    }
    let mut text = if quote.is_empty() {
        "This is a simulated answer.".to_string()
    } else {
        format!("This is a simulated answer to \"{quote}\".")
    };
    let mut rng = SplitMix64(fnv1a(source.as_bytes()));
    for _ in 0..1 + rng.below(3) {
        let length = 6 + rng.below(7);
        for i in 0..length {
            let word = WORDS[rng.below(WORDS.len() as u64) as usize];
            text.push(' ');
            if i == 0 {
                let mut chars = word.chars();
                if let Some(first) = chars.next() {
                    text.extend(first.to_uppercase());
                    text.push_str(chars.as_str());
                }
            } else {
                text.push_str(word);
            }
        }
        text.push('.');
    }
    text
}

/// FNV-1a: a hash that stays the same across builds and platforms, unlike std's hasher, so
/// answers do not change when Sluice is upgraded.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// A tiny seeded generator for the filler words; quality does not matter, stability does.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Identifies "the same request" for `fail=` counting: the body without `model`, keys
/// sorted, plus the fault header.
fn request_key(request: &Map<String, Value>, fault_header: Option<&str>) -> u64 {
    let mut text = String::new();
    let without_model: Map<String, Value> = request
        .iter()
        .filter(|(key, _)| key.as_str() != "model")
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    canonical(&Value::Object(without_model), &mut text);
    text.push('\n');
    text.push_str(fault_header.unwrap_or_default());
    fnv1a(text.as_bytes())
}

/// JSON with object keys sorted, so key order does not make two requests different.
fn canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(object) => {
            let mut keys: Vec<&String> = object.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                canonical(&object[key], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// The `x-ratelimit-*` values of one response.
struct RateHeaders {
    remaining_requests: u64,
    remaining_tokens: u64,
    reset_requests: Duration,
    reset_tokens: Duration,
}

impl RateHeaders {
    /// Counts this call in the current window.
    fn counted(state: &SimState, tokens: u64) -> Self {
        let (requests, used_tokens, reset) = state.window_use(tokens);
        // Whole milliseconds, like OpenAI's own values (`12ms`, `6m0s`), not `50.652274288s`.
        let reset = Duration::from_millis(reset.as_millis() as u64);
        RateHeaders {
            remaining_requests: LIMIT_REQUESTS.saturating_sub(requests),
            remaining_tokens: LIMIT_TOKENS.saturating_sub(used_tokens),
            reset_requests: reset,
            reset_tokens: reset,
        }
    }

    /// A rate-limited call: the request budget is spent until `retry_after`.
    fn exhausted(retry_after: Duration) -> Self {
        RateHeaders {
            remaining_requests: 0,
            remaining_tokens: LIMIT_TOKENS,
            reset_requests: retry_after,
            reset_tokens: Duration::ZERO,
        }
    }
}

/// A JSON response with the headers OpenAI puts on every answer.
fn respond(status: StatusCode, body: Value, rate: RateHeaders, started: Instant) -> Response {
    let mut response = (status, axum::Json(body)).into_response();
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
        HeaderValue::from(LIMIT_REQUESTS),
    );
    headers.insert("x-ratelimit-limit-tokens", HeaderValue::from(LIMIT_TOKENS));
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
    response
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

    #[test]
    fn go_durations_round_trip_through_the_adapter_parser() {
        use crate::providers::openai::parse_go_duration;
        for millis in [
            0, 1, 12, 999, 1000, 1500, 59_999, 60_000, 360_000, 3_723_500,
        ] {
            let duration = Duration::from_millis(millis);
            assert_eq!(
                parse_go_duration(&format_go_duration(duration)),
                Some(duration),
                "{millis}ms"
            );
        }
    }

    #[test]
    fn replies_depend_only_on_the_last_user_message() {
        let a = [
            json!({"role": "system", "content": "one"}),
            json!({"role": "user", "content": "What is a queue? [sim fail=429]"}),
        ];
        let b = [
            json!({"role": "system", "content": "two"}),
            json!({"role": "user", "content": [{"type": "text", "text": "What is a queue?"}]}),
        ];
        assert_eq!(reply_text(&a), reply_text(&b));
        assert!(reply_text(&a).starts_with("This is a simulated answer to \"What is a queue?\"."));
        let c = [json!({"role": "user", "content": "Something else"})];
        assert_ne!(reply_text(&a), reply_text(&c));
    }

    #[test]
    fn request_key_ignores_model_and_key_order() {
        let a: Map<String, Value> =
            serde_json::from_value(json!({"model": "a", "messages": [], "temperature": 1}))
                .unwrap();
        let b: Map<String, Value> =
            serde_json::from_value(json!({"temperature": 1, "messages": [], "model": "b"}))
                .unwrap();
        let c: Map<String, Value> =
            serde_json::from_value(json!({"temperature": 2, "messages": [], "model": "a"}))
                .unwrap();
        assert_eq!(request_key(&a, None), request_key(&b, None));
        assert_ne!(request_key(&a, None), request_key(&c, None));
        assert_ne!(request_key(&a, None), request_key(&a, Some("429")));
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
        assert_eq!(
            parsed(ok).unwrap_err().param.as_deref(),
            Some("stream_options")
        );

        assert!(parsed(
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "frobnicate": 1})
        )
        .is_ok());
    }
}
