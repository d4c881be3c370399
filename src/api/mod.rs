//! The HTTP API (axum): the native job API, OpenAI's chat endpoint, and health.
//!
//! - `POST /v1/jobs`: one job or an array; answers with the job ids.
//! - `GET /v1/jobs/{id}`: status, result, attempts and cost; `?wait=30s` long-polls until the
//!   job is final or the wait runs out.
//! - `DELETE /v1/jobs/{id}`: cancels a queued job.
//! - `POST /v1/chat/completions`: OpenAI's endpoint; runs the request as a `realtime` job and
//!   answers with its completion (see [`chat`]).
//! - `POST /v1/bulk`, `GET /v1/bulk/{id}`, `GET /v1/bulk/{id}/results`,
//!   `POST /v1/bulk/{id}/cancel`: bulk JSONL in and out (see [`bulk`]); `GET /v1/models`.
//! - `GET /v1/providers`: each deployment's health and each key's capacity (see
//!   [`providers`]).
//! - `POST /v1/files`, `GET /v1/files`, `GET /v1/files/{id}`, `DELETE /v1/files/{id}`,
//!   `GET /v1/files/{id}/content` (see [`files`]) and
//!   `POST /v1/batches`, `GET /v1/batches`, `GET /v1/batches/{id}`,
//!   `POST /v1/batches/{id}/cancel` (see [`batches`]): OpenAI's Files and Batches API, a
//!   batch being a view of a bulk.
//! - `GET /v1/costs`: the tenant's cost report, grouped and over a time range (see
//!   [`costs`]).
//! - `GET /v1/budgets`: the tenant's budgets this period: limit, spent, reserved, remaining,
//!   thresholds crossed (see [`budgets`]). Submitting a job that counts against a `reject`
//!   budget already spent answers 402 with `code: "budget_exceeded"`.
//! - `GET /healthz` (liveness; says whether the queue is reachable) and `GET /readyz`
//!   (readiness: `503` naming the problem while the queue is unreachable or blocked by a
//!   broker's resource alarm, or the store cannot be read or cannot commit a write). A
//!   worker-only process serves these two alone ([`serve_health`]).
//! - `GET /metrics`: Prometheus metrics for an operator's bearer token (see [`metrics`]);
//!   with `[telemetry] metrics_listen` also on an address of their own, without a token
//!   ([`serve_metrics`]).
//!
//! Request bodies read whole are held to [`inflight::MAX_BODY_BYTES_IN_FLIGHT`] at once
//! across all requests (a `503` beyond it); see [`inflight`].
//!
//! Each request is a span of its caller's trace (see [`trace`]), when traces are exported.
//!
//! Every `/v1` route needs `Authorization: Bearer <tenant token>` (an address that sent
//! ten unknown tokens within a minute waits out the minute: `429`, see [`auth`]); a tenant sees only its own
//! jobs (another tenant's id is a 404, indistinguishable from an unknown id).

pub mod auth;
pub mod batches;
mod budgets;
pub mod bulk;
mod chat;
mod costs;
mod error;
pub mod files;
mod inflight;
mod jobs;
mod metrics;
pub mod providers;
mod trace;

pub use chat::JOB_ID_HEADER;
pub use error::ApiError;

use crate::config::ResolvedConfig;
use crate::store::Store;
use crate::submit::Submitter;
use axum::routing::get;
use axum::Router;
use std::sync::Arc;

/// What every handler can reach.
#[derive(Clone)]
pub struct ApiState {
    pub config: Arc<ResolvedConfig>,
    pub store: Store,
    pub submitter: Submitter,
    /// The deployments' live health and limits, for `GET /v1/providers`.
    pub router: Arc<crate::router::Router>,
    /// Requests and tokens per minute each tenant may submit.
    pub tenant_limits: Arc<crate::limits::TenantLimits>,
    /// Whether the process is one of a cluster, whose shared view `GET /v1/providers`
    /// shows.
    pub clustered: bool,
}

/// The API's routes, with `pages` (the dashboard's, `crate::ui::router`) beside them: under
/// the same body limits and the same count of failed authentications per address.
pub fn router(state: ApiState, pages: Router<ApiState>) -> Router {
    health_routes()
        .merge(pages)
        .merge(metrics_routes(&state.config))
        .route("/v1/jobs", axum::routing::post(jobs::create))
        .route("/v1/jobs/{id}", get(jobs::get).delete(jobs::cancel))
        .route("/v1/chat/completions", axum::routing::post(chat::create))
        .route(
            "/v1/bulk",
            // The body is streamed, never held: no size limit.
            axum::routing::post(bulk::submit).layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .route("/v1/bulk/{id}", get(bulk::get))
        .route("/v1/bulk/{id}/results", get(bulk::results))
        .route("/v1/bulk/{id}/cancel", axum::routing::post(bulk::cancel))
        .route("/v1/models", get(bulk::models))
        .route("/v1/providers", get(providers::list))
        .route(
            "/v1/files",
            // An upload is streamed to its store and cut off at files::MAX_FILE_BYTES by the
            // handler; the list added after the layer keeps the default limit.
            axum::routing::post(files::upload)
                .layer(axum::extract::DefaultBodyLimit::disable())
                .get(files::list),
        )
        .route("/v1/files/{id}", get(files::get).delete(files::delete))
        .route("/v1/files/{id}/content", get(files::content))
        .route("/v1/batches", get(batches::list).post(batches::create))
        .route("/v1/batches/{id}", get(batches::get))
        .route(
            "/v1/batches/{id}/cancel",
            axum::routing::post(batches::cancel),
        )
        .route("/v1/costs", get(costs::report))
        .route("/v1/budgets", get(budgets::list))
        // After routing, so the span is named by the matched route.
        .route_layer(axum::middleware::from_fn(trace::request))
        .layer(axum::extract::DefaultBodyLimit::max(error::MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            inflight::BodyBudget::default(),
            inflight::bounded,
        ))
        .layer(axum::middleware::from_fn(error::plain_errors_as_json))
        .layer(axum::Extension(Arc::new(auth::AuthFailures::default())))
        .with_state(state)
}

/// `GET /healthz` and `GET /readyz`: every process's, whether it serves the API or not.
fn health_routes() -> Router<ApiState> {
    Router::new()
        .route("/healthz", get(health))
        .route("/readyz", get(ready))
}

/// `GET /metrics` (see [`metrics`]), on the API's port for an operator's token, unless the
/// configuration says not.
fn metrics_routes(config: &ResolvedConfig) -> Router<ApiState> {
    let routes = Router::new();
    if config.telemetry.metrics_on_api {
        routes.route("/metrics", get(metrics::scrape_as_operator))
    } else {
        routes
    }
}

/// OpenAI's cursor page (`GET /v1/batches`, `GET /v1/files`): `data` (objects with an `id`)
/// and whether more follow the last.
fn cursor_page(data: Vec<serde_json::Value>, has_more: bool) -> serde_json::Value {
    serde_json::json!({
        "object": "list",
        "first_id": data.first().map(|o| o["id"].clone()),
        "last_id": data.last().map(|o| o["id"].clone()),
        "has_more": has_more,
        "data": data,
    })
}

/// `GET /healthz`: liveness. The process answers, whatever its dependencies say (restarting
/// it would not bring a broker back); the body says whether the queue is reachable.
async fn health(
    axum::extract::State(state): axum::extract::State<ApiState>,
) -> axum::Json<serde_json::Value> {
    let queue = &state.submitter.queue;
    axum::Json(serde_json::json!({
        "status": "ok",
        "queue": queue.name(),
        "queue_available": queue.is_available(),
    }))
}

/// How long `GET /readyz` waits for its write to the store.
const READY_WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// `GET /readyz`: readiness. `503` naming what is missing while the queue cannot take a job
/// (unreachable, blocked by a broker's memory or disk alarm, not confirming a probe message:
/// [`crate::queue::Queue::probe`]) or the store cannot record a job (it commits one small write: a database that reads well may
/// still be full or read-only), so a load balancer sends submissions to an instance that can
/// take them instead of one that would refuse each. `queue_ready` and `store_writable` say
/// whether each took its probe, `problems` why not.
async fn ready(
    axum::extract::State(state): axum::extract::State<ApiState>,
) -> (axum::http::StatusCode, axum::Json<serde_json::Value>) {
    let queue = &state.submitter.queue;
    let mut problems = Vec::new();
    let queue_ready = queue.probe().await;
    if let Err(unready) = &queue_ready {
        problems.push(format!("the queue ({}) {unready}", queue.name()));
    }
    if let Err(e) = state.store.probe_read().await {
        problems.push(format!("the store cannot be read: {e}"));
    }
    let written = tokio::time::timeout(READY_WRITE_TIMEOUT, state.store.probe_write()).await;
    let store_writable = matches!(written, Ok(Ok(())));
    match written {
        Ok(Ok(())) => {}
        Ok(Err(e)) => problems.push(match e.unwritable() {
            Some(reason) => format!("the store cannot record jobs: {reason} ({e})"),
            None => format!("the store cannot record jobs: {e}"),
        }),
        Err(_) => problems.push(format!(
            "the store did not commit a write within {}s",
            READY_WRITE_TIMEOUT.as_secs()
        )),
    }
    let status = if problems.is_empty() {
        axum::http::StatusCode::OK
    } else {
        axum::http::StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({
        "status": if problems.is_empty() { "ready" } else { "unavailable" },
        "queue": queue.name(),
        "queue_ready": queue_ready.is_ok(),
        "store_writable": store_writable,
        "problems": problems,
    });
    (status, axum::Json(body))
}

/// Serves the API, and `pages` beside it, on `listener` until `shutdown` resolves. Start-up
/// duties (resuming batch submissions) are the app's: see `App::serve`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ApiState,
    pages: Router<ApiState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // The client's address, for slowing down repeated failed authentications (see `auth`).
    let app = router(state, pages).into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(crate::sim::no_delay(listener), app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Serves `GET /healthz` and `GET /readyz` alone on `listener` until `shutdown` resolves:
/// the health of a process that runs workers and no API (`sluice worker --health-listen`),
/// for a container's health check or an orchestrator's probes. Its readiness is the API's:
/// the queue takes a probe and the store commits a write, which a worker needs as much.
pub async fn serve_health(
    listener: tokio::net::TcpListener,
    state: ApiState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, health_routes().with_state(state))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Serves `GET /metrics` alone on `listener` until `shutdown` resolves: `[telemetry]
/// metrics_listen`, for a scraper kept off the API's port and for a worker-only process.
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    state: ApiState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let routes = Router::new()
        .route("/metrics", get(metrics::scrape))
        .layer(axum::middleware::from_fn(error::plain_errors_as_json))
        .with_state(state);
    axum::serve(listener, routes)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Parses an id from a path, naming what it should identify when it is not a UUID.
pub(crate) fn parse_id(text: &str, what: &str) -> Result<uuid::Uuid, ApiError> {
    uuid::Uuid::parse_str(text)
        .map_err(|_| ApiError::invalid("id", format!("\"{text}\" is not a {what} id (a UUID)")))
}
