//! HTTP plumbing every adapter shares: the whole-call deadline, transport failures as
//! [`ErrorKind`]s, and key redaction, which also bounds messages. (Waits a provider writes,
//! `retry-after` and the rest, are read in [`super::wait`].)
//!
//! The adapters differ in their wire formats and in how they read an error body; they do not
//! differ in how a call is timed, how a refused connection is reported, or how a key is kept
//! out of messages. Keeping that here means a fix to one (say, a new `retry-after` form) reaches
//! every provider at once.

use super::family::Family;
use super::{ErrorKind, ProviderError};
use bytes::Bytes;
use reqwest::header::HeaderMap;
use reqwest::{RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;

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

/// One non-streaming call, the same for every family: send, then read a 2xx body as the
/// family's completion or any other answer as its error, all under the call's deadline, the
/// key scrubbed; a successful answer's rate-limit headers say whether the key is spent (see
/// [`super::Completion::key_spent_for`]).
pub async fn exchange<F: Family>(
    call: &super::Call<'_>,
    request: RequestBuilder,
) -> Result<super::Completion, ProviderError> {
    let provider = F::NAME;
    guarded(provider, call.api_key, call.timeout, async {
        let answer = send(provider, request, call.timeout).await?;
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
            let mut completion = F::completion(answer.status.as_u16(), &answer.body, call)?;
            completion.key_spent_for = F::key_spent_for(&answer.headers);
            Ok(completion)
        } else {
            Err(F::error(&answer, SystemTime::now()))
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

/// A 2xx body read as the provider's typed answer `T`, or an `InvalidResponse`: quoting what
/// came instead when it is not JSON (whole: [`redact`] cuts it once the key is gone), naming
/// the field where it departs from the provider's format (a `tool_use` block with no `id`)
/// when it is.
pub fn typed_body<T: DeserializeOwned>(
    provider: &'static str,
    status: u16,
    body: &[u8],
) -> Result<T, ProviderError> {
    serde_json::from_slice(body).map_err(|e| {
        if !e.is_data() {
            return invalid(
                provider,
                status,
                format!(
                    "the response is not JSON ({e}): {}",
                    String::from_utf8_lossy(body).trim()
                ),
            );
        }
        // Read again, this time keeping the path, which only a failure needs.
        let mut reader = serde_json::Deserializer::from_slice(body);
        match serde_path_to_error::deserialize::<_, T>(&mut reader) {
            Err(located) => shape_error(provider, status, located),
            Ok(_) => shape_error_at(provider, status, ".", &e),
        }
    })
}

/// [`typed_body`] for JSON already read (a batch result's `message`, a stream event).
pub fn typed_value<T: DeserializeOwned>(
    provider: &'static str,
    status: u16,
    value: &Value,
) -> Result<T, ProviderError> {
    T::deserialize(value).map_err(|e| match serde_path_to_error::deserialize::<_, T>(value) {
        Err(located) => shape_error(provider, status, located),
        Ok(_) => shape_error_at(provider, status, ".", &e),
    })
}

fn shape_error(
    provider: &'static str,
    status: u16,
    located: serde_path_to_error::Error<serde_json::Error>,
) -> ProviderError {
    let path = located.path().to_string();
    shape_error_at(provider, status, &path, located.inner())
}

/// The `InvalidResponse` for JSON that is not the provider's format: where, and what is wrong.
fn shape_error_at(
    provider: &'static str,
    status: u16,
    path: &str,
    error: &serde_json::Error,
) -> ProviderError {
    let at = if path == "." {
        String::new()
    } else {
        format!(" at {path}")
    };
    invalid(
        provider,
        status,
        format!("the response does not follow {provider}'s format{at}: {error}"),
    )
}

/// A non-2xx answer as an error: the adapter's reading of its error body (`read`, given the
/// body as the family's error type `T`), or, for a body that is not the provider's error
/// format, the status's class with the body's start.
pub fn error_of<T: DeserializeOwned>(
    provider: &'static str,
    answer: &Answer,
    read: impl FnOnce(Option<u16>, T) -> Option<ProviderError>,
) -> ProviderError {
    let status = answer.status.as_u16();
    serde_json::from_slice::<T>(&answer.body)
        .ok()
        .and_then(|body| read(Some(status), body))
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
            let on_error = redact(error_of("openai", &answer, |_, _: Value| None), KEY);
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
