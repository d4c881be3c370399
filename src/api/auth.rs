//! Bearer-token authentication: the token names the tenant, and the tenant scopes every query.

use super::{error::ApiError, ApiState};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::StatusCode;

/// The authenticated tenant of a request.
pub struct Tenant(pub String);

impl FromRequestParts<ApiState> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        let unauthorized = |message: &str| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                message.to_string(),
            )
        };
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| {
                unauthorized(
                    "missing Authorization header; send \"Authorization: Bearer <tenant token>\"",
                )
            })?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .ok_or_else(|| {
                unauthorized("the Authorization header must be \"Bearer <tenant token>\"")
            })?;
        state
            .config
            .tenant_for_token(token.trim())
            .map(|t| Tenant(t.name.clone()))
            .ok_or_else(|| unauthorized("unknown token"))
    }
}
