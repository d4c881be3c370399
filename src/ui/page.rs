//! The frame every dashboard page shares (head, navigation, who is signed in) and the pages
//! of what went wrong, in HTML for a person: 404, 403, and an API error's status and message.

use super::assets;
use super::auth::Viewer;
use crate::api::ApiError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{html, Markup, PreEscaped, DOCTYPE};

/// The page a navigation link is marked current on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Overview,
    Jobs,
    Bulks,
    Costs,
    Providers,
    Budgets,
    Schedules,
    /// Sign-in and error pages.
    None,
}

const LINKS: [(Nav, &str, &str); 7] = [
    (Nav::Overview, "/ui", "Overview"),
    (Nav::Jobs, "/ui/jobs", "Jobs"),
    (Nav::Bulks, "/ui/bulks", "Bulks"),
    (Nav::Costs, "/ui/costs", "Costs"),
    (Nav::Providers, "/ui/providers", "Providers"),
    (Nav::Budgets, "/ui/budgets", "Budgets"),
    (Nav::Schedules, "/ui/schedules", "Schedules"),
];

/// A whole page: `body` inside the frame, with the navigation when someone is signed in.
pub fn shell(title: &str, viewer: Option<&Viewer>, current: Nav, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Sluice" }
                link rel="stylesheet" href=(assets::url("ui.css"));
                script src=(assets::url("chart.umd.min.js")) defer {}
                script src=(assets::url("ui.js")) defer {}
            }
            body {
                header.top {
                    a.brand href="/ui" { "Sluice" }
                    @if let Some(viewer) = viewer {
                        nav {
                            @for (nav, href, label) in LINKS {
                                a href=(href) aria-current=[(nav == current).then_some("page")] { (label) }
                            }
                        }
                        div.who {
                            span { (viewer.name()) }
                            span.badge { @if viewer.is_operator() { "operator" } @else { "tenant" } }
                            form method="post" action="/ui/logout" {
                                button.link type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// A page that refreshes itself: `ui.js` fetches it again every `seconds` and swaps this part.
pub fn live(seconds: u32, body: Markup) -> Markup {
    html! { div data-live=(seconds) { (body) } }
}

/// A chart: a canvas and the JSON `ui.js` draws it from (`{type, labels, datasets, stacked}`).
pub fn chart(id: &str, spec: &serde_json::Value, label: &str) -> Markup {
    // `</` cannot end the script element early: JSON escapes it.
    let json = spec.to_string().replace("</", "<\\/");
    html! {
        div.chart {
            canvas data-chart=(id) role="img" aria-label=(label) {}
            script type="application/json" id=(id) { (PreEscaped(json)) }
        }
    }
}

/// What a dashboard handler answers when it cannot show its page.
#[derive(Debug)]
pub enum UiError {
    /// Nobody is signed in (or the cookie names nobody now): the sign-in form, then `next`.
    SignIn {
        next: String,
        clear: bool,
    },
    /// A tenant on an operator's page.
    Forbidden,
    NotFound(String),
    /// An error the API would answer, shown with its status and message.
    Api(ApiError),
}

impl<E: Into<ApiError>> From<E> for UiError {
    fn from(e: E) -> UiError {
        UiError::Api(e.into())
    }
}

fn error_page(status: StatusCode, title: &str, message: &str) -> Response {
    let body = html! {
        section.error {
            h1 { (status.as_u16()) " · " (title) }
            p { (message) }
            p { a href="/ui" { "Back to the overview" } }
        }
    };
    (status, shell(title, None, Nav::None, body)).into_response()
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        match self {
            UiError::SignIn { next, clear } => super::auth::to_sign_in(&next, clear),
            UiError::Forbidden => error_page(
                StatusCode::FORBIDDEN,
                "Operators only",
                "This page shows every tenant's data: sign in with an operator's token to see it.",
            ),
            UiError::NotFound(message) => error_page(StatusCode::NOT_FOUND, "Not found", &message),
            UiError::Api(e) => {
                if e.status.is_server_error() {
                    tracing::error!(error = %e.message, "a dashboard page failed");
                }
                error_page(e.status, "Cannot show this page", &e.message)
            }
        }
    }
}

/// `GET /ui/…` that is no page: an HTML 404.
pub async fn not_found() -> UiError {
    UiError::NotFound("There is no such page on the dashboard.".into())
}
