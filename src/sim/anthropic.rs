//! Placeholder.
use super::SimState;
use axum::extract::State;
use axum::http::{Method, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use std::sync::Arc;

pub(crate) fn routes() -> Router<Arc<SimState>> {
    Router::new()
}

pub(crate) async fn unknown_route(
    State(_state): State<Arc<SimState>>,
    _method: Method,
    _uri: Uri,
) -> Response {
    axum::http::StatusCode::NOT_FOUND.into_response()
}
