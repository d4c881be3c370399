//! `GET /v1/budgets`: the caller's budgets and where each stands this period (see
//! [`crate::budgets`]). Always the bearer token's tenant: a budget of another tenant, and
//! another tenant's total of a shared tag budget, are never shown.

use super::auth::Tenant;
use super::error::ApiError;
use super::ApiState;
use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

pub async fn list(
    State(state): State<ApiState>,
    Tenant(tenant): Tenant,
) -> Result<Json<Value>, ApiError> {
    let budgets = &state.submitter.budgets;
    let views = crate::budgets::view::views(&state.store, budgets, &[tenant.as_str()]).await?;
    Ok(Json(json!({ "object": "list", "data": views })))
}
