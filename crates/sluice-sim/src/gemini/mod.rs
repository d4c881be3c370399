//! The simulator's Gemini (Developer API) endpoints:
//! `POST /v1beta/models/{model}:generateContent` and
//! `POST /v1beta/models/{model}:streamGenerateContent?alt=sse` (also under `/v1`, the
//! `google-genai` SDK's default version).
//!
//! It follows Google's documented wire format, so the official SDK and Sluice's Gemini
//! adapter accept it unchanged: the key in `x-goog-api-key` or `?key=`, camelCase fields
//! (snake_case accepted too, as Google's JSON parser does) and unknown fields refused,
//! `contents` of `parts` (`text`, `inlineData`, `functionCall`, `functionResponse`), the
//! `GenerateContentResponse` with `candidates`, `finishReason`, `usageMetadata` (whose
//! `promptTokenCount` *includes* cached tokens), `modelVersion` and `responseId`; a stream
//! of `data:` chunks that ends when the connection closes; and Google RPC errors
//! (`{"error": {"code", "message", "status", "details"}}`, a `RetryInfo` on 429s). Gemini
//! sends no rate-limit headers. What the answer says is `answer`'s
//! business; this module only reads the request into a [`Conversation`] and writes the
//! [`Answer`] back in Gemini's shape.

mod request;

use crate::answer::{Answer, Conversation, Finish};
use crate::batches;
use crate::faults::{DirectiveError, Fault};
use crate::pipeline::{self, Delivery, Place, Streamed, WireError, WireFormat};
use crate::stream::Event;
use crate::{tokens, Family, Limits, RateHeaders, SimState};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
pub(crate) use request::field;
use request::Parsed;
use serde_json::{json, Map, Value};
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const OVERLOADED: &str = "The model is overloaded. Please try again later.";

pub(crate) fn routes() -> Router<Arc<SimState>> {
    Router::new()
        .route(
            "/v1beta/models/{target}",
            post(models).fallback(unknown_route),
        )
        .route("/v1/models/{target}", post(models).fallback(unknown_route))
}

/// Any other path or method: Google's `NOT_FOUND`.
pub(crate) async fn unknown_route(
    State(state): State<Arc<SimState>>,
    method: Method,
    uri: Uri,
) -> Response {
    pipeline::not_found::<Gemini>(&state, &method, &uri)
}

/// `{model}:{method}`: the one path segment Google's custom methods use.
async fn models(
    State(state): State<Arc<SimState>>,
    Path(target): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (model, action) = target.rsplit_once(':').unwrap_or((target.as_str(), ""));
    let streaming = match action {
        "generateContent" => Streaming::No,
        "streamGenerateContent" if query.get("alt").map(String::as_str) == Some("sse") => {
            Streaming::Sse
        }
        "streamGenerateContent" => Streaming::JsonArray,
        // Batch mode shares the model path; the batches module serves it.
        "batchGenerateContent" => {
            return batches::gemini::create(&state, model, &query, &headers, &body)
        }
        _ => return unknown_route(State(state), method, uri).await,
    };
    let call = Call {
        model: model.to_string(),
        streaming,
    };
    let query_key = query.get("key").map(String::as_str);
    pipeline::serve::<Gemini>(state, call, headers, query_key, &body).await
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Streaming {
    /// `generateContent`: one response.
    No,
    /// `streamGenerateContent?alt=sse`: `data:` events.
    Sse,
    /// `streamGenerateContent` without `alt=sse`: one JSON array of the chunks.
    JsonArray,
}

/// What the path and query say about a call.
pub(crate) struct Call {
    model: String,
    streaming: Streaming,
}

/// A batch item's call: `generateContent` on the batch's model.
pub(crate) fn batch_call(model: &str) -> Call {
    Call {
        model: model.to_string(),
        streaming: Streaming::No,
    }
}

/// Gemini's generateContent wire format.
pub(crate) struct Gemini;

impl WireFormat for Gemini {
    const FAMILY: Family = Family::Gemini;
    /// Gemini sends no rate-limit headers.
    const LIMITS: Option<Limits> = None;
    type Error = ApiError;
    type Target = Call;
    type Parsed<'a> = Parsed;

    fn check_auth(headers: &HeaderMap, query_key: Option<&str>) -> Result<(), ApiError> {
        check_credentials(headers, query_key)
    }

    fn not_json(error: serde_json::Error) -> ApiError {
        ApiError::invalid(format!("Invalid JSON payload received. {error}"))
    }

    fn not_an_object(_body: &Value, place: Place) -> ApiError {
        ApiError::invalid(match place {
            Place::Call => "Invalid JSON payload received. Expected an object.",
            Place::BatchItem => {
                "Invalid JSON payload received. Invalid value at 'request': expected an object."
            }
        })
    }

    /// An inline request may name its model (the SDK sets it); the batch's model rules.
    fn batch_request(request: &Map<String, Value>) -> Cow<'_, Map<String, Value>> {
        let mut request = request.clone();
        request.remove("model");
        Cow::Owned(request)
    }

    fn validate(request: &Map<String, Value>) -> Result<Parsed, ApiError> {
        request::validate(request)
    }

    /// The texts of every content part and of the system instruction.
    fn texts<'a>(request: &'a Map<String, Value>, _parsed: &Parsed) -> Vec<&'a str> {
        let system = field(request, "systemInstruction").into_iter();
        let contents = field(request, "contents")
            .and_then(Value::as_array)
            .into_iter()
            .flatten();
        system
            .chain(contents)
            .filter_map(|content| content.get("parts").and_then(Value::as_array))
            .flatten()
            .filter_map(|part| part.get("text").and_then(Value::as_str))
            .collect()
    }

    fn conversation(parsed: &Parsed) -> &Conversation {
        &parsed.conversation
    }

    fn delivery(call: &Call, _parsed: &Parsed) -> Delivery {
        match call.streaming {
            Streaming::No => Delivery::Whole,
            Streaming::Sse => Delivery::Sse,
            Streaming::JsonArray => Delivery::JsonArray,
        }
    }

    fn choices(parsed: &Parsed) -> u64 {
        parsed.candidates
    }

    fn whole(call: &Call, parsed: &Parsed, answer: &Answer) -> Value {
        whole_response(&call.model, parsed, answer)
    }

    fn streamed(call: &Call, parsed: &Parsed, answer: &Answer, delivery: Delivery) -> Streamed {
        let head = Head {
            model: &call.model,
            parsed,
            answer,
            response_id: response_id(),
        };
        let chunk = |parts, last, candidate_tokens| head.chunk(parts, last, candidate_tokens);
        match delivery {
            Delivery::Sse => {
                let events = chunks(answer, chunk)
                    .iter()
                    .map(|data| Event::new(None, data, true))
                    .collect();
                let error = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, OVERLOADED).body();
                Streamed::Sse {
                    events,
                    error: Event::new(None, &error, false),
                }
            }
            Delivery::JsonArray | Delivery::Whole => {
                Streamed::Json(Value::Array(chunks(answer, chunk)))
            }
        }
    }

    /// Not reached: a batch item is always a `generateContent`.
    fn streaming_in_batch() -> ApiError {
        ApiError::invalid("Streaming is not supported in batch mode.")
    }

    fn fault_error(state: &SimState, fault: Fault, call: &Call, _parsed: &Parsed) -> ApiError {
        fault_error(state, fault, &call.model)
    }

    fn bad_directive(error: DirectiveError) -> ApiError {
        ApiError::invalid(error.to_string())
    }

    fn shutting_down() -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "The simulator is shutting down.",
        )
    }

    fn not_found(method: &Method, uri: &Uri) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("Method not found: {method} {}", uri.path()),
        )
    }

    fn decorate(_: &mut HeaderMap, _: &str, _: Option<RateHeaders>, _: Instant) {}
}

/// A Google RPC error response.
#[derive(Debug)]
pub(super) struct ApiError {
    status: StatusCode,
    message: String,
    details: Vec<Value>,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            details: Vec::new(),
        }
    }

    pub(super) fn invalid(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    /// A refused field, with the `BadRequest` detail Google attaches.
    fn unknown_field(name: &str, within: Option<&str>) -> Self {
        let at = within.map(|w| format!(" at '{w}'")).unwrap_or_default();
        let message = format!(
            "Invalid JSON payload received. Unknown name \"{name}\"{at}: Cannot find field."
        );
        ApiError {
            details: vec![json!({
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": [{"field": within.unwrap_or(""), "description": message}],
            })],
            ..ApiError::invalid(message)
        }
    }

    pub(super) fn body(&self) -> Value {
        let mut error = json!({
            "code": self.status.as_u16(),
            "message": self.message,
            "status": rpc_status(self.status.as_u16()),
        });
        if !self.details.is_empty() {
            error["details"] = Value::Array(self.details.clone());
        }
        json!({ "error": error })
    }
}

impl WireError for ApiError {
    fn status(&self) -> StatusCode {
        self.status
    }

    fn body(&self, _request_id: &str) -> Value {
        ApiError::body(self)
    }
}

/// The `google.rpc.Code` name Google pairs with an HTTP status.
pub(super) fn rpc_status(status: u16) -> &'static str {
    match status {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ABORTED",
        412 => "FAILED_PRECONDITION",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        501 => "UNIMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        status if status >= 500 => "INTERNAL",
        _ => "INVALID_ARGUMENT",
    }
}

/// The API key, in `x-goog-api-key` or `?key=`, as Google requires one.
pub(super) fn check_key(
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Result<(), ApiError> {
    check_credentials(headers, query.get("key").map(String::as_str))
}

fn check_credentials(headers: &HeaderMap, query_key: Option<&str>) -> Result<(), ApiError> {
    let header_key = headers
        .get("x-goog-api-key")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|key| !key.trim().is_empty());
    let query_key = query_key.is_some_and(|key| !key.is_empty());
    if !header_key && !query_key {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "Method doesn't allow unregistered callers (callers without established identity). \
             Please use API Key or other form of API consumer identity to call this API.",
        ));
    }
    Ok(())
}

/// The error Gemini would send for this fault.
fn fault_error(state: &SimState, fault: Fault, model: &str) -> ApiError {
    // Gemini has one 429 for both; spent quota says which quota (per day) and gives no
    // RetryInfo, because waiting seconds does not help.
    if fault == Fault::Quota {
        return ApiError {
            details: vec![
                quota_failure("GenerateRequestsPerDayPerProjectPerModel", model),
                help(),
            ],
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "You exceeded your current quota, please check your plan and billing \
                 details. For more information on this error, head to: \
                 https://ai.google.dev/gemini-api/docs/rate-limits.",
            )
        };
    }
    let status = fault.status(503);
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match status {
        429 => {
            let retry_after = state.config.retry_after;
            ApiError {
                details: vec![
                    quota_failure("GenerateRequestsPerMinutePerProjectPerModel", model),
                    help(),
                    json!({
                        "@type": "type.googleapis.com/google.rpc.RetryInfo",
                        "retryDelay": proto_duration(retry_after),
                    }),
                ],
                ..ApiError::new(
                    code,
                    format!(
                        "You exceeded your current quota (simulated rate limit for {model}). \
                         Please retry in {}.",
                        humantime::format_duration(retry_after)
                    ),
                )
            }
        }
        400 => ApiError::new(
            code,
            "Simulated invalid request: this request carries a [sim fail=400] or [sim batch=invalid] directive.",
        ),
        401 | 403 => ApiError {
            details: vec![json!({
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
            })],
            ..ApiError::new(code, "API key not valid. Please pass a valid API key.")
        },
        404 => ApiError::new(
            code,
            format!(
                "models/{model} is not found for API version v1beta, or is not supported for \
                 generateContent."
            ),
        ),
        500 => ApiError::new(
            code,
            "An internal error has occurred. Please retry or report in \
             https://developers.generativeai.google/guide/troubleshooting",
        ),
        503 | 529 => ApiError::new(code, OVERLOADED),
        504 => ApiError::new(code, "Deadline expired before operation could complete."),
        status if status >= 500 => ApiError::new(code, format!("Simulated server error {status}.")),
        status => ApiError::new(code, format!("Simulated client error {status}.")),
    }
}

fn quota_failure(quota_id: &str, model: &str) -> Value {
    json!({
        "@type": "type.googleapis.com/google.rpc.QuotaFailure",
        "violations": [{
            "quotaMetric": "generativelanguage.googleapis.com/generate_content_requests",
            "quotaId": quota_id,
            "quotaDimensions": {"location": "global", "model": model},
        }],
    })
}

fn help() -> Value {
    json!({
        "@type": "type.googleapis.com/google.rpc.Help",
        "links": [{
            "description": "Learn more about Gemini API quotas",
            "url": "https://ai.google.dev/gemini-api/docs/rate-limits",
        }],
    })
}

/// A `google.protobuf.Duration` in JSON: seconds with a fraction when needed (`1s`,
/// `0.050s`).
fn proto_duration(duration: Duration) -> String {
    match duration.subsec_millis() {
        0 => format!("{}s", duration.as_secs()),
        millis => format!("{}.{millis:03}s", duration.as_secs()),
    }
}

fn response_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..22].to_string()
}

/// What every chunk of one answer shares.
struct Head<'a> {
    model: &'a str,
    parsed: &'a Parsed,
    answer: &'a Answer,
    response_id: String,
}

impl Head<'_> {
    /// A `GenerateContentResponse` carrying `parts` in each candidate; the `last` one has the
    /// finish reason. `candidate_tokens` is the usage so far of one candidate.
    fn chunk(&self, parts: Vec<Value>, last: bool, candidate_tokens: u64) -> Value {
        let candidates: Vec<Value> = (0..self.parsed.candidates)
            .map(|index| {
                let mut candidate = json!({
                    "content": {"parts": parts, "role": "model"},
                    "index": index,
                });
                if last {
                    candidate["finishReason"] = json!(finish_reason(&self.answer.finish));
                }
                candidate
            })
            .collect();
        json!({
            "candidates": candidates,
            "usageMetadata": usage(self.answer, candidate_tokens * self.parsed.candidates),
            "modelVersion": self.model,
            "responseId": self.response_id,
        })
    }
}

/// The whole `GenerateContentResponse` of a non-streamed answer.
fn whole_response(model: &str, parsed: &Parsed, answer: &Answer) -> Value {
    let head = Head {
        model,
        parsed,
        answer,
        response_id: response_id(),
    };
    head.chunk(parts(answer), true, answer.completion_tokens)
}

/// The chunks of a streamed answer: the text in word groups (the last with the finish
/// reason), or the whole function calls in one chunk, as Gemini sends them. Each carries
/// the usage so far; the last one the whole usage.
fn chunks(answer: &Answer, chunk: impl Fn(Vec<Value>, bool, u64) -> Value) -> Vec<Value> {
    if !answer.tool_calls.is_empty() {
        return vec![chunk(parts(answer), true, answer.completion_tokens)];
    }
    let pieces = answer.text_pieces();
    if pieces.is_empty() {
        return vec![chunk(vec![json!({"text": ""})], true, 0)];
    }
    let mut so_far = 0;
    pieces
        .iter()
        .enumerate()
        .map(|(i, piece)| {
            // Pieces split at whitespace and tokens never span it, so counts add up.
            so_far += tokens::count(piece);
            chunk(vec![json!({"text": piece})], i + 1 == pieces.len(), so_far)
        })
        .collect()
}

fn parts(answer: &Answer) -> Vec<Value> {
    if answer.tool_calls.is_empty() {
        return vec![json!({"text": answer.text})];
    }
    answer
        .tool_calls
        .iter()
        .map(|call| json!({"functionCall": {"name": call.name, "args": call.arguments}}))
        .collect()
}

fn finish_reason(finish: &Finish) -> &'static str {
    match finish {
        // Gemini has no tool-call reason: a call ends with STOP and functionCall parts.
        Finish::Stop | Finish::StopSequence(_) | Finish::ToolCalls => "STOP",
        Finish::Length => "MAX_TOKENS",
    }
}

/// `usageMetadata`: `promptTokenCount` includes the cached tokens, which are also reported
/// on their own.
fn usage(answer: &Answer, candidates_tokens: u64) -> Value {
    let mut usage = json!({
        "promptTokenCount": answer.prompt_tokens,
        "candidatesTokenCount": candidates_tokens,
        "totalTokenCount": answer.prompt_tokens + candidates_tokens,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": answer.prompt_tokens}],
    });
    if answer.cached_tokens > 0 {
        usage["cachedContentTokenCount"] = json!(answer.cached_tokens);
        usage["cacheTokensDetails"] =
            json!([{"modality": "TEXT", "tokenCount": answer.cached_tokens}]);
    }
    usage
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::answer::ToolChoice;

    fn check(body: Value) -> Result<Parsed, String> {
        let map: Map<String, Value> = serde_json::from_value(body).unwrap();
        request::validate(&map).map_err(|e| e.message)
    }

    #[test]
    fn validation_speaks_googles_words() {
        let err = check(json!({"contents": []})).err().unwrap();
        assert!(err.contains("contents is not specified"), "{err}");
        let err = check(json!({"contents": [{"role": "user", "parts": []}]}))
            .err()
            .unwrap();
        assert!(err.contains("contents[0].parts"), "{err}");
        let err = check(json!({"contents": [{"parts": [{"text": "x"}]}], "frobnicate": 1}))
            .err()
            .unwrap();
        assert!(err.contains("Unknown name \"frobnicate\""), "{err}");
        let err = check(json!({"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"max_tokens": 5}}))
            .err()
            .unwrap();
        assert!(err.contains("at 'generation_config'"), "{err}");
        // snake_case twins are the same fields.
        let ok = check(json!({"contents": [{"parts": [{"text": "x"}]}], "generation_config": {"max_output_tokens": 5}}))
            .unwrap();
        assert_eq!(ok.conversation.max_tokens, Some(5));
    }

    #[test]
    fn tools_and_any_mode_force_a_call() {
        let parsed = check(json!({
            "contents": [{"role": "user", "parts": [{"text": "weather?"}]}],
            "tools": [{"functionDeclarations": [{"name": "get_weather", "parameters": {"type": "OBJECT", "properties": {"city": {"type": "STRING"}}, "required": ["city"]}}]}],
            "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}}
        }))
        .unwrap();
        assert_eq!(
            parsed.conversation.tool_choice,
            ToolChoice::Forced(Some("get_weather".into()))
        );
    }

    #[test]
    fn retry_delays_are_proto_durations() {
        assert_eq!(proto_duration(Duration::from_secs(2)), "2s");
        assert_eq!(proto_duration(Duration::from_millis(50)), "0.050s");
    }
}
