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

mod request;

use crate::answer::{self, Answer, Conversation, Finish};
use crate::faults::{self, Fault};
use crate::pipeline::{self, Delivery, Place, Streamed, WireError, WireFormat};
use crate::stream::Event;
use crate::{Family, Limits, RateHeaders, SimState};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use request::{Parsed, Streaming};
use serde_json::{json, Map, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the `x-ratelimit-limit-*` headers announce. Reported, not enforced: limits are
/// simulated with faults, which tests can aim.
pub(super) const LIMITS: Limits = Limits {
    requests: 10_000,
    tokens: 30_000_000,
};

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
    pipeline::not_found::<OpenAi>(&state, &method, &uri)
}

async fn chat_completions(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    pipeline::serve::<OpenAi>(state, (), headers, None, &body).await
}

/// OpenAI's Chat Completions wire format.
pub(crate) struct OpenAi;

impl WireFormat for OpenAi {
    const FAMILY: Family = Family::OpenAi;
    const LIMITS: Option<Limits> = Some(LIMITS);
    type Error = ApiError;
    type Target = ();
    type Parsed<'a> = Parsed<'a>;

    fn check_auth(headers: &HeaderMap, _query_key: Option<&str>) -> Result<(), ApiError> {
        check_auth(headers)
    }

    fn not_json(_error: serde_json::Error) -> ApiError {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "We could not parse the JSON body of your request. (HINT: This likely means you \
             aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, \
             but what was sent was not valid JSON.)",
            "invalid_request_error",
        )
    }

    fn not_an_object(body: &Value, _place: Place) -> ApiError {
        ApiError::wrong_type("body", "an object", body)
    }

    fn validate(request: &Map<String, Value>) -> Result<Parsed<'_>, ApiError> {
        request::validate(request)
    }

    /// Every piece of text in the messages.
    fn texts<'a>(_request: &'a Map<String, Value>, parsed: &Parsed<'a>) -> Vec<&'a str> {
        parsed
            .messages
            .iter()
            .flat_map(|message| faults::content_texts(message.get("content")))
            .collect()
    }

    fn conversation<'p>(parsed: &'p Parsed<'_>) -> &'p Conversation {
        &parsed.conversation
    }

    fn delivery(_target: &(), parsed: &Parsed<'_>) -> Delivery {
        match parsed.stream {
            Some(_) => Delivery::Sse,
            None => Delivery::Whole,
        }
    }

    fn choices(parsed: &Parsed<'_>) -> u64 {
        parsed.n
    }

    fn whole(_target: &(), parsed: &Parsed<'_>, answer: &Answer) -> Value {
        completion(parsed, answer)
    }

    fn streamed(_target: &(), parsed: &Parsed<'_>, answer: &Answer, _: Delivery) -> Streamed {
        let streaming = parsed.stream.unwrap_or_default();
        Streamed::Sse {
            events: chunks(parsed, answer, streaming),
            // What OpenAI's SDKs raise as an APIError: an `error` object in a data line.
            error: Event::new(
                None,
                &ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "The server had an error while processing your request. Sorry about that!",
                    "server_error",
                )
                .body(),
                false,
            ),
        }
    }

    fn streaming_in_batch() -> ApiError {
        ApiError::invalid(
            "stream",
            "invalid_value",
            "Streaming is not supported for batch requests.",
        )
    }

    fn fault_error(state: &SimState, fault: Fault, _target: &(), parsed: &Parsed<'_>) -> ApiError {
        fault_error(state, fault, parsed.model)
    }

    fn bad_directive(error: faults::DirectiveError) -> ApiError {
        ApiError::invalid("messages", "invalid_value", error.to_string())
    }

    fn shutting_down() -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "The simulator is shutting down.",
            "server_error",
        )
    }

    fn not_found(method: &Method, uri: &Uri) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("Invalid URL ({method} {})", uri.path()),
            "invalid_request_error",
        )
    }

    fn decorate(
        headers: &mut HeaderMap,
        request_id: &str,
        rate: Option<RateHeaders>,
        started: Instant,
    ) {
        decorate(headers, request_id, rate, started)
    }

    /// OpenAI's SDKs read `retry-after-ms` first; whole seconds (rounded up, so a client
    /// never comes back early) serve everyone else.
    fn retry_after_headers(headers: &mut HeaderMap, retry_after: Duration) {
        let seconds = retry_after.as_millis().div_ceil(1000);
        headers.insert("retry-after", HeaderValue::from(seconds as u64));
        headers.insert(
            "retry-after-ms",
            HeaderValue::from(retry_after.as_millis() as u64),
        );
    }
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

impl WireError for ApiError {
    fn status(&self) -> StatusCode {
        self.status
    }

    fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    fn body(&self, _request_id: &str) -> Value {
        ApiError::body(self)
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
fn decorate(
    headers: &mut HeaderMap,
    request_id: &str,
    rate: Option<RateHeaders>,
    started: Instant,
) {
    let text = |s: String| HeaderValue::from_str(&s).unwrap_or(HeaderValue::from_static("0"));
    headers.insert("x-request-id", text(request_id.to_string()));
    headers.insert("openai-version", HeaderValue::from_static("2020-10-01"));
    headers.insert(
        "openai-processing-ms",
        HeaderValue::from(started.elapsed().as_millis() as u64),
    );
    let Some(rate) = rate else { return };
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
        request::validate(&map).map(|_| ())
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
