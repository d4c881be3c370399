//! The dashboard at `/ui`: server-rendered pages (maud) over the store's reads, served by the
//! API's process, with one stylesheet, one small script and Chart.js embedded in the binary
//! (nothing loads from elsewhere; see `docs/dashboard.md`).
//!
//! A browser sends no bearer header when it follows a link, so a token is given once on
//! `/ui/login` and kept in an `HttpOnly`, `SameSite=Strict` cookie; every page authenticates
//! it through the API's own token check and its per-address throttle ([`auth`]). A tenant's
//! token shows that tenant's data only; an operator's (`[[operators]]`) shows every tenant's,
//! and opens the pages only operators see (403 for a tenant's).
//!
//! Pages are live: `ui.js` fetches the page again every few seconds and swaps its
//! `data-live` part, charts redrawn from the JSON the page carries. Unknown pages under `/ui`
//! are an HTML 404; the API's paths keep their JSON 404.

mod assets;
mod auth;
mod budgets;
mod bulks;
mod costs;
mod format;
mod job;
mod jobs;
mod overview;
mod page;
mod providers;
mod schedules;

use crate::api::ApiState;
use axum::extract::Request;
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;

pub use auth::{Viewer, COOKIE};

/// The dashboard's routes, which the API serves beside its own (see [`crate::api::router`]).
pub fn router() -> Router<ApiState> {
    Router::new()
        .route("/ui", get(overview::page))
        .route("/ui/", get(overview::page))
        .route("/ui/login", get(auth::login_page).post(auth::login))
        .route("/ui/logout", post(auth::logout))
        .route("/ui/jobs", get(jobs::page))
        .route("/ui/jobs/{id}", get(job::page))
        .route("/ui/jobs/{id}/cancel", post(job::cancel))
        .route("/ui/bulks", get(bulks::page))
        .route("/ui/costs", get(costs::page))
        .route("/ui/costs.csv", get(costs::csv))
        .route("/ui/providers", get(providers::page))
        .route("/ui/budgets", get(budgets::page))
        .route("/ui/schedules", get(schedules::page))
        .route("/ui/assets/{name}", get(assets::serve))
        .route("/ui/{*rest}", get(page::not_found))
        .layer(axum::middleware::from_fn(security_headers))
}

/// What every dashboard answer carries: a policy that lets a page load only this server's own
/// script and style (and be framed by no one), and pages never stored by a cache (they show
/// one viewer's data; assets set their own caching).
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}
