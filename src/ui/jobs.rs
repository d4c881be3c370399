//! `/ui/jobs`: jobs newest first, filtered by status, urgency, route and (for operators)
//! tenant, a page at a time by keyset (`before` = the last id shown), so the hundredth page
//! costs what the first does.

use super::auth::Viewer;
use super::format;
use super::page::{self, Nav, UiError};
use crate::api::{ApiError, ApiState};
use crate::job::{JobStatus, Urgency};
use crate::store::dashboard::JobFilter;
use axum::extract::{Query, State};
use chrono::Utc;
use maud::{html, Markup};
use serde::Deserialize;

/// Jobs a page shows.
const PAGE: u32 = 50;

const STATUSES: [JobStatus; 5] = [
    JobStatus::Queued,
    JobStatus::Running,
    JobStatus::Succeeded,
    JobStatus::Failed,
    JobStatus::Cancelled,
];

/// The filters as the form sends them: an empty field is no filter.
#[derive(Debug, Default, Deserialize)]
pub struct Params {
    #[serde(default)]
    status: String,
    #[serde(default)]
    urgency: String,
    #[serde(default)]
    tenant: String,
    #[serde(default)]
    route: String,
    #[serde(default)]
    before: String,
}

impl Params {
    /// The store's filter: the viewer's own tenant for a tenant, whatever the form asks for
    /// an operator.
    fn filter(&self, viewer: &Viewer) -> Result<JobFilter, UiError> {
        let text = |s: &str| (!s.is_empty()).then(|| s.to_string());
        Ok(JobFilter {
            tenant: match viewer.tenant() {
                Some(own) => Some(own.to_string()),
                None => text(&self.tenant),
            },
            status: text(&self.status)
                .map(|s| {
                    s.parse()
                        .map_err(|e: String| ApiError::invalid("status", e))
                })
                .transpose()?,
            urgency: text(&self.urgency)
                .map(|s| {
                    s.parse()
                        .map_err(|e: String| ApiError::invalid("urgency", e))
                })
                .transpose()?,
            model: text(&self.route),
        })
    }

    /// This page's query with `before` set to `cursor` (none: the newest page).
    fn with_before(&self, cursor: Option<&str>) -> String {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        for (key, value) in [
            ("status", &self.status),
            ("urgency", &self.urgency),
            ("tenant", &self.tenant),
            ("route", &self.route),
        ] {
            if !value.is_empty() {
                query.append_pair(key, value);
            }
        }
        if let Some(cursor) = cursor {
            query.append_pair("before", cursor);
        }
        format!("/ui/jobs?{}", query.finish())
    }
}

pub async fn page(
    State(state): State<ApiState>,
    viewer: Viewer,
    Query(params): Query<Params>,
) -> Result<Markup, UiError> {
    let filter = params.filter(&viewer)?;
    let before = match params.before.as_str() {
        "" => None,
        text => Some(crate::api::parse_id(text, "job")?),
    };
    // One more than a page says whether an older page exists.
    let mut jobs = state.store.jobs_page(&filter, before, PAGE + 1).await?;
    let more = jobs.len() > PAGE as usize;
    jobs.truncate(PAGE as usize);
    let now = Utc::now();
    let operator = viewer.is_operator();
    let mut routes: Vec<&String> = state
        .config
        .routes
        .keys()
        .chain(state.config.deployments.keys())
        .collect();
    routes.sort();
    routes.dedup();

    let body = html! {
        div.heading {
            h1 { "Jobs" }
            p.muted { "Newest first · times in UTC" }
        }
        form.filters method="get" action="/ui/jobs" {
            (select("status", "Status", STATUSES.iter().map(|s| s.to_string()), &params.status))
            (select("urgency", "Urgency", Urgency::ALL.iter().map(|u| u.to_string()), &params.urgency))
            (select("route", "Route", routes.iter().map(|r| r.to_string()), &params.route))
            @if operator {
                (select("tenant", "Tenant", state.config.tenants.iter().map(|t| t.name.clone()), &params.tenant))
            }
            button type="submit" { "Filter" }
            a.button.secondary href="/ui/jobs" { "Clear" }
        }
        (page::live(5, html! {
            section.panel {
                table.jobs {
                    thead {
                        tr {
                            th { "Job" }
                            @if operator { th { "Tenant" } }
                            th { "Status" } th { "Urgency" } th { "Route" } th { "custom_id" }
                            th.num { "Attempts" } th { "Submitted" } th { "Took" }
                        }
                    }
                    tbody {
                        @for job in &jobs {
                            tr {
                                td { (format::job_link(job.id)) }
                                @if operator { td { (job.tenant) } }
                                td {
                                    (format::status(job.status))
                                    @if let Some(kind) = &job.error_kind { " " span.muted { (kind) } }
                                }
                                td { (job.urgency) }
                                td { (job.model) }
                                td.mono { (job.custom_id.as_deref().unwrap_or("")) }
                                td.num { (job.attempts) }
                                td title=(format::time(job.created_at)) { (format::ago(job.created_at, now)) }
                                td {
                                    @if let Some(finished) = job.finished_at {
                                        (format::millis((finished - job.created_at).num_milliseconds()))
                                    }
                                }
                            }
                        }
                        @if jobs.is_empty() {
                            tr { td.empty colspan="9" { "No job matches." } }
                        }
                    }
                }
                nav.pager {
                    @if before.is_some() { a href=(params.with_before(None)) { "← Newest" } }
                    @if more {
                        @if let Some(last) = jobs.last() {
                            a href=(params.with_before(Some(&last.id.to_string()))) { "Older →" }
                        }
                    }
                }
            }
        }))
    };
    Ok(page::shell("Jobs", Some(&viewer), Nav::Jobs, body))
}

/// A `<select>` of `options` with "any" first, `current` chosen.
fn select(name: &str, label: &str, options: impl Iterator<Item = String>, current: &str) -> Markup {
    html! {
        label {
            span { (label) }
            select name=(name) {
                option value="" { "any" }
                @for option in options {
                    option value=(option) selected[option == current] { (option) }
                }
            }
        }
    }
}
