//! `GET /metrics`: the process's Prometheus metrics in the text exposition format, its
//! gauges read from their sources first (see [`crate::telemetry::sample`]). Served on the
//! API port (unless `[telemetry] metrics_on_api = false`) and, with `metrics_listen`, on a
//! listener of its own ([`super::serve_metrics`]), which is how a `sluice worker` process is
//! scraped.
//!
//! The labels name every tenant and its spend, so on the API's port, which tenants reach,
//! the scraper sends an operator's token (`Authorization: Bearer`, Prometheus'
//! `authorization.credentials`; [`scrape_as_operator`]). The `metrics_listen` address is
//! the operator's own choice of a private one and asks for no token ([`scrape`]), as
//! Prometheus' targets usually do.

use super::auth::Operator;
use super::error::ApiError;
use super::ApiState;
use crate::telemetry::sample::{self, Sources};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

/// The content type of Prometheus' text format.
pub const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `GET /metrics` on the API's port: an operator's only.
pub async fn scrape_as_operator(
    _operator: Operator,
    state: State<ApiState>,
) -> Result<Response, ApiError> {
    scrape(state).await
}

/// `GET /metrics` on the `metrics_listen` address.
pub async fn scrape(State(state): State<ApiState>) -> Result<Response, ApiError> {
    let submitter = &state.submitter;
    let metrics = &submitter.metrics;
    if !metrics.is_on() {
        return Err(ApiError::not_found(
            "metrics are off in this process ([telemetry] metrics = false)",
        ));
    }
    let sources = Sources {
        config: &state.config,
        store: &state.store,
        queue: submitter.queue.as_ref(),
        router: &state.router,
        budgets: &submitter.budgets,
    };
    sample::refresh(metrics, &sources).await;
    let text = metrics.render().unwrap_or_default();
    Ok(([(header::CONTENT_TYPE, TEXT_FORMAT)], text).into_response())
}
