//! The OpenAI Chat Completions adapter, for OpenAI and every OpenAI-compatible API.
//!
//! Written against OpenAI's documentation (`docs/` reference, section 1), not against the
//! simulator, so that what works in tests works upstream. The canonical request already *is*
//! OpenAI's format, so the request side is small: swap in the deployment's model, force a
//! non-streaming call, keep every other field as the client wrote it. Most of the work is on
//! the failure side, because the worker's retry, fallback and cool-down decisions rest on
//! [`ErrorKind`] and `retry_after` alone.
//!
//! The API key goes only into the `Authorization` header (marked sensitive so reqwest never
//! prints it) and is scrubbed from every message this module produces, in case a provider or
//! proxy echoes it back.

use super::family::Family;
use super::http::{self, Answer};
use super::sse;
use super::stream::{self, Translate};
use super::wait::{self, LimitState, WaitUnit};
use super::{Call, Completion, ErrorKind, ProviderError, Usage};
use reqwest::header::HeaderMap;
use serde_json::Value;
use std::time::{Duration, SystemTime};

const PROVIDER: &str = "openai";

/// Calls `POST {base_url}/chat/completions`.
#[derive(Debug, Clone)]
pub struct OpenAiProvider {
    endpoint: String,
    http: reqwest::Client,
}

impl OpenAiProvider {
    /// `base_url` is the API root including its version, e.g. `https://api.openai.com/v1`
    /// or `http://127.0.0.1:8089/v1`; a trailing `/` is ignored.
    pub fn new(base_url: impl Into<String>, http: reqwest::Client) -> Self {
        let base_url = base_url.into();
        OpenAiProvider {
            endpoint: format!("{}/chat/completions", base_url.trim_end_matches('/')),
            http,
        }
    }

    /// The URL this adapter posts to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn post(&self, call: &Call<'_>, body: &Value) -> reqwest::RequestBuilder {
        self.http
            .post(&self.endpoint)
            .bearer_auth(call.api_key)
            .timeout(call.timeout)
            .json(body)
    }
}

impl Family for OpenAiProvider {
    const NAME: &'static str = PROVIDER;
    type Stream = OpenAiStream;

    fn request(
        &self,
        call: &Call<'_>,
        stream: bool,
    ) -> Result<reqwest::RequestBuilder, ProviderError> {
        Ok(self.post(call, &request_body(call, stream)))
    }

    fn completion(status: u16, body: &[u8], _: &Call<'_>) -> Result<Completion, ProviderError> {
        parse_completion(status, body)
    }

    fn error(answer: &Answer, now: SystemTime) -> ProviderError {
        error_from_answer(answer, now)
    }

    fn key_spent_for(headers: &HeaderMap) -> Option<Duration> {
        key_spent_for(headers)
    }

    fn stream(_: &Call<'_>) -> OpenAiStream {
        OpenAiStream { done: false }
    }
}

/// OpenAI's chunks are already canonical: passed through as they come, until `[DONE]`.
#[derive(Debug)]
pub struct OpenAiStream {
    done: bool,
}

impl Translate for OpenAiStream {
    fn event(&mut self, event: sse::Event) -> Result<Vec<Value>, ProviderError> {
        let data = event.data.trim();
        // The official SDK stops at data starting with `[DONE]`.
        if data.starts_with("[DONE]") {
            self.done = true;
            return Ok(Vec::new());
        }
        let chunk = stream::event_json(PROVIDER, data)?;
        // An error inside a 200 stream, as the SDK also recognises it.
        if let Some(error) = chunk.get("error") {
            let field = |name: &str| error.get(name).and_then(Value::as_str);
            let kind = match classify(429, field("code"), field("type")) {
                ErrorKind::QuotaExhausted => ErrorKind::QuotaExhausted,
                _ if field("type").is_some_and(|t| t.contains("rate_limit")) => {
                    ErrorKind::RateLimited
                }
                _ if field("type") == Some("invalid_request_error") => ErrorKind::BadRequest,
                _ => ErrorKind::ServerError,
            };
            let message = error_message(error).unwrap_or_else(|| "an error event".into());
            return Err(ProviderError {
                param: error_param(error),
                ..ProviderError::new(PROVIDER, kind, Some(200), message)
            });
        }
        Ok(vec![chunk])
    }

    fn finished(&self) -> bool {
        self.done
    }

    fn end(&mut self) -> Result<Vec<Value>, ProviderError> {
        if self.done {
            Ok(Vec::new())
        } else {
            Err(stream::incomplete(PROVIDER, "data: [DONE]"))
        }
    }
}

/// The body to send: the canonical request with the deployment's model, streaming only when
/// asked, and then with the usage in the last chunk. Also the `body` of a batch input line.
pub(crate) fn request_body(call: &Call<'_>, stream: bool) -> Value {
    let mut body = serde_json::Map::with_capacity(call.request.extra.len() + 3);
    body.insert("model".into(), Value::String(call.model.to_string()));
    body.insert(
        "messages".into(),
        Value::Array(call.request.messages.clone()),
    );
    for (key, value) in &call.request.extra {
        if key != "model" && key != "messages" {
            body.insert(key.clone(), value.clone());
        }
    }
    body.insert("stream".into(), Value::Bool(stream));
    if stream {
        let options = body
            .entry("stream_options")
            .or_insert_with(|| Value::Object(Default::default()));
        if !options.is_object() {
            *options = Value::Object(Default::default());
        }
        options["include_usage"] = Value::Bool(true);
    } else {
        // OpenAI rejects `stream_options` on a non-streaming call.
        body.remove("stream_options");
    }
    Value::Object(body)
}

/// A 2xx body: must be a chat completion with choices and usage, or the call did not
/// really succeed (a proxy's HTML page, a truncated body, an error wrapped in a 200).
fn parse_completion(status: u16, bytes: &[u8]) -> Result<Completion, ProviderError> {
    completion_from_json(status, http::json_body(PROVIDER, status, bytes)?)
}

/// [`parse_completion`] for a body already read as JSON (a batch output line's `body`).
pub(crate) fn completion_from_json(
    status: u16,
    response: Value,
) -> Result<Completion, ProviderError> {
    let invalid = |message: String| http::invalid(PROVIDER, status, message);
    if let Some(message) = response.get("error").and_then(error_message) {
        return Err(invalid(format!(
            "a success status carrying an error: {message}"
        )));
    }
    let has_choices = response
        .get("choices")
        .and_then(Value::as_array)
        .is_some_and(|choices| {
            !choices.is_empty()
                && choices
                    .iter()
                    .all(|c| c.get("message").is_some_and(Value::is_object))
        });
    if !has_choices {
        return Err(invalid(
            "the response has no \"choices\" with a \"message\"".into(),
        ));
    }
    let usage = response
        .get("usage")
        .and_then(Usage::from_canonical)
        .ok_or_else(|| ProviderError {
            // A whole answer without usage is how the server answers: another call would be
            // billed again and answer the same way, so it is not retried.
            should_retry: Some(false),
            ..invalid(
                "the response has no valid \"usage\" (prompt_tokens, completion_tokens), so the \
                 call's cost cannot be known"
                    .into(),
            )
        })?;
    Ok(Completion {
        response,
        usage,
        status,
        key_spent_for: None,
    })
}

/// A non-2xx answer, classified, with the provider's message and when to come back.
pub(crate) fn error_from_answer(answer: &Answer, now: SystemTime) -> ProviderError {
    let json: Option<Value> = serde_json::from_slice(&answer.body).ok();
    let error = error_from_json(answer.status.as_u16(), json.as_ref(), || {
        http::fallback_message(answer.status, &answer.body)
    });
    ProviderError {
        retry_after: retry_after(&answer.headers, error.kind == ErrorKind::RateLimited, now),
        should_retry: http::should_retry(&answer.headers),
        ..error
    }
}

/// An error status with its body (when the body was JSON), classified, with the provider's
/// message or else `fallback()`. Also reads a batch output line's non-200 `response`.
pub(crate) fn error_from_json(
    status: u16,
    json: Option<&Value>,
    fallback: impl FnOnce() -> String,
) -> ProviderError {
    let error = json.and_then(|j| j.get("error"));
    let field = |name: &str| error.and_then(|e| e.get(name)).and_then(Value::as_str);
    let kind = classify(status, field("code"), field("type"));
    let message = json
        .and_then(|j| {
            j.get("error")
                .and_then(error_message)
                .or_else(|| top_level_message(j))
        })
        .unwrap_or_else(fallback);
    ProviderError {
        param: error.and_then(error_param),
        ..ProviderError::new(PROVIDER, kind, Some(status), message)
    }
}

/// `error.param`: the parameter OpenAI blames (`"messages"`, `"tools[0].function.name"`);
/// null, absent or empty when none is to blame.
fn error_param(error: &Value) -> Option<String> {
    error
        .get("param")
        .and_then(Value::as_str)
        .filter(|p| !p.is_empty())
        .map(str::to_string)
}

/// `error.message`, or `error` itself when a compatible server sends a bare string.
fn error_message(error: &Value) -> Option<String> {
    match error {
        Value::String(message) if !message.is_empty() => Some(message.clone()),
        Value::Object(object) => object
            .get("message")
            .and_then(Value::as_str)
            .filter(|m| !m.is_empty())
            .map(str::to_string),
        _ => None,
    }
}

/// `message` or `detail` at the top: what vLLM, FastAPI-based servers and some gateways send.
fn top_level_message(json: &Value) -> Option<String> {
    ["message", "detail"]
        .iter()
        .find_map(|key| json.get(*key).and_then(Value::as_str))
        .filter(|m| !m.is_empty())
        .map(str::to_string)
}

/// Maps an HTTP status (and OpenAI's error code or type) to what the worker should do.
///
/// Beyond [`http::classify_status`]: a 429 is a quota problem rather than a rate limit when
/// the code (or type) says `insufficient_quota` or a spend limit, which waiting does not fix.
pub fn classify(status: u16, code: Option<&str>, kind: Option<&str>) -> ErrorKind {
    const NO_CREDIT: [&str; 3] = [
        "insufficient_quota",
        "billing_hard_limit_reached",
        "enforced_spend_limit_reached",
    ];
    let no_credit = code.is_some_and(|c| NO_CREDIT.contains(&c))
        || kind.is_some_and(|t| NO_CREDIT.contains(&t));
    match status {
        429 if no_credit => ErrorKind::QuotaExhausted,
        other => http::classify_status(other),
    }
}

/// When to come back, as the provider said: `retry-after-ms`, then `retry-after`, and for a
/// rate limit without either, the `x-ratelimit-reset-*` durations (see
/// [`wait::wait_from_limits`] for which one).
pub fn retry_after(headers: &HeaderMap, rate_limited: bool, now: SystemTime) -> Option<Duration> {
    if let Some(wait) = wait::retry_after_headers(headers, now) {
        return Some(wait);
    }
    if !rate_limited {
        return None;
    }
    wait::wait_from_limits(&limit_states(headers))
}

/// How long the key is spent for, when a successful answer's headers (plain or streamed) say
/// a limit has nothing left.
fn key_spent_for(headers: &HeaderMap) -> Option<Duration> {
    wait::exhausted_for(&limit_states(headers))
}

/// The `x-ratelimit-remaining-*` / `x-ratelimit-reset-*` pairs of an answer.
fn limit_states(headers: &HeaderMap) -> [LimitState; 2] {
    let limit = |kind: &str| LimitState {
        exhausted: http::header(headers, &format!("x-ratelimit-remaining-{kind}"))
            .and_then(|v| v.parse::<u64>().ok())
            == Some(0),
        reset: http::header(headers, &format!("x-ratelimit-reset-{kind}"))
            .and_then(|v| wait::parse_wait(v, WaitUnit::GoDuration)),
    };
    [limit("requests"), limit("tokens")]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::tests::headers;
    use reqwest::StatusCode;
    use serde_json::json;
    use sluice_core::job::ChatRequest;

    #[test]
    fn classification() {
        use ErrorKind::*;
        assert_eq!(
            classify(429, Some("rate_limit_exceeded"), Some("requests")),
            RateLimited
        );
        assert_eq!(classify(429, None, None), RateLimited);
        assert_eq!(
            classify(429, Some("insufficient_quota"), Some("insufficient_quota")),
            QuotaExhausted
        );
        assert_eq!(
            classify(429, None, Some("insufficient_quota")),
            QuotaExhausted
        );
        assert_eq!(classify(500, None, None), ServerError);
        assert_eq!(classify(503, None, None), ServerError);
        assert_eq!(classify(529, None, None), ServerError);
        assert_eq!(classify(400, Some("invalid_value"), None), BadRequest);
        assert_eq!(classify(422, None, None), BadRequest);
        assert_eq!(classify(413, None, None), BadRequest);
        assert_eq!(classify(401, Some("invalid_api_key"), None), Unauthorized);
        assert_eq!(classify(403, None, None), Unauthorized);
        assert_eq!(classify(404, Some("model_not_found"), None), NotFound);
        assert_eq!(classify(408, None, None), Timeout);
        assert_eq!(classify(409, None, None), ServerError);
        assert_eq!(classify(302, None, None), InvalidResponse);
        // A quota code on something other than a 429 does not change its meaning.
        assert_eq!(classify(400, Some("insufficient_quota"), None), BadRequest);
    }

    #[test]
    fn retry_after_falls_back_to_reset_headers_on_429_only() {
        let now = SystemTime::now();
        let h = headers(&[
            ("x-ratelimit-reset-requests", "1s"),
            ("x-ratelimit-reset-tokens", "6m0s"),
        ]);
        assert_eq!(retry_after(&h, false, now), None);
        // Which limit ran out is unknown: the sooner reset.
        assert_eq!(retry_after(&h, true, now), Some(Duration::from_secs(1)));
        let h = headers(&[
            ("x-ratelimit-reset-requests", "1s"),
            ("x-ratelimit-reset-tokens", "6m0s"),
            ("x-ratelimit-remaining-requests", "12"),
            ("x-ratelimit-remaining-tokens", "0"),
        ]);
        assert_eq!(retry_after(&h, true, now), Some(Duration::from_secs(360)));
        let h = headers(&[("x-ratelimit-reset-tokens", "12ms")]);
        assert_eq!(retry_after(&h, true, now), Some(Duration::from_millis(12)));
        assert_eq!(retry_after(&HeaderMap::new(), true, now), None);
    }

    fn answer(status: StatusCode, body: &[u8]) -> Answer {
        Answer {
            status,
            headers: HeaderMap::new(),
            body: bytes::Bytes::copy_from_slice(body),
        }
    }

    #[test]
    fn error_bodies_keep_the_providers_message() {
        let now = SystemTime::now();
        let body = br#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#;
        let e = error_from_answer(&answer(StatusCode::TOO_MANY_REQUESTS, body), now);
        assert_eq!(e.kind, ErrorKind::QuotaExhausted);
        assert_eq!(e.message, "You exceeded your current quota");
        assert_eq!(e.status, Some(429));
        assert_eq!(e.param, None, "a null param is none");

        let e = error_from_answer(
            &answer(StatusCode::BAD_GATEWAY, b"  <html>bad gateway</html>\n"),
            now,
        );
        assert_eq!(e.kind, ErrorKind::ServerError);
        assert_eq!(e.message, "<html>bad gateway</html>");

        let e = error_from_answer(
            &answer(StatusCode::BAD_REQUEST, br#"{"detail":"bad field"}"#),
            now,
        );
        assert_eq!(e.message, "bad field");
        let e = error_from_answer(
            &answer(StatusCode::BAD_REQUEST, br#"{"error":"plain"}"#),
            now,
        );
        assert_eq!(e.message, "plain");
        let e = error_from_answer(&answer(StatusCode::SERVICE_UNAVAILABLE, b""), now);
        assert_eq!(e.message, "Service Unavailable");
    }

    /// OpenAI's documented error object names the parameter to blame; it is kept.
    #[test]
    fn an_error_naming_its_param_keeps_it() {
        let now = SystemTime::now();
        let body = br#"{"error":{"message":"Invalid 'tools[0].function.name': string does not match pattern. Expected a string that matches the pattern '^[a-zA-Z0-9_-]+$'.","type":"invalid_request_error","param":"tools[0].function.name","code":"invalid_value"}}"#;
        let e = error_from_answer(&answer(StatusCode::BAD_REQUEST, body), now);
        assert_eq!(e.kind, ErrorKind::BadRequest);
        assert_eq!(e.param.as_deref(), Some("tools[0].function.name"));
        assert!(e.message.starts_with("Invalid 'tools[0].function.name'"));
        let body = br#"{"error":{"message":"Missing required parameter: 'messages'.","type":"invalid_request_error","param":"messages","code":"missing_required_parameter"}}"#;
        let e = error_from_answer(&answer(StatusCode::BAD_REQUEST, body), now);
        assert_eq!(e.param.as_deref(), Some("messages"));
        // Compatible servers' other shapes name none.
        for body in [&br#"{"detail":"bad field"}"#[..], br#"{"error":"plain"}"#] {
            let e = error_from_answer(&answer(StatusCode::BAD_REQUEST, body), now);
            assert_eq!(e.param, None);
        }
    }

    /// `x-should-retry` overrides what the status alone would say, either way.
    #[test]
    fn x_should_retry_overrides_the_status() {
        let now = SystemTime::now();
        let with = |status: StatusCode, value: &str| Answer {
            headers: headers(&[("x-should-retry", value)]),
            ..answer(status, b"")
        };
        let plain = error_from_answer(&answer(StatusCode::INTERNAL_SERVER_ERROR, b""), now);
        assert!(plain.is_retryable() && plain.should_retry.is_none());
        let told_not = error_from_answer(&with(StatusCode::INTERNAL_SERVER_ERROR, "false"), now);
        assert_eq!(told_not.kind, ErrorKind::ServerError);
        assert!(!told_not.is_retryable());
        let told_to = error_from_answer(&with(StatusCode::BAD_REQUEST, "true"), now);
        assert!(told_to.is_retryable());
        let unreadable = error_from_answer(&with(StatusCode::BAD_REQUEST, "maybe"), now);
        assert!(!unreadable.is_retryable());
    }

    #[test]
    fn success_needs_choices_and_usage() {
        let good = json!({
            "id": "chatcmpl-1", "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12,
                      "prompt_tokens_details": {"cached_tokens": 4}}
        });
        let c = parse_completion(200, good.to_string().as_bytes()).unwrap();
        assert_eq!(
            c.usage,
            Usage {
                prompt_tokens: 10,
                completion_tokens: 2,
                cached_tokens: 4,
                cache_write_tokens: 0,
            }
        );
        assert_eq!(c.response, good);

        let mut no_usage = good.clone();
        no_usage.as_object_mut().unwrap().remove("usage");
        let e = parse_completion(200, no_usage.to_string().as_bytes()).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidResponse);
        assert!(e.message.contains("usage"), "{}", e.message);
        assert!(!e.is_retryable(), "another call answers the same way");

        let mut no_choices = good.clone();
        no_choices["choices"] = json!([]);
        let e = parse_completion(200, no_choices.to_string().as_bytes()).unwrap_err();
        assert!(e.message.contains("choices"), "{}", e.message);

        let e = parse_completion(200, b"<html>").unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidResponse);
        let e = parse_completion(200, br#"{"error":{"message":"overloaded"}}"#).unwrap_err();
        assert!(e.message.contains("overloaded"), "{}", e.message);
    }

    #[test]
    fn request_body_swaps_the_model_and_keeps_unknown_fields() {
        let request: ChatRequest = serde_json::from_value(json!({
            "model": "fast",
            "messages": [{"role": "user", "content": "hi"}],
            "temperature": 0.2,
            "stream": true,
            "stream_options": {"include_usage": true},
            "future_field": {"a": [1, 2]}
        }))
        .unwrap();
        let call = Call {
            model: "gpt-4o",
            api_key: "sk-test",
            request: &request,
            timeout: Duration::from_secs(1),
            stream_idle_timeout: None,
            options: Default::default(),
        };
        let body = request_body(&call, false);
        assert_eq!(body["model"], "gpt-4o");
        assert_eq!(body["stream"], false);
        assert_eq!(body["temperature"], 0.2);
        assert_eq!(body["future_field"], json!({"a": [1, 2]}));
        assert!(body.get("stream_options").is_none());
        assert_eq!(body["messages"], json!([{"role": "user", "content": "hi"}]));
    }

    fn sse(events: &[Value]) -> String {
        let mut body: String = events.iter().map(|e| format!("data: {e}\n\n")).collect();
        body.push_str("data: [DONE]\n\n");
        body
    }

    fn chunk(choices: Value, usage: Value) -> Value {
        json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1_700_000_000,
               "model": "gpt-4o", "choices": choices, "usage": usage})
    }

    fn delta(delta: Value, finish: Value) -> Value {
        chunk(
            json!([{"index": 0, "delta": delta, "finish_reason": finish}]),
            Value::Null,
        )
    }

    #[tokio::test]
    async fn a_stream_passes_chunks_through_and_folds_with_tool_call_deltas() {
        let body = sse(&[
            delta(json!({"role": "assistant", "content": ""}), Value::Null),
            delta(
                json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": ""}}]}),
                Value::Null,
            ),
            delta(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":"}}]}),
                Value::Null,
            ),
            delta(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Oslo\"}"}}]}),
                Value::Null,
            ),
            delta(json!({}), json!("tool_calls")),
            chunk(
                json!([]),
                json!({"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15,
                                    "prompt_tokens_details": {"cached_tokens": 0}}),
            ),
        ]);
        let items =
            stream::replay_all_splits(|| OpenAiStream { done: false }, body.as_bytes()).await;
        assert_eq!(items.len(), 6);
        assert_eq!(
            items[2].as_ref().unwrap()["choices"][0]["delta"]["tool_calls"][0]["function"]
                ["arguments"],
            "{\"city\":"
        );
        let done = stream::fold(items).await.unwrap();
        let message = &done.response["choices"][0]["message"];
        assert_eq!(message["tool_calls"][0]["id"], "call_1");
        assert_eq!(
            message["tool_calls"][0]["function"]["arguments"],
            "{\"city\":\"Oslo\"}"
        );
        assert_eq!(done.response["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(done.usage.prompt_tokens, 10);
    }

    #[tokio::test]
    async fn a_stream_without_done_or_with_an_error_fails() {
        let body = format!("data: {}\n\n", delta(json!({"content": "Hi"}), Value::Null));
        let items = stream::replay(OpenAiStream { done: false }, &[body.as_bytes()]).await;
        let e = items.last().unwrap().clone().unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidResponse);
        assert!(
            e.kind.is_retryable() && e.message.contains("[DONE]"),
            "{}",
            e.message
        );

        let body = "data: {\"error\":{\"message\":\"The server had an error\",\"type\":\"server_error\"}}\n\n";
        let items = stream::replay(OpenAiStream { done: false }, &[body.as_bytes()]).await;
        let e = items[0].clone().unwrap_err();
        assert_eq!(
            (e.kind, e.message.as_str()),
            (ErrorKind::ServerError, "The server had an error")
        );
        assert_eq!(e.param, None);

        let body = "data: {\"error\":{\"message\":\"Invalid 'temperature'\",\"type\":\"invalid_request_error\",\"param\":\"temperature\",\"code\":null}}\n\n";
        let items = stream::replay(OpenAiStream { done: false }, &[body.as_bytes()]).await;
        let e = items[0].clone().unwrap_err();
        assert_eq!(
            (e.kind, e.param.as_deref()),
            (ErrorKind::BadRequest, Some("temperature"))
        );
    }

    #[test]
    fn a_streaming_body_asks_for_usage() {
        let request: ChatRequest = serde_json::from_value(json!({
            "model": "fast", "messages": [{"role": "user", "content": "hi"}],
            "stream_options": {"include_obfuscation": false}
        }))
        .unwrap();
        let call = Call {
            model: "gpt-4o",
            api_key: "sk-test",
            request: &request,
            timeout: Duration::from_secs(1),
            stream_idle_timeout: None,
            options: Default::default(),
        };
        let body = request_body(&call, true);
        assert_eq!(body["stream"], true);
        assert_eq!(
            body["stream_options"],
            json!({"include_obfuscation": false, "include_usage": true})
        );
    }
}
