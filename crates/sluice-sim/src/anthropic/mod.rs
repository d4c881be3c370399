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
use chrono::{SecondsFormat, Utc};
use request::Parsed;
use serde_json::{json, Map, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the `anthropic-ratelimit-*-limit` headers announce (reported, not enforced).
pub(super) const LIMITS: Limits = Limits {
    requests: 4_000,
    tokens: 2_400_000,
};

pub(crate) fn routes() -> Router<Arc<SimState>> {
    Router::new().route("/v1/messages", post(messages).fallback(unknown_route))
}

/// Any other path or method: Anthropic's `not_found_error`.
pub(crate) async fn unknown_route(
    State(state): State<Arc<SimState>>,
    method: Method,
    uri: Uri,
) -> Response {
    pipeline::not_found::<Anthropic>(&state, &method, &uri)
}

async fn messages(State(state): State<Arc<SimState>>, headers: HeaderMap, body: Bytes) -> Response {
    pipeline::serve::<Anthropic>(state, (), headers, None, &body).await
}

/// Anthropic's Messages wire format.
pub(crate) struct Anthropic;

impl WireFormat for Anthropic {
    const FAMILY: Family = Family::Anthropic;
    const LIMITS: Option<Limits> = Some(LIMITS);
    type Error = ApiError;
    type Target = ();
    type Parsed<'a> = Parsed<'a>;

    fn check_auth(headers: &HeaderMap, _query_key: Option<&str>) -> Result<(), ApiError> {
        check_headers(headers)
    }

    fn not_json(error: serde_json::Error) -> ApiError {
        ApiError::invalid(format!(
            "There was an error parsing the body as JSON: {error}"
        ))
    }

    /// Anthropic checks a batch's params only when it runs them, so a bad request is an
    /// errored item, not a 400 for the batch.
    fn not_an_object(_body: &Value, place: Place) -> ApiError {
        ApiError::invalid(match place {
            Place::Call => "body: Input should be a valid dictionary",
            Place::BatchItem => "params: Input should be a valid dictionary",
        })
    }

    fn validate(request: &Map<String, Value>) -> Result<Parsed<'_>, ApiError> {
        request::validate(request)
    }

    /// The system prompt's text and every message's.
    fn texts<'a>(request: &'a Map<String, Value>, parsed: &Parsed<'a>) -> Vec<&'a str> {
        let mut texts = faults::content_texts(request.get("system"));
        for message in parsed.messages {
            texts.extend(faults::content_texts(message.get("content")));
        }
        texts
    }

    fn conversation<'p>(parsed: &'p Parsed<'_>) -> &'p Conversation {
        &parsed.conversation
    }

    fn delivery(_target: &(), parsed: &Parsed<'_>) -> Delivery {
        if parsed.stream {
            Delivery::Sse
        } else {
            Delivery::Whole
        }
    }

    fn whole(_target: &(), parsed: &Parsed<'_>, answer: &Answer) -> Value {
        whole_message(parsed, answer)
    }

    fn streamed(_target: &(), parsed: &Parsed<'_>, answer: &Answer, _: Delivery) -> Streamed {
        let error = json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}});
        Streamed::Sse {
            events: events(parsed, answer, &message_id()),
            error: Event::new(Some("error"), &error, false),
        }
    }

    /// The `Message`, billed at the batch tier.
    fn batch_answer(_target: &(), parsed: &Parsed<'_>, answer: &Answer) -> Value {
        let mut message = whole_message(parsed, answer);
        message["usage"]["service_tier"] = json!("batch");
        message
    }

    fn streaming_in_batch() -> ApiError {
        ApiError::invalid("stream: streaming is not supported for batch requests")
    }

    fn fault_error(state: &SimState, fault: Fault, _target: &(), _parsed: &Parsed<'_>) -> ApiError {
        fault_error(state, fault)
    }

    fn bad_directive(error: faults::DirectiveError) -> ApiError {
        ApiError::invalid(error.to_string())
    }

    fn shutting_down() -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "api_error",
            "The simulator is shutting down.",
        )
    }

    fn not_found(method: &Method, uri: &Uri) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found_error",
            format!("Not found: {method} {}", uri.path()),
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
}

impl WireError for ApiError {
    fn status(&self) -> StatusCode {
        self.status
    }

    fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    fn body(&self, request_id: &str) -> Value {
        ApiError::body(self, request_id)
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
fn decorate(
    headers: &mut HeaderMap,
    request_id: &str,
    rate: Option<RateHeaders>,
    started: Instant,
) {
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
    let Some(rate) = rate else { return };
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
