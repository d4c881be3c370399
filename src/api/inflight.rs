//! A bound on the request bodies held in memory at once, across all requests.
//!
//! Every route but the streamed uploads reads its body whole (up to
//! [`super::error::MAX_BODY_BYTES`]), and parsing costs about as much again: six 59 MB
//! `POST /v1/jobs` bodies at once took 552 MB. So each such request first takes its body's
//! size from one budget of [`MAX_BODY_BYTES_IN_FLIGHT`] for the whole process, held until its
//! answer is ready; a request that does not fit is answered `503` with `retry-after` at once,
//! before its body is read, naming the limit. `POST /v1/bulk` and `POST /v1/files` stream
//! their bodies in bounded memory and take nothing from it.

use super::error::{ApiError, MAX_BODY_BYTES};
use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use tokio::sync::Semaphore;

/// The most request-body bytes held at once: two of the largest bodies.
pub const MAX_BODY_BYTES_IN_FLIGHT: usize = 2 * MAX_BODY_BYTES;

/// How long a refused client is asked to wait.
const RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(2);

/// The budget of body bytes, one permit a byte.
#[derive(Clone)]
pub struct BodyBudget(Arc<Semaphore>);

impl Default for BodyBudget {
    fn default() -> Self {
        BodyBudget(Arc::new(Semaphore::new(MAX_BODY_BYTES_IN_FLIGHT)))
    }
}

/// Whether the route reads its body as a stream, in bounded memory.
fn streams_its_body(method: &Method, path: &str) -> bool {
    method == Method::POST && matches!(path, "/v1/bulk" | "/v1/files")
}

/// The bytes a request's body will hold: its `content-length`, or, for a body of unknown
/// length, the most a route reads whole; none without a body.
fn body_bytes(request: &Request) -> usize {
    let headers = request.headers();
    match headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
    {
        Some(length) => length.min(MAX_BODY_BYTES),
        None if headers.contains_key(header::TRANSFER_ENCODING) => MAX_BODY_BYTES,
        None => 0,
    }
}

/// Middleware: takes the request's body bytes from the budget for as long as the request is
/// served, or answers `503` when they are not there.
pub async fn bounded(State(budget): State<BodyBudget>, request: Request, next: Next) -> Response {
    let bytes = body_bytes(&request);
    if bytes == 0 || streams_its_body(request.method(), request.uri().path()) {
        return next.run(request).await;
    }
    // `bytes` is at most MAX_BODY_BYTES (64 MiB), within u32.
    let permits = u32::try_from(bytes).unwrap_or(u32::MAX);
    let Ok(_held) = budget.0.clone().try_acquire_many_owned(permits) else {
        let mut error = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_busy",
            format!(
                "the server is holding as many request bodies as it may ({} MiB at once, \
                 across all requests); this one ({} bytes) was not read and nothing was \
                 accepted: retry later",
                MAX_BODY_BYTES_IN_FLIGHT >> 20,
                bytes
            ),
        );
        error.retry_after = Some(RETRY_AFTER);
        return error.into_response();
    };
    next.run(request).await
}
