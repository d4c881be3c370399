//! `GET /v1/costs`: the caller's cost report (see [`crate::costs`]), always scoped to the
//! tenant of the bearer token, so a tenant never sees another's spending (grouping by
//! `tenant` shows its own name only).
//!
//! Query: `by=team,day`, `since=7d` / `until=2026-11-24T00:00:00Z` (RFC 3339, a UTC date, or a
//! span back from now), `format=json` (default) or `csv`.

use super::auth::Tenant;
use super::error::ApiError;
use super::ApiState;
use crate::costs::{Format, ReportError, ReportQuery};
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CostsParams {
    #[serde(default)]
    by: String,
    since: Option<String>,
    until: Option<String>,
    format: Option<String>,
}

impl From<ReportError> for ApiError {
    fn from(e: ReportError) -> ApiError {
        ApiError::invalid(e.field, e.message)
    }
}

pub async fn report(
    State(state): State<ApiState>,
    Tenant(tenant): Tenant,
    Query(params): Query<CostsParams>,
) -> Result<Response, ApiError> {
    let query = ReportQuery::parse(
        Some(tenant),
        &params.by,
        params.since.as_deref(),
        params.until.as_deref(),
        chrono::Utc::now(),
    )?;
    let format: Format = params.format.as_deref().unwrap_or("json").parse()?;
    let report = state.store.cost_report(query).await?;
    Ok(match format {
        Format::Csv => ([(header::CONTENT_TYPE, "text/csv")], report.to_csv()).into_response(),
        Format::Json => axum::Json(report.to_json()).into_response(),
        Format::Table => (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            report.to_table(),
        )
            .into_response(),
    })
}
