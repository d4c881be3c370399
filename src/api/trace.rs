//! The span of each API request (see [`crate::traces`]): `{METHOD} {route}`, of kind SERVER,
//! under the caller's W3C `traceparent` when it sends one, so a job a traced client submits
//! joins the client's trace. The route is the pattern (`/v1/jobs/{id}`), never the path with
//! its ids, and no header or body goes on the span.

use crate::traces::{self, TARGET};
use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use tracing::field::Empty;
use tracing::Instrument;

pub(super) async fn request(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().cloned();
    let route = route.as_ref().map_or("", MatchedPath::as_str);
    let method = request.method().clone();
    let span = tracing::info_span!(
        target: TARGET,
        "request",
        otel.name = format!("{method} {route}"),
        otel.kind = "server",
        http.request.method = method.as_str(),
        http.route = route,
        http.response.status_code = Empty,
    );
    if span.is_disabled() {
        return next.run(request).await;
    }
    traces::adopt(
        &span,
        request
            .headers()
            .get(traces::TRACEPARENT)
            .and_then(|value| value.to_str().ok()),
    );
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status();
    span.record("http.response.status_code", i64::from(status.as_u16()));
    // HTTP's conventions: a server span fails on a 5xx, its `error.type` the status code.
    if status.is_server_error() {
        traces::record_error(&span, status.as_str());
    }
    response
}
