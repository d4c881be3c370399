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

use super::{Call, Completion, ErrorKind, Provider, ProviderError, Usage};
use async_trait::async_trait;
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::Value;
use std::time::{Duration, SystemTime};

const PROVIDER: &str = "openai";
/// How much of a non-JSON error body to keep as the message.
const SNIPPET_CHARS: usize = 300;

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
}

#[async_trait]
impl Provider for OpenAiProvider {
    async fn chat(&self, call: Call<'_>) -> Result<Completion, ProviderError> {
        let body = request_body(&call);
        // reqwest's own timeout covers connect to last body byte; the outer one is a
        // backstop so no path (a slow DNS resolver, a stalled body) outlives `call.timeout`.
        let result = tokio::time::timeout(call.timeout, self.exchange(&call, &body)).await;
        let outcome = match result {
            Ok(outcome) => outcome,
            Err(_) => Err(ProviderError {
                kind: ErrorKind::Timeout,
                status: None,
                message: format!(
                    "no complete answer within {}",
                    humantime::format_duration(call.timeout)
                ),
                provider: PROVIDER,
                retry_after: None,
            }),
        };
        outcome.map_err(|error| redact(error, call.api_key))
    }
}

impl OpenAiProvider {
    async fn exchange(&self, call: &Call<'_>, body: &Value) -> Result<Completion, ProviderError> {
        let response = self
            .http
            .post(&self.endpoint)
            .bearer_auth(call.api_key)
            .timeout(call.timeout)
            .json(body)
            .send()
            .await
            .map_err(|e| transport_error(&e, call.timeout))?;
        let status = response.status();
        let headers = response.headers().clone();
        let request_id = headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_string();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| transport_error(&e, call.timeout))?;
        tracing::debug!(
            endpoint = %self.endpoint,
            model = call.model,
            status = status.as_u16(),
            request_id,
            "openai chat completion answered"
        );
        if status.is_success() {
            parse_completion(status.as_u16(), &bytes)
        } else {
            Err(error_from_response(
                status,
                &headers,
                &bytes,
                SystemTime::now(),
            ))
        }
    }
}

/// The body to send: the canonical request with the deployment's model, never streaming.
fn request_body(call: &Call<'_>) -> Value {
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
    body.insert("stream".into(), Value::Bool(false));
    // OpenAI rejects `stream_options` on a non-streaming call.
    body.remove("stream_options");
    Value::Object(body)
}

/// A 2xx body: must be a chat completion with choices and usage, or the call did not
/// really succeed (a proxy's HTML page, a truncated body, an error wrapped in a 200).
fn parse_completion(status: u16, bytes: &[u8]) -> Result<Completion, ProviderError> {
    let invalid = |message: String| ProviderError {
        kind: ErrorKind::InvalidResponse,
        status: Some(status),
        message,
        provider: PROVIDER,
        retry_after: None,
    };
    let response: Value = serde_json::from_slice(bytes).map_err(|e| {
        invalid(format!(
            "the response is not JSON ({e}): {}",
            snippet(&String::from_utf8_lossy(bytes))
        ))
    })?;
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
    let usage = response.get("usage").and_then(parse_usage).ok_or_else(|| {
        invalid("the response has no valid \"usage\" (prompt_tokens, completion_tokens)".into())
    })?;
    Ok(Completion {
        response,
        usage,
        status,
    })
}

fn parse_usage(usage: &Value) -> Option<Usage> {
    Some(Usage {
        prompt_tokens: usage.get("prompt_tokens")?.as_u64()?,
        completion_tokens: usage.get("completion_tokens")?.as_u64()?,
        cached_tokens: usage
            .pointer("/prompt_tokens_details/cached_tokens")
            .and_then(Value::as_u64)
            .unwrap_or(0),
    })
}

/// A failure before any HTTP status: timeout or connection trouble.
fn transport_error(error: &reqwest::Error, timeout: Duration) -> ProviderError {
    let (kind, message) = if error.is_timeout() {
        (
            ErrorKind::Timeout,
            format!(
                "no complete answer within {}",
                humantime::format_duration(timeout)
            ),
        )
    } else {
        // reqwest's Display stops at "error sending request"; the cause chain says why
        // (connection refused, reset, DNS).
        (ErrorKind::Connection, error_chain(error))
    };
    ProviderError {
        kind,
        status: None,
        message,
        provider: PROVIDER,
        retry_after: None,
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

/// A non-2xx answer, classified, with the provider's message and when to come back.
fn error_from_response(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    now: SystemTime,
) -> ProviderError {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    let error = json.as_ref().and_then(|j| j.get("error"));
    let field = |name: &str| error.and_then(|e| e.get(name)).and_then(Value::as_str);
    let kind = classify(status.as_u16(), field("code"), field("type"));
    let message = json
        .as_ref()
        .and_then(|j| {
            j.get("error")
                .and_then(error_message)
                .or_else(|| top_level_message(j))
        })
        .unwrap_or_else(|| {
            let text = String::from_utf8_lossy(body);
            let text = snippet(&text);
            if text.is_empty() {
                status
                    .canonical_reason()
                    .unwrap_or("no message")
                    .to_string()
            } else {
                text
            }
        });
    ProviderError {
        kind,
        status: Some(status.as_u16()),
        message,
        provider: PROVIDER,
        retry_after: retry_after(headers, kind == ErrorKind::RateLimited, now),
    }
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
/// Beyond the obvious: a 429 is a quota problem rather than a rate limit when the code (or
/// type) says `insufficient_quota` or a spend limit, which waiting does not fix; 408 and 409
/// are retried like OpenAI's own SDK does (request timeout, lock conflict); any other 4xx is
/// the request's fault.
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
        429 => ErrorKind::RateLimited,
        401 | 403 => ErrorKind::Unauthorized,
        404 => ErrorKind::NotFound,
        408 => ErrorKind::Timeout,
        409 => ErrorKind::ServerError,
        400..=499 => ErrorKind::BadRequest,
        500..=599 => ErrorKind::ServerError,
        // 1xx/3xx reaching us means something between us and the provider misbehaved.
        _ => ErrorKind::InvalidResponse,
    }
}

/// When to come back, as the provider said: `retry-after-ms`, then `retry-after` (seconds,
/// fractions allowed, or an HTTP date), and for a rate limit without either, the
/// `x-ratelimit-reset-*` durations.
///
/// Of the two reset headers, the one whose `remaining` is 0 names the exhausted limit; if
/// that is unknown, the sooner reset is taken, because `reset-tokens` counts until the
/// bucket is *full* (often minutes) while one request needs far less.
pub fn retry_after(headers: &HeaderMap, rate_limited: bool, now: SystemTime) -> Option<Duration> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(ms) = header("retry-after-ms").and_then(|v| v.parse::<f64>().ok()) {
        if ms.is_finite() && ms >= 0.0 {
            return Some(Duration::from_secs_f64(ms / 1000.0));
        }
    }
    if let Some(value) = header("retry-after") {
        if let Some(duration) = parse_retry_after(value, now) {
            return Some(duration);
        }
    }
    if !rate_limited {
        return None;
    }
    let reset =
        |kind: &str| header(&format!("x-ratelimit-reset-{kind}")).and_then(parse_go_duration);
    let exhausted = |kind: &str| {
        header(&format!("x-ratelimit-remaining-{kind}")).and_then(|v| v.parse::<u64>().ok())
            == Some(0)
    };
    let requests = reset("requests");
    let tokens = reset("tokens");
    match (exhausted("requests"), exhausted("tokens")) {
        (true, false) if requests.is_some() => requests,
        (false, true) if tokens.is_some() => tokens,
        (true, true) => requests.max(tokens),
        _ => match (requests, tokens) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        },
    }
}

/// `retry-after`: delay seconds (OpenAI's SDK accepts fractions) or an HTTP date.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    if let Ok(seconds) = value.parse::<f64>() {
        return (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds));
    }
    let date = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let at = SystemTime::from(date.with_timezone(&chrono::Utc));
    // A date in the past means "now".
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Parses a Go `time.Duration` string as OpenAI's `x-ratelimit-reset-*` headers carry them:
/// `6m0s`, `1s`, `12ms`, `1.5s`, `1h2m3.5s`, `0`. Units `h m s ms us µs ns`.
pub fn parse_go_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if text == "0" {
        return Some(Duration::ZERO);
    }
    if text.is_empty() || text.starts_with('-') {
        return None;
    }
    let mut rest = text.strip_prefix('+').unwrap_or(text);
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number = &rest[..number_end];
        if number.is_empty() || number == "." {
            return None;
        }
        let value: f64 = number.parse().ok()?;
        rest = &rest[number_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds_per_unit = match &rest[..unit_end] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" | "μs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        total += value * seconds_per_unit;
        rest = &rest[unit_end..];
    }
    if !total.is_finite() {
        return None;
    }
    // Rounded to whole nanoseconds so `1.5s` is exactly 1.5 s, not 1.499999999 s.
    let nanos = (total * 1e9).round();
    (nanos < u64::MAX as f64).then(|| Duration::from_nanos(nanos as u64))
}

fn snippet(text: &str) -> String {
    let text = text.trim();
    let mut cut: String = text.chars().take(SNIPPET_CHARS).collect();
    if cut.len() < text.len() {
        cut.push('…');
    }
    cut
}

/// Removes the key from a message, should anything upstream have echoed it.
fn redact(mut error: ProviderError, api_key: &str) -> ProviderError {
    if !api_key.is_empty() && error.message.contains(api_key) {
        error.message = error.message.replace(api_key, "[redacted]");
    }
    error
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::ChatRequest;
    use reqwest::header::HeaderValue;
    use serde_json::json;

    #[test]
    fn go_durations() {
        let ms = Duration::from_millis;
        assert_eq!(parse_go_duration("6m0s"), Some(ms(360_000)));
        assert_eq!(parse_go_duration("1s"), Some(ms(1000)));
        assert_eq!(parse_go_duration("12ms"), Some(ms(12)));
        assert_eq!(parse_go_duration("1.5s"), Some(ms(1500)));
        assert_eq!(parse_go_duration("1h2m3.5s"), Some(ms(3_723_500)));
        assert_eq!(parse_go_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_go_duration("0s"), Some(Duration::ZERO));
        assert_eq!(parse_go_duration("250us"), Some(Duration::from_micros(250)));
        assert_eq!(parse_go_duration("250µs"), Some(Duration::from_micros(250)));
        assert_eq!(parse_go_duration("7ns"), Some(Duration::from_nanos(7)));
        assert_eq!(parse_go_duration(" 2s "), Some(ms(2000)));
        for bad in ["", "s", "1", "1x", "-1s", "1.s.", "..5s", "1m-2s", "ms"] {
            assert_eq!(parse_go_duration(bad), None, "{bad}");
        }
    }

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

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn retry_after_prefers_milliseconds_then_seconds_then_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let h = headers(&[("retry-after-ms", "250"), ("retry-after", "3")]);
        assert_eq!(retry_after(&h, true, now), Some(Duration::from_millis(250)));
        let h = headers(&[("retry-after", "3")]);
        assert_eq!(retry_after(&h, false, now), Some(Duration::from_secs(3)));
        let h = headers(&[("retry-after", "0.5")]);
        assert_eq!(retry_after(&h, true, now), Some(Duration::from_millis(500)));
        // 1_700_000_000 is Tue, 14 Nov 2023 22:13:20 GMT.
        let h = headers(&[("retry-after", "Tue, 14 Nov 2023 22:13:30 GMT")]);
        assert_eq!(retry_after(&h, true, now), Some(Duration::from_secs(10)));
        let h = headers(&[("retry-after", "Tue, 14 Nov 2023 22:00:00 GMT")]);
        assert_eq!(retry_after(&h, true, now), Some(Duration::ZERO));
        let h = headers(&[("retry-after", "soon")]);
        assert_eq!(retry_after(&h, true, now), None);
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

    #[test]
    fn error_bodies_keep_the_providers_message() {
        let now = SystemTime::now();
        let body = br#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#;
        let e = error_from_response(StatusCode::TOO_MANY_REQUESTS, &HeaderMap::new(), body, now);
        assert_eq!(e.kind, ErrorKind::QuotaExhausted);
        assert_eq!(e.message, "You exceeded your current quota");
        assert_eq!(e.status, Some(429));

        let e = error_from_response(
            StatusCode::BAD_GATEWAY,
            &HeaderMap::new(),
            b"  <html>bad gateway</html>\n",
            now,
        );
        assert_eq!(e.kind, ErrorKind::ServerError);
        assert_eq!(e.message, "<html>bad gateway</html>");

        let e = error_from_response(
            StatusCode::BAD_REQUEST,
            &HeaderMap::new(),
            br#"{"detail":"bad field"}"#,
            now,
        );
        assert_eq!(e.message, "bad field");
        let e = error_from_response(
            StatusCode::BAD_REQUEST,
            &HeaderMap::new(),
            br#"{"error":"plain"}"#,
            now,
        );
        assert_eq!(e.message, "plain");
        let e = error_from_response(StatusCode::SERVICE_UNAVAILABLE, &HeaderMap::new(), b"", now);
        assert_eq!(e.message, "Service Unavailable");

        let long = "x".repeat(1000);
        let e = error_from_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &HeaderMap::new(),
            long.as_bytes(),
            now,
        );
        assert_eq!(e.message.chars().count(), SNIPPET_CHARS + 1);
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
                cached_tokens: 4
            }
        );
        assert_eq!(c.response, good);

        let mut no_usage = good.clone();
        no_usage.as_object_mut().unwrap().remove("usage");
        let e = parse_completion(200, no_usage.to_string().as_bytes()).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidResponse);
        assert!(e.message.contains("usage"), "{}", e.message);

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
        };
        let body = request_body(&call);
        assert_eq!(body["model"], "gpt-4o");
        assert_eq!(body["stream"], false);
        assert_eq!(body["temperature"], 0.2);
        assert_eq!(body["future_field"], json!({"a": [1, 2]}));
        assert!(body.get("stream_options").is_none());
        assert_eq!(body["messages"], json!([{"role": "user", "content": "hi"}]));
    }

    #[test]
    fn the_key_is_scrubbed_from_messages() {
        let error = ProviderError {
            kind: ErrorKind::Unauthorized,
            status: Some(401),
            message: "Incorrect API key provided: sk-secret-123.".into(),
            provider: PROVIDER,
            retry_after: None,
        };
        let error = redact(error, "sk-secret-123");
        assert_eq!(error.message, "Incorrect API key provided: [redacted].");
        assert!(!error.to_string().contains("sk-secret"));
    }
}
