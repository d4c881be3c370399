//! `/ui/schedules`: the recurring jobs defined in `scheduler.dir` (`jobs/*.toml`), each with
//! its schedule, its last run (and the job it made) and its next ones: the definitions as the
//! folder holds them now (`schedule::load_dir`, what `sluice serve` reads at start), the runs
//! from the store. A tenant sees its own; an operator every tenant's, and the files that do
//! not load, with why.

use super::auth::Viewer;
use super::format;
use super::page::{self, Nav, UiError};
use crate::api::{ApiError, ApiState};
use chrono::Utc;
use maud::{html, Markup};

/// Next due times shown per definition.
const UPCOMING: usize = 3;

pub async fn page(
    axum::extract::State(state): axum::extract::State<ApiState>,
    viewer: Viewer,
) -> Result<Markup, UiError> {
    let config = state.config.clone();
    // Reading a folder of small files: off the async threads.
    let (definitions, errors) = tokio::task::spawn_blocking(move || {
        crate::schedule::load_dir(&config.scheduler.dir, &config)
    })
    .await
    .map_err(ApiError::internal)?;
    let now = Utc::now();
    let operator = viewer.is_operator();
    let mut rows = Vec::new();
    for definition in definitions
        .into_iter()
        .filter(|d| viewer.tenant().is_none_or(|own| own == d.tenant))
    {
        let last = state
            .store
            .runs(&definition.name, 1)
            .await?
            .into_iter()
            .next();
        rows.push((definition, last));
    }
    let body = html! {
        div.heading {
            h1 { "Schedules" }
            p.muted {
                "Recurring jobs"
                // The server's folder is the operator's business, not a tenant's.
                @if operator { " in " code { (state.config.scheduler.dir.display()) } }
                " · times in UTC"
                @if !state.config.scheduler.enabled { " · " span.bad { "this process does not fire them (scheduler.enabled = false)" } }
            }
        }
        (page::live(10, html! {
            section.panel {
                table.schedules {
                    thead {
                        tr {
                            th { "Name" }
                            @if operator { th { "Tenant" } }
                            th { "Schedule" } th { "Urgency" } th { "Last run" } th { "Next runs" }
                        }
                    }
                    tbody {
                        @for (definition, last) in &rows {
                            tr {
                                td { strong { (definition.name) } }
                                @if operator { td { (definition.tenant) } }
                                td { code { (definition.expression) } div.muted { (definition.timezone.name()) } }
                                td { (definition.urgency) }
                                td {
                                    @if let Some(run) = last {
                                        span title=(format::time(run.due_at)) { (format::ago(run.due_at, now)) }
                                        @if run.manual { " (by hand)" }
                                        @if let Some(job) = run.job_id { " · " (format::job_link(job)) }
                                        @if let Some(note) = &run.note { div.muted { (note) } }
                                    } @else { span.muted { "never" } }
                                }
                                td {
                                    @for due in definition.upcoming(now, UPCOMING) {
                                        div { (format::time(due)) }
                                    }
                                }
                            }
                        }
                        @if rows.is_empty() {
                            tr { td.empty colspan="6" { "No recurring job is defined." } }
                        }
                    }
                }
            }
            @if operator && !errors.is_empty() {
                section.panel {
                    h2 { "Definitions not scheduled" }
                    ul { @for error in &errors { li.bad { (error) } } }
                }
            }
        }))
    };
    Ok(page::shell(
        "Schedules",
        Some(&viewer),
        Nav::Schedules,
        body,
    ))
}
