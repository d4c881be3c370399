//! API errors: JSON bodies with a clear message and, when one field is to blame, its path.
//!
//! `{"error": {"type": "invalid_request", "message": "…", "field": "request.messages[0].role",
//! "param": "request.messages[0].role", "code": null}}` (`code` is set, as a detail, where
//! OpenAI's clients look for one: `budget_exceeded`): a superset of OpenAI's error object
//! (`message`, `type`, `param`, `code`), so OpenAI SDKs pointed at Sluice's
//! `/v1/chat/completions` read Sluice's errors like OpenAI's.

use crate::failure::JobFailure;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub message: String,
    pub field: Option<String>,
    /// More members of the error object (e.g. the bad `lines` of a bulk upload).
    pub details: Vec<(&'static str, serde_json::Value)>,
    /// Sent as `retry-after` (whole seconds, rounded up) with a 429 or 503.
    pub retry_after: Option<std::time::Duration>,
    /// Sent as `x-should-retry: true|false`, which OpenAI's SDKs obey over their own rule
    /// (they retry 409, 429 and 5xx): `false` where a retry is sure to fail the same way or
    /// would run the work a second time.
    pub should_retry: Option<bool>,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            kind,
            message: message.into(),
            field: None,
            details: Vec::new(),
            retry_after: None,
            should_retry: None,
        }
    }

    /// Adds a member to the error object.
    pub fn with(mut self, key: &'static str, value: serde_json::Value) -> Self {
        self.details.push((key, value));
        self
    }

    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        let field = field.into();
        let message = message.into();
        ApiError {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request",
            message: if field.is_empty() {
                message
            } else {
                format!("{field}: {message}")
            },
            field: (!field.is_empty()).then_some(field),
            details: Vec::new(),
            retry_after: None,
            should_retry: None,
        }
    }

    /// The answer for a job that ended with `failure`: its status, OpenAI error type and
    /// `code` from the one mapping ([`JobFailure::answer`]), and `message`.
    pub fn for_failure(failure: JobFailure, message: impl Into<String>) -> Self {
        let answer = failure.answer();
        let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY);
        let mut error =
            ApiError::new(status, answer.error_type, message).with("code", json!(answer.code));
        error.should_retry = answer.should_retry;
        error
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", what)
    }

    pub fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "internal error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "internal error; see the server log",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({
            "type": self.kind,
            "message": self.message,
            "param": self.field,
            "code": null,
        });
        if let Some(field) = self.field {
            error["field"] = json!(field);
        }
        for (key, value) in self.details {
            error[key] = value;
        }
        let mut response = (self.status, Json(json!({ "error": error }))).into_response();
        if let Some(wait) = self.retry_after {
            let seconds = wait.as_millis().div_ceil(1000).max(1);
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(seconds as u64),
            );
        }
        if let Some(retry) = self.should_retry {
            response.headers_mut().insert(
                "x-should-retry",
                axum::http::HeaderValue::from_static(if retry { "true" } else { "false" }),
            );
        }
        response
    }
}

impl From<crate::job::FieldError> for ApiError {
    fn from(e: crate::job::FieldError) -> Self {
        ApiError::invalid(e.field, e.message)
    }
}

impl From<crate::submit::SubmitError> for ApiError {
    fn from(e: crate::submit::SubmitError) -> Self {
        use crate::submit::SubmitError;
        match e {
            SubmitError::Invalid(f) => f.into(),
            SubmitError::QueueUnavailable(_) | SubmitError::NotQueued(_) => {
                let mut error = ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "queue_unavailable",
                    e.to_string(),
                );
                error.retry_after = Some(QUEUE_RETRY_AFTER);
                error
            }
            SubmitError::Store(e) => e.into(),
            SubmitError::CustomIdReused(ref reused) => {
                let mut error = ApiError::new(
                    StatusCode::CONFLICT,
                    "idempotency_conflict",
                    format!(
                        "{e} (on /v1/chat/completions the custom_id is the idempotency-key header)"
                    ),
                )
                .with("existing_job", json!(reused.existing));
                // The same key with the same other request conflicts again, every time.
                error.should_retry = Some(false);
                error
            }
            SubmitError::BudgetExceeded(exceeded) => exceeded.into(),
        }
    }
}

/// A spent budget is a 402, not a 429: a 429 says "slow down and retry", and clients do
/// (OpenAI's SDKs retry a 429 on their own), but a spent budget refuses every retry until its
/// period resets, hours away. 402 is retried by nobody, and `code` says why.
impl From<crate::budgets::Exceeded> for ApiError {
    fn from(e: crate::budgets::Exceeded) -> Self {
        let spend = crate::pricing::PicoUsd(e.spent.0.saturating_add(e.reserved.0));
        let resets_at = e
            .resets_at
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        // The answer of a job its budget refused at its attempt, with the budget's details.
        ApiError::for_failure(JobFailure::BudgetExceeded, e.to_string())
            .with("budget", json!(e.budget))
            .with("limit_usd", json!(e.limit.to_usd_string()))
            .with("spent_usd", json!(spend.to_usd_string()))
            .with("resets_at", json!(resets_at))
    }
}

/// How long a client is asked to wait before retrying when the queue took nothing (a broker
/// unreachable or blocked by a resource alarm).
pub const QUEUE_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(5);

/// How long a client is asked to wait before retrying after the store refused a write.
pub const STORE_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(5);

/// A store that cannot write (disk full, read-only, failing I/O, locked) is a 503 with
/// `retry-after`: nothing was recorded, and the same request may succeed later. Any other
/// store failure is a defect, answered as an internal error.
impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        match e.unwritable() {
            Some(reason) => {
                tracing::error!(error = %e, "the store refused a write");
                ApiError::store_unwritable(reason)
            }
            None => ApiError::internal(e),
        }
    }
}

impl ApiError {
    /// The 503 for a store that cannot write now, naming why.
    pub fn store_unwritable(reason: crate::store::Unwritable) -> Self {
        let mut error = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            format!(
                "the store cannot record anything now ({reason}); nothing was accepted, retry \
                 later"
            ),
        );
        error.retry_after = Some(STORE_RETRY_AFTER);
        error
    }
}

impl From<crate::limits::TenantLimited> for ApiError {
    fn from(e: crate::limits::TenantLimited) -> Self {
        use crate::limits::TenantLimited;
        match &e {
            TenantLimited::Busy { retry_after, .. } => {
                let mut error =
                    ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", e.to_string());
                error.retry_after = Some(*retry_after);
                error
            }
            TenantLimited::TooLarge { .. } => {
                ApiError::new(StatusCode::BAD_REQUEST, "too_large", e.to_string())
            }
        }
    }
}

/// The largest body of a route that holds its body whole (every route but the streamed
/// uploads, `POST /v1/bulk` and `POST /v1/files`).
pub const MAX_BODY_BYTES: usize = 64 << 20;

/// Middleware: the errors axum answers by itself, before any handler (no such route, a method
/// the route does not take, a body over [`MAX_BODY_BYTES`], a malformed path), in the same JSON
/// shape as every other error, instead of an empty body or a line of plain text that OpenAI's
/// SDKs cannot read. The handlers' own errors are JSON already and pass through untouched.
pub async fn plain_errors_as_json(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let (method, path) = (request.method().clone(), request.uri().path().to_string());
    let response = next.run(request).await;
    let status = response.status();
    // A page's errors (the dashboard's) are HTML written for a person: not axum's.
    let is_json_or_page = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| {
            v.as_bytes().starts_with(b"application/json") || v.as_bytes().starts_with(b"text/html")
        });
    if !status.is_client_error() || is_json_or_page {
        return response;
    }
    let (parts, body) = response.into_parts();
    // Axum's own rejections are a line of text; anything longer is not one of them.
    let bytes = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let error = match status {
        StatusCode::NOT_FOUND => ApiError::not_found(format!("no such endpoint: {method} {path}")),
        StatusCode::METHOD_NOT_ALLOWED => ApiError::new(
            status,
            "method_not_allowed",
            format!("{path} does not take {method}"),
        ),
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            status,
            "request_too_large",
            format!(
                "the body of {method} {path} is over its limit of {} MiB; many jobs go to \
                 POST /v1/bulk, which streams its body",
                MAX_BODY_BYTES >> 20
            ),
        ),
        _ => ApiError::new(
            status,
            "invalid_request",
            crate::providers::http::fallback_message(status, &bytes),
        ),
    };
    let mut answer = error.into_response();
    // Keep what the original said beside its body (`allow` with a 405).
    for (name, value) in &parts.headers {
        if name != axum::http::header::CONTENT_TYPE && name != axum::http::header::CONTENT_LENGTH {
            answer.headers_mut().insert(name.clone(), value.clone());
        }
    }
    answer
}
