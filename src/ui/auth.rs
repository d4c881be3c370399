//! Signing in to the dashboard, and who a page is shown to.
//!
//! `/ui/login` takes a token in a form and, when it is a tenant's or an operator's, keeps it
//! in the [`COOKIE`]: `HttpOnly` (no script reads it), `SameSite=Strict` (no other site's page
//! sends it, so a form elsewhere cannot cancel a job) and scoped to `/ui`. Every page checks
//! it again through [`crate::api::auth::authenticate`], the API's check with its throttle
//! per address, so a token removed from the configuration stops working at the next
//! restart, and any process of a cluster serves any page. Without a cookie a page sends the
//! browser to the sign-in form; with a cookie that no longer names anyone, the same, the
//! cookie cleared. Serve the dashboard over TLS beyond one machine (the cookie holds the
//! token, as the API's header does).

use super::page::{self, UiError};
use crate::api::auth::authenticate;
use crate::api::ApiState;
use crate::config::ResolvedConfig;
use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{header, Extensions, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use cookie::{Cookie, SameSite};
use maud::html;
use serde::Deserialize;

/// The cookie holding the dashboard's token.
pub const COOKIE: &str = "sluice_token";

/// Who a page is shown to.
#[derive(Debug, Clone)]
pub enum Viewer {
    /// A tenant: its own jobs, costs and budgets only.
    Tenant(String),
    /// An operator (`[[operators]]`): every tenant's.
    Operator(String),
}

impl Viewer {
    /// The tenant whose data this viewer sees; `None` for an operator, who sees everyone's.
    pub fn tenant(&self) -> Option<&str> {
        match self {
            Viewer::Tenant(name) => Some(name),
            Viewer::Operator(_) => None,
        }
    }

    pub fn is_operator(&self) -> bool {
        matches!(self, Viewer::Operator(_))
    }

    pub fn name(&self) -> &str {
        match self {
            Viewer::Tenant(name) | Viewer::Operator(name) => name,
        }
    }

    /// Refuses a tenant a page only operators see.
    pub fn require_operator(&self) -> Result<(), UiError> {
        match self {
            Viewer::Operator(_) => Ok(()),
            Viewer::Tenant(_) => Err(UiError::Forbidden),
        }
    }

    /// The viewer `token` names: a tenant's token first, then an operator's (validation
    /// keeps them apart).
    fn of_token(config: &ResolvedConfig, token: &str) -> Result<Viewer, String> {
        if let Some(tenant) = config.tenant_for_token(token) {
            return Ok(Viewer::Tenant(tenant.name.clone()));
        }
        config
            .operator_for_token(token)
            .map(|operator| Viewer::Operator(operator.name.clone()))
            .ok_or_else(|| "unknown token".to_string())
    }
}

/// The token in the request's [`COOKIE`], if it has one.
fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(Cookie::split_parse_encoded)
        .filter_map(Result::ok)
        .find(|cookie| cookie.name() == COOKIE)
        .map(|cookie| cookie.value().to_string())
}

/// The `Set-Cookie` value keeping `token` (`None`: removing it).
fn set_cookie(token: Option<&str>) -> HeaderValue {
    let mut cookie = Cookie::build((COOKIE, token.unwrap_or_default().to_string()))
        .path("/ui")
        .http_only(true)
        .same_site(SameSite::Strict)
        .build();
    if token.is_none() {
        cookie.make_removal();
    }
    HeaderValue::from_str(&cookie.encoded().to_string()).expect("an encoded cookie is ASCII")
}

impl FromRequestParts<ApiState> for Viewer {
    type Rejection = UiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, UiError> {
        let next = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/ui".into());
        // No cookie is no failed authentication: the sign-in form, nothing counted.
        let Some(token) = cookie_token(&parts.headers) else {
            return Err(UiError::SignIn { next, clear: false });
        };
        authenticate(&parts.extensions, || {
            Viewer::of_token(&state.config, &token)
        })
        .map_err(|e| match e.status {
            StatusCode::UNAUTHORIZED => UiError::SignIn { next, clear: true },
            _ => UiError::Api(e),
        })
    }
}

#[derive(Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

/// Where to go after signing in: a dashboard page, never another site.
fn safe_next(next: Option<&str>) -> &str {
    next.filter(|n| n.starts_with("/ui") && !n.starts_with("/ui/login"))
        .unwrap_or("/ui")
}

/// `GET /ui/login`: the sign-in form.
pub async fn login_page(Query(query): Query<LoginQuery>) -> Response {
    login_form(safe_next(query.next.as_deref()), None, StatusCode::OK)
}

fn login_form(next: &str, problem: Option<&str>, status: StatusCode) -> Response {
    let body = html! {
        section.login {
            h1 { "Sign in" }
            p.muted { "A tenant's token shows that tenant's jobs and costs; an operator's shows every tenant's." }
            @if let Some(problem) = problem {
                p.problem role="alert" { (problem) }
            }
            form method="post" action="/ui/login" {
                input type="hidden" name="next" value=(next);
                label for="token" { "Token" }
                input #token type="password" name="token" autocomplete="current-password" required autofocus;
                button type="submit" { "Sign in" }
            }
        }
    };
    (status, page::shell("Sign in", None, page::Nav::None, body)).into_response()
}

#[derive(Deserialize)]
pub struct LoginForm {
    token: String,
    next: Option<String>,
}

/// `POST /ui/login`: checks the token as the API would, then keeps it in the cookie.
pub async fn login(
    State(state): State<ApiState>,
    extensions: Extensions,
    Form(form): Form<LoginForm>,
) -> Response {
    let next = safe_next(form.next.as_deref()).to_string();
    let token = form.token.trim();
    match authenticate(&extensions, || Viewer::of_token(&state.config, token)) {
        Ok(_) => {
            let mut response = Redirect::to(&next).into_response();
            response
                .headers_mut()
                .insert(header::SET_COOKIE, set_cookie(Some(token)));
            response
        }
        Err(e) => login_form(&next, Some(&e.message), e.status),
    }
}

/// `POST /ui/logout`: forgets the cookie.
pub async fn logout() -> Response {
    let mut response = Redirect::to("/ui/login").into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, set_cookie(None));
    response
}

/// The answer sending a browser to the sign-in form, back to `next` after.
pub(super) fn to_sign_in(next: &str, clear: bool) -> Response {
    let target = format!(
        "/ui/login?next={}",
        url::form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>()
    );
    let mut response = Redirect::to(&target).into_response();
    if clear {
        response
            .headers_mut()
            .insert(header::SET_COOKIE, set_cookie(None));
    }
    response
}
