//! `GET /v1/providers`: each deployment's live state — circuit, error rate, p50/p99 latency
//! and time to first token, and each key's remaining capacity and cooldown — so an operator
//! can see why traffic moved.
//!
//! Alone on a SQLite store, the state lives in the memory of the process whose workers make
//! the calls: `scope: "process"`, and `note` says whose view it is. In a cluster (a
//! PostgreSQL store) every process reports its view to the store and any process answers
//! with the cluster's (`scope: "cluster"`, see `crate::cluster::view`): an API-only process
//! shows the circuit a worker opened, and each key's capacity left in the whole cluster.

use super::auth::Tenant;
use super::error::ApiError;
use super::ApiState;
use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

/// What `note` says: the view is this process's own.
pub const PROCESS_VIEW_NOTE: &str = "the health and limits of the calls this process makes \
    itself; a process without workers (serve --no-workers) makes none, and other worker \
    processes keep their own views, which are not shown here";

/// What `note` says in a cluster.
pub const CLUSTER_VIEW_NOTE: &str = "the cluster's view: each deployment's health merged \
    from the reports of every process that calls providers (each process's own under \
    by_process; p50 latencies are averaged, p99 the worst), and each key's capacity left in \
    the whole cluster";

pub async fn list(
    State(state): State<ApiState>,
    Tenant(_tenant): Tenant,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(view(&state).await?))
}

/// The answer of `GET /v1/providers`, which the dashboard's providers page shows too.
pub async fn view(state: &ApiState) -> Result<Value, ApiError> {
    if !state.clustered {
        return Ok(json!({
            "object": "list",
            "scope": "process",
            "note": PROCESS_VIEW_NOTE,
            "data": state.router.views(),
        }));
    }
    let view = crate::cluster::view::read(&state.store, &state.router).await?;
    Ok(json!({
        "object": "list",
        "scope": "cluster",
        "note": CLUSTER_VIEW_NOTE,
        "processes": view.processes,
        "data": view.deployments,
    }))
}
