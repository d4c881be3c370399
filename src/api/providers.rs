//! `GET /v1/providers`: each deployment's live state — circuit, error rate, p50/p99 latency
//! and time to first token, and each key's remaining capacity and cooldown — so an operator
//! can see why traffic moved.
//!
//! The state lives in the memory of the process whose workers make the calls: `sluice serve`
//! shows its own workers'; a separate `sluice worker` process keeps its own, not shown here.
//! An API-only process (`serve --no-workers`) makes no calls, so every deployment shows
//! healthy with 0 calls whatever the workers see. The answer says so: `scope` is always
//! `"process"`, and `note` says whose view it is.

use super::auth::Tenant;
use super::ApiState;
use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

/// What `note` says: the view is this process's own.
pub const PROCESS_VIEW_NOTE: &str = "the health and limits of the calls this process makes \
    itself; a process without workers (serve --no-workers) makes none, and other worker \
    processes keep their own views, which are not shown here";

pub async fn list(State(state): State<ApiState>, Tenant(_tenant): Tenant) -> Json<Value> {
    Json(json!({
        "object": "list",
        "scope": "process",
        "note": PROCESS_VIEW_NOTE,
        "data": state.router.views(),
    }))
}
