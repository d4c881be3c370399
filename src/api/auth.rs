//! Bearer-token authentication: the token names the tenant, and the tenant scopes every query.
//!
//! Tokens are compared by digest in constant time, every tenant's each time
//! ([`crate::config::ResolvedConfig::tenant_for_token`]). Guessing is slowed down per client
//! address: after [`FREE_FAILURES`] refused tokens within [`WINDOW`], an address is answered
//! `429` with `retry-after` until the window ends, without its token being looked at.

use super::{error::ApiError, ApiState};
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::Extensions;
use axum::http::StatusCode;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Refused tokens an address may send within a [`WINDOW`] before it is slowed down.
pub const FREE_FAILURES: u32 = 10;
/// How long an address's count of refused tokens lasts.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Addresses tracked at most; past it, those whose window ended are forgotten.
const MAX_TRACKED: usize = 10_000;

/// The authenticated tenant of a request.
pub struct Tenant(pub String);

/// Refused tokens per client address, in fixed windows: one per router (see
/// [`super::router`]), reached through the request's extensions.
#[derive(Default)]
pub struct AuthFailures(Mutex<HashMap<IpAddr, Window>>);

#[derive(Clone, Copy)]
struct Window {
    started: Instant,
    failures: u32,
}

impl AuthFailures {
    /// How long `address` must wait before its next token is looked at, if it must.
    fn wait(&self, address: IpAddr) -> Option<Duration> {
        let windows = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let window = windows.get(&address)?;
        let left = WINDOW.checked_sub(window.started.elapsed())?;
        (window.failures >= FREE_FAILURES).then_some(left)
    }

    /// Counts a refused token from `address`.
    fn record(&self, address: IpAddr) {
        let mut windows = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if windows.len() >= MAX_TRACKED {
            windows.retain(|_, w| w.started.elapsed() < WINDOW);
        }
        let window = windows.entry(address).or_insert(Window {
            started: Instant::now(),
            failures: 0,
        });
        if window.started.elapsed() >= WINDOW {
            *window = Window {
                started: Instant::now(),
                failures: 0,
            };
        }
        window.failures += 1;
    }
}

/// Looks a presented token up through `find`, slowed down per client address as every
/// authentication is: an address past [`FREE_FAILURES`] refused tokens within [`WINDOW`] is
/// answered `429` without its token being looked at, and each `Err(message)` of `find`
/// counts against it and answers `401` with that message. The API's bearer tokens and the
/// dashboard's sign-in share it (and, served by [`super::serve`], one count per address).
pub fn authenticate<T>(
    extensions: &Extensions,
    find: impl FnOnce() -> Result<T, String>,
) -> Result<T, ApiError> {
    // Both are there when served by `super::serve`; a router driven otherwise (tests
    // calling it directly) is not throttled.
    let address = extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip());
    let failures = extensions.get::<Arc<AuthFailures>>().cloned();
    let throttle = address.zip(failures);
    if let Some((address, failures)) = &throttle {
        if let Some(wait) = failures.wait(*address) {
            let mut error = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_failed_authentications",
                format!(
                    "{FREE_FAILURES} requests from this address had an unknown or missing \
                     token within {}s; its requests are refused until that window ends",
                    WINDOW.as_secs()
                ),
            );
            error.retry_after = Some(wait);
            return Err(error);
        }
    }
    find().map_err(|message| {
        if let Some((address, failures)) = &throttle {
            failures.record(*address);
        }
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    })
}

/// An operator (`[[operators]]`) authenticated by bearer token: what the API's `GET /metrics`
/// asks for, since the metrics name every tenant and its spend.
pub struct Operator;

/// The token of a request's `Authorization: Bearer <token>` header; `whose` names the kind of
/// token in the messages of a header that is missing or malformed.
fn bearer<'a>(parts: &'a Parts, whose: &str) -> Result<&'a str, String> {
    let header = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or_else(|| {
            format!("missing Authorization header; send \"Authorization: Bearer <{whose} token>\"")
        })?;
    header
        .to_str()
        .ok()
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(|| format!("the Authorization header must be \"Bearer <{whose} token>\""))
}

impl FromRequestParts<ApiState> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        authenticate(&parts.extensions, || {
            state
                .config
                .tenant_for_token(bearer(parts, "tenant")?)
                .map(|t| Tenant(t.name.clone()))
                .ok_or_else(|| "unknown token".to_string())
        })
    }
}

impl FromRequestParts<ApiState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        authenticate(&parts.extensions, || {
            state
                .config
                .operator_for_token(bearer(parts, "operator")?)
                .map(|_| Operator)
                .ok_or_else(|| "unknown operator token".to_string())
        })
    }
}
