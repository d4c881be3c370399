//! `GET /v1/providers`: each deployment's live state — circuit, error rate, p50/p99 latency
//! and time to first token, and each key's remaining capacity and cooldown — so an operator
//! can see why traffic moved.
//!
//! The state lives in the memory of the process whose workers make the calls: `sluice serve`
//! shows its own workers'; a separate `sluice worker` process keeps its own, not shown here.

use super::auth::Tenant;
use super::ApiState;
use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

pub async fn list(State(state): State<ApiState>, Tenant(_tenant): Tenant) -> Json<Value> {
    Json(json!({ "object": "list", "data": state.router.views() }))
}
