//! HTTP plumbing every adapter shares: the whole-call deadline, transport failures as
//! [`ErrorKind`]s, `retry-after` parsing, and key redaction, which also bounds messages.
//!
//! The adapters differ in their wire formats and in how they read an error body; they do not
//! differ in how a call is timed, how a refused connection is reported, or how a key is kept
//! out of messages. Keeping that here means a fix to one (say, a new `retry-after` form) reaches
//! every provider at once.

use super::{ErrorKind, ProviderError};
use bytes::Bytes;
use reqwest::header::HeaderMap;
use reqwest::{RequestBuilder, StatusCode};
use serde_json::Value;
use std::future::Future;
use std::time::{Duration, SystemTime};

/// The longest message (in characters) an error keeps of what a provider wrote: its own
/// message, or the start of a body that was not one. Cut by [`redact`], after the key is gone.
pub const MESSAGE_CHARS: usize = 1000;

/// A complete HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Runs one call under the whole-call deadline and scrubs the key from any error.
///
/// reqwest's own timeout covers connect to last body byte; this outer one is a backstop so no
/// path (a slow DNS resolver, a stalled body) outlives `timeout`.
pub async fn guarded<T>(
    provider: &'static str,
    api_key: &str,
    timeout: Duration,
    call: impl Future<Output = Result<T, ProviderError>>,
) -> Result<T, ProviderError> {
    let outcome = match tokio::time::timeout(timeout, call).await {
        Ok(outcome) => outcome,
        Err(_) => Err(timeout_error(provider, timeout)),
    };
    outcome.map_err(|error| redact(error, api_key))
}

/// One non-streaming call, the same for every adapter: send, then `parse` a 2xx body or
/// read any other answer with `on_error`, all under the deadline, the key scrubbed. `spent`
/// reads a successful answer's rate-limit headers for a key the provider says is used up
/// (see [`super::Completion::key_spent_for`]).
pub async fn exchange(
    provider: &'static str,
    api_key: &str,
    timeout: Duration,
    request: RequestBuilder,
    parse: impl FnOnce(u16, &[u8]) -> Result<super::Completion, ProviderError> + Send,
    on_error: impl FnOnce(&Answer) -> ProviderError + Send,
    spent: impl FnOnce(&HeaderMap) -> Option<Duration> + Send,
) -> Result<super::Completion, ProviderError> {
    guarded(provider, api_key, timeout, async {
        let answer = send(provider, request, timeout).await?;
        tracing::debug!(
            provider,
            status = answer.status.as_u16(),
            // OpenAI's header, then Anthropic's; worth logging for support requests.
            request_id = header(&answer.headers, "x-request-id")
                .or_else(|| header(&answer.headers, "request-id"))
                .unwrap_or("-"),
            "provider answered"
        );
        if answer.status.is_success() {
            let mut completion = parse(answer.status.as_u16(), &answer.body)?;
            completion.key_spent_for = spent(&answer.headers);
            Ok(completion)
        } else {
            Err(on_error(&answer))
        }
    })
    .await
}

/// An API key as a header value marked sensitive, so reqwest (and anything printing the
/// request) never shows it.
pub fn key_header(api_key: &str) -> reqwest::header::HeaderValue {
    let mut value = reqwest::header::HeaderValue::from_str(api_key)
        .unwrap_or_else(|_| reqwest::header::HeaderValue::from_static(""));
    value.set_sensitive(true);
    value
}

/// Sends a prepared request (headers and JSON body set) and reads the whole answer.
pub async fn send(
    provider: &'static str,
    request: RequestBuilder,
    timeout: Duration,
) -> Result<Answer, ProviderError> {
    let response = start(provider, request, timeout).await?;
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .bytes()
        .await
        .map_err(|e| transport_error(provider, &e, timeout))?;
    Ok(Answer {
        status,
        headers,
        body,
    })
}

/// Sends a request and returns as soon as the status and headers are in (for streams).
pub async fn start(
    provider: &'static str,
    request: RequestBuilder,
    timeout: Duration,
) -> Result<reqwest::Response, ProviderError> {
    request
        .send()
        .await
        .map_err(|e| transport_error(provider, &e, timeout))
}

pub fn timeout_error(provider: &'static str, timeout: Duration) -> ProviderError {
    ProviderError::new(
        provider,
        ErrorKind::Timeout,
        None,
        format!(
            "no complete answer within {}",
            humantime::format_duration(timeout)
        ),
    )
}

/// A timeout set by the route rather than the whole call: `what` did not happen within
/// `limit`, the setting named so an operator knows which knob fired.
pub fn limit_error(
    provider: &'static str,
    what: &str,
    limit: Duration,
    setting: &str,
) -> ProviderError {
    ProviderError::new(
        provider,
        ErrorKind::Timeout,
        None,
        format!(
            "{what} within {} (the route's {setting})",
            humantime::format_duration(limit)
        ),
    )
}

/// A failure before any HTTP status, or while reading a body: timeout or connection trouble.
pub fn transport_error(
    provider: &'static str,
    error: &reqwest::Error,
    timeout: Duration,
) -> ProviderError {
    if error.is_timeout() {
        return timeout_error(provider, timeout);
    }
    // reqwest's Display stops at "error sending request"; the cause chain says why
    // (connection refused, reset, DNS).
    ProviderError::new(provider, ErrorKind::Connection, None, error_chain(error))
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

/// Maps an HTTP status to what the worker should do, before any provider-specific reading of
/// the body: 408 and 409 are retried as the official SDKs do (request timeout, lock
/// conflict), 529 is Anthropic's overload, any other 4xx is the request's fault.
pub fn classify_status(status: u16) -> ErrorKind {
    match status {
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

/// A 2xx body that is not what the provider documents.
pub fn invalid(provider: &'static str, status: u16, message: impl Into<String>) -> ProviderError {
    ProviderError::new(provider, ErrorKind::InvalidResponse, Some(status), message)
}

/// A 2xx body as JSON, or an `InvalidResponse` quoting what came instead (whole: [`redact`]
/// cuts it once the key is gone).
pub fn json_body(provider: &'static str, status: u16, body: &[u8]) -> Result<Value, ProviderError> {
    serde_json::from_slice(body).map_err(|e| {
        invalid(
            provider,
            status,
            format!(
                "the response is not JSON ({e}): {}",
                String::from_utf8_lossy(body).trim()
            ),
        )
    })
}

/// A non-2xx answer as an error: the adapter's reading of its JSON body (`read`), or, for a
/// body that is not the provider's error format, the status's class with the body's start.
pub fn error_of(
    provider: &'static str,
    answer: &Answer,
    read: impl FnOnce(Option<u16>, &Value) -> Option<ProviderError>,
) -> ProviderError {
    let status = answer.status.as_u16();
    serde_json::from_slice::<Value>(&answer.body)
        .ok()
        .and_then(|json| read(Some(status), &json))
        .unwrap_or_else(|| {
            ProviderError::new(
                provider,
                classify_status(status),
                Some(status),
                fallback_message(answer.status, &answer.body),
            )
        })
}

/// The message for an error body the adapter could not read: the body (whole: [`redact`]
/// cuts it once the key is gone), or the status's reason phrase when it is empty.
pub fn fallback_message(status: StatusCode, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("no message")
            .to_string()
    } else {
        text.to_string()
    }
}

/// Removes the key from the provider's text (message and param), should anything upstream
/// have echoed it, and only then cuts that text to [`MESSAGE_CHARS`]. In this order: a cut
/// made first could fall inside the key and leave all but its end behind, where replacing
/// the whole key would no longer find it. Every error an adapter returns passes here
/// ([`guarded`], the stream driver, the batch clients).
pub fn redact(mut error: ProviderError, api_key: &str) -> ProviderError {
    let scrub = |text: &mut String| {
        if !api_key.is_empty() && text.contains(api_key) {
            *text = text.replace(api_key, "[redacted]");
        }
        cut(text);
    };
    scrub(&mut error.message);
    if let Some(param) = &mut error.param {
        scrub(param);
    }
    error
}

/// Trims `text` and keeps its first [`MESSAGE_CHARS`] characters, marking a cut with `…`.
fn cut(text: &mut String) {
    let trimmed = text.trim();
    let end = trimmed
        .char_indices()
        .nth(MESSAGE_CHARS)
        .map_or(trimmed.len(), |(at, _)| at);
    let mut kept = trimmed[..end].to_string();
    if end < trimmed.len() {
        kept.push('…');
    }
    *text = kept;
}

/// A header's value as trimmed text.
pub fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// `x-should-retry: true|false`: the provider telling its clients whether to retry a failed
/// call, whatever its status (OpenAI's and Anthropic's SDKs obey it before anything else).
pub fn should_retry(headers: &HeaderMap) -> Option<bool> {
    match header(headers, "x-should-retry")? {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

/// The longest wait Sluice takes from a provider: a day. A provider's hint is a number it
/// wrote (`retry-after: 1e20` is valid text), and a wait is added to clocks and timers: a
/// bound keeps every such sum meaningful, and a day outlasts any rate-limit window.
pub const MAX_PROVIDER_WAIT: Duration = Duration::from_secs(24 * 60 * 60);

/// How a provider writes a wait as a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitUnit {
    /// `retry-after: 1.5`: decimal seconds (the SDKs accept fractions).
    Seconds,
    /// `retry-after-ms: 250`: decimal milliseconds.
    Milliseconds,
    /// Gemini's `retryDelay: "26s"`: a protobuf JSON `Duration`, decimal seconds and an `s`.
    ProtoDuration,
}

/// Reads a wait a provider wrote as a number, the one way every adapter reads one: `None`
/// for anything but a number that is not negative (text, `NaN`, `-1`), and at most
/// [`MAX_PROVIDER_WAIT`] however large (`1e20`, `inf`).
pub fn parse_wait(text: &str, unit: WaitUnit) -> Option<Duration> {
    let text = text.trim();
    let (number, seconds_per_unit) = match unit {
        WaitUnit::Seconds => (text, 1.0),
        WaitUnit::Milliseconds => (text, 1e-3),
        WaitUnit::ProtoDuration => (text.strip_suffix('s')?, 1.0),
    };
    wait_of_seconds(number.parse::<f64>().ok()? * seconds_per_unit)
}

/// `seconds` as a wait: `None` when negative or `NaN`, at most [`MAX_PROVIDER_WAIT`], rounded
/// to whole nanoseconds (so `1.5` is exactly 1.5 s). The arithmetic under [`parse_wait`],
/// also for waits a provider writes in other forms (OpenAI's Go durations).
pub fn wait_of_seconds(seconds: f64) -> Option<Duration> {
    if seconds.is_nan() || seconds < 0.0 {
        return None;
    }
    let bounded = seconds.min(MAX_PROVIDER_WAIT.as_secs_f64());
    Some(Duration::from_nanos((bounded * 1e9).round() as u64))
}

/// When to come back, as the standard headers say: `retry-after-ms`, then `retry-after`
/// (seconds, fractions allowed, or an HTTP date). The official OpenAI and Anthropic SDKs read
/// both, in this order.
pub fn retry_after_headers(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    header(headers, "retry-after-ms")
        .and_then(|ms| parse_wait(ms, WaitUnit::Milliseconds))
        .or_else(|| header(headers, "retry-after").and_then(|value| parse_retry_after(value, now)))
}

/// `retry-after`: delay seconds (the SDKs accept fractions) or an HTTP date.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    if value.trim().parse::<f64>().is_ok() {
        return parse_wait(value, WaitUnit::Seconds);
    }
    let date = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    Some(until(
        SystemTime::from(date.with_timezone(&chrono::Utc)),
        now,
    ))
}

/// How long from `now` to `at`, at most [`MAX_PROVIDER_WAIT`]; a time in the past means
/// "now".
pub fn until(at: SystemTime, now: SystemTime) -> Duration {
    at.duration_since(now)
        .unwrap_or(Duration::ZERO)
        .min(MAX_PROVIDER_WAIT)
}

/// One rate limit's state from a provider's headers: whether it is used up, and when it
/// resets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitState {
    pub exhausted: bool,
    pub reset: Option<Duration>,
}

/// The wait a 429 implies from per-limit reset headers. The limits whose `remaining` is 0 name
/// what ran out (the latest of their resets, since all must recover); when none says so, the
/// soonest reset, because a token bucket's reset counts until it is *full* (often minutes)
/// while one request needs far less.
pub fn wait_from_limits(limits: &[LimitState]) -> Option<Duration> {
    exhausted_for(limits).or_else(|| limits.iter().filter_map(|l| l.reset).min())
}

/// How long until every used-up limit has reset (the latest of their resets), when any is
/// used up: the key can take nothing before then.
pub fn exhausted_for(limits: &[LimitState]) -> Option<Duration> {
    limits
        .iter()
        .filter(|l| l.exhausted)
        .filter_map(|l| l.reset)
        .max()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    pub(crate) fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
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
        assert_eq!(
            retry_after_headers(&h, now),
            Some(Duration::from_millis(250))
        );
        let h = headers(&[("retry-after", "3")]);
        assert_eq!(retry_after_headers(&h, now), Some(Duration::from_secs(3)));
        let h = headers(&[("retry-after", "0.5")]);
        assert_eq!(
            retry_after_headers(&h, now),
            Some(Duration::from_millis(500))
        );
        // 1_700_000_000 is Tue, 14 Nov 2023 22:13:20 GMT.
        let h = headers(&[("retry-after", "Tue, 14 Nov 2023 22:13:30 GMT")]);
        assert_eq!(retry_after_headers(&h, now), Some(Duration::from_secs(10)));
        let h = headers(&[("retry-after", "Tue, 14 Nov 2023 22:00:00 GMT")]);
        assert_eq!(retry_after_headers(&h, now), Some(Duration::ZERO));
        let h = headers(&[("retry-after", "soon")]);
        assert_eq!(retry_after_headers(&h, now), None);
    }

    /// Whatever number a provider sends, the wait is a duration Sluice can add to a clock:
    /// never a panic, never past [`MAX_PROVIDER_WAIT`]; nonsense is no hint at all.
    #[test]
    fn a_provider_wait_is_bounded_whatever_it_says() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        for (name, value, expected) in [
            ("retry-after", "1e20", Some(MAX_PROVIDER_WAIT)),
            (
                "retry-after",
                "1.8446744073709552e19",
                Some(MAX_PROVIDER_WAIT),
            ),
            ("retry-after", "1e400", Some(MAX_PROVIDER_WAIT)),
            ("retry-after", "inf", Some(MAX_PROVIDER_WAIT)),
            ("retry-after", "86401", Some(MAX_PROVIDER_WAIT)),
            ("retry-after", "1.25", Some(Duration::from_millis(1250))),
            ("retry-after", "-1", None),
            ("retry-after", "-inf", None),
            ("retry-after", "NaN", None),
            (
                "retry-after",
                "Fri, 31 Dec 9999 23:59:59 GMT",
                Some(MAX_PROVIDER_WAIT),
            ),
            ("retry-after-ms", "1e23", Some(MAX_PROVIDER_WAIT)),
            ("retry-after-ms", "1e300", Some(MAX_PROVIDER_WAIT)),
            ("retry-after-ms", "0.5", Some(Duration::from_micros(500))),
            ("retry-after-ms", "12", Some(Duration::from_millis(12))),
            ("retry-after-ms", "-5", None),
            ("retry-after-ms", "nan", None),
        ] {
            let h = headers(&[(name, value)]);
            assert_eq!(retry_after_headers(&h, now), expected, "{name}: {value}");
        }
        for (text, expected) in [
            ("26s", Some(Duration::from_secs(26))),
            ("1.5s", Some(Duration::from_millis(1500))),
            ("1e20s", Some(MAX_PROVIDER_WAIT)),
            ("0.001s", Some(Duration::from_millis(1))),
            ("-3s", None),
            ("NaNs", None),
            ("30", None),
        ] {
            assert_eq!(
                parse_wait(text, WaitUnit::ProtoDuration),
                expected,
                "{text}"
            );
        }
    }

    #[test]
    fn the_exhausted_limit_decides_else_the_soonest() {
        let s = Duration::from_secs;
        let l = |exhausted, reset: Option<u64>| LimitState {
            exhausted,
            reset: reset.map(s),
        };
        assert_eq!(
            wait_from_limits(&[l(false, Some(1)), l(false, Some(360))]),
            Some(s(1))
        );
        assert_eq!(
            wait_from_limits(&[l(false, Some(1)), l(true, Some(360))]),
            Some(s(360))
        );
        assert_eq!(
            wait_from_limits(&[l(true, Some(5)), l(true, Some(9))]),
            Some(s(9))
        );
        assert_eq!(
            wait_from_limits(&[l(true, None), l(false, Some(4))]),
            Some(s(4))
        );
        assert_eq!(wait_from_limits(&[]), None);
    }

    #[test]
    fn statuses_classify() {
        use ErrorKind::*;
        for (status, kind) in [
            (429, RateLimited),
            (401, Unauthorized),
            (403, Unauthorized),
            (404, NotFound),
            (408, Timeout),
            (409, ServerError),
            (400, BadRequest),
            (413, BadRequest),
            (422, BadRequest),
            (500, ServerError),
            (503, ServerError),
            (529, ServerError),
            (302, InvalidResponse),
        ] {
            assert_eq!(classify_status(status), kind, "{status}");
        }
    }

    #[test]
    fn messages_fall_back_to_a_snippet_or_the_reason() {
        assert_eq!(
            fallback_message(StatusCode::BAD_GATEWAY, b"  <html>bad gateway</html>\n"),
            "<html>bad gateway</html>"
        );
        assert_eq!(
            fallback_message(StatusCode::SERVICE_UNAVAILABLE, b""),
            "Service Unavailable"
        );
        let long = "x".repeat(5000);
        let error = ProviderError::new(
            "openai",
            ErrorKind::ServerError,
            Some(500),
            fallback_message(StatusCode::INTERNAL_SERVER_ERROR, long.as_bytes()),
        );
        let message = redact(error, "sk-secret-123").message;
        assert_eq!(message.chars().count(), MESSAGE_CHARS + 1);
        assert!(message.ends_with('…'));
        let e = json_body("openai", 200, b"<html>").unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidResponse);
    }

    #[test]
    fn the_key_is_scrubbed_from_messages() {
        let error = ProviderError::new(
            "openai",
            ErrorKind::Unauthorized,
            Some(401),
            "Incorrect API key provided: sk-secret-123.",
        );
        let error = redact(error, "sk-secret-123");
        assert_eq!(error.message, "Incorrect API key provided: [redacted].");
        assert!(!error.to_string().contains("sk-secret"));
    }

    /// A key the provider echoes anywhere in a body that is not its error format, on an error
    /// status or a 200, never leaves even a fragment behind: the message is cut only after
    /// the key is gone, wherever the cut falls.
    #[test]
    fn an_echoed_key_leaves_no_fragment_at_any_offset() {
        const KEY: &str = "sk-Q7pK2mW9vR4tY6uH3j";
        let fragments: Vec<&str> = (0..KEY.len() - 3).map(|at| &KEY[at..at + 4]).collect();
        for offset in 0..1200 {
            let body = format!("{}{KEY}{}", "x".repeat(offset), "y".repeat(400));
            let answer = Answer {
                status: StatusCode::BAD_GATEWAY,
                headers: HeaderMap::new(),
                body: Bytes::from(body.clone()),
            };
            let on_error = redact(error_of("openai", &answer, |_, _| None), KEY);
            let on_200 = redact(json_body("openai", 200, body.as_bytes()).unwrap_err(), KEY);
            for error in [on_error, on_200] {
                assert!(
                    !fragments.iter().any(|f| error.message.contains(f)),
                    "key at {offset}: {}",
                    error.message
                );
                assert!(error.message.chars().count() <= MESSAGE_CHARS + 1);
            }
        }
    }

    /// A param is provider text too: a key echoed there is scrubbed as in the message.
    #[test]
    fn the_key_is_scrubbed_from_the_param() {
        let error = ProviderError {
            param: Some("api_key=sk-secret-123".into()),
            ..ProviderError::new("openai", ErrorKind::BadRequest, Some(400), "bad")
        };
        let error = redact(error, "sk-secret-123");
        assert_eq!(error.param.as_deref(), Some("api_key=[redacted]"));
        let kept = ProviderError {
            param: Some("temperature".into()),
            ..ProviderError::new("openai", ErrorKind::BadRequest, Some(400), "bad")
        };
        assert_eq!(
            redact(kept, "sk-secret-123").param.as_deref(),
            Some("temperature")
        );
    }
}
