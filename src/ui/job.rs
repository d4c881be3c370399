//! `/ui/jobs/{id}`: one job: its status and timings, deadline and slack, cost, the provider
//! batch it sits in, every attempt with why its deployment was chosen, the request and the
//! answer; a queued job can be cancelled from here (the API's cancel, `Store::cancel`).
//!
//! A tenant reads only its own jobs (another tenant's id is "not found", as on the API); an
//! operator reads any, through the same reads scoped by the job's own tenant.

use super::auth::Viewer;
use super::format;
use super::page::{self, Nav, UiError};
use crate::api::ApiState;
use crate::job::JobStatus;
use crate::store::{AttemptOutcome, JobView};
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Utc;
use maud::{html, Markup};
use uuid::Uuid;

/// The tenant whose job `id` is, as far as `viewer` may know: its own for a tenant, the
/// job's for an operator; `NotFound` when there is no such job to see.
async fn owner(state: &ApiState, viewer: &Viewer, id: Uuid) -> Result<String, UiError> {
    let owner = match viewer.tenant() {
        Some(own) => Some(own.to_string()),
        None => state.store.job_tenant(id).await?,
    };
    owner.ok_or_else(|| not_found(id))
}

fn not_found(id: Uuid) -> UiError {
    UiError::NotFound(format!("No job {id}."))
}

pub async fn page(
    State(state): State<ApiState>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Markup, UiError> {
    let id = crate::api::parse_id(&id, "job")?;
    let tenant = owner(&state, &viewer, id).await?;
    let job = state
        .store
        .job(&tenant, id)
        .await?
        .ok_or_else(|| not_found(id))?;
    let request = state.store.job_request(&tenant, id).await?;
    let body = html! {
        div.heading {
            h1 { "Job " span.mono { (id) } }
            p.muted { a href="/ui/jobs" { "← All jobs" } " · times in UTC" }
        }
        (page::live(3, details(&job, &tenant, viewer.is_operator())))
        section.panel {
            h2 { "Request" }
            pre.json { (pretty(request.as_deref().unwrap_or("{}"))) }
        }
    };
    Ok(page::shell("Job", Some(&viewer), Nav::Jobs, body))
}

/// Everything about the job that changes while it runs.
fn details(job: &JobView, tenant: &str, operator: bool) -> Markup {
    let now = Utc::now();
    let end = job.finished_at.unwrap_or(now);
    html! {
        div.columns {
            section.panel {
                h2 { "Status" }
                dl {
                    dt { "Status" } dd { (format::status(job.status)) }
                    @if operator { dt { "Tenant" } dd { (tenant) } }
                    dt { "Urgency" } dd { (job.urgency) }
                    dt { "Route" } dd { (job.model) }
                    @if let Some(custom_id) = &job.custom_id { dt { "custom_id" } dd.mono { (custom_id) } }
                    @for (tag, value) in [("user", &job.tags.user), ("team", &job.tags.team), ("feature", &job.tags.feature)] {
                        @if let Some(value) = value { dt { "Tag " (tag) } dd { (value) } }
                    }
                    dt { "Submitted" } dd { (format::time(job.created_at)) }
                    @if let Some(finished) = job.finished_at {
                        dt { "Finished" } dd { (format::time(finished)) " (" (format::millis((finished - job.created_at).num_milliseconds())) " after submission)" }
                    } @else {
                        dt { "Waiting" } dd { (format::millis((now - job.created_at).num_milliseconds())) " so far" }
                    }
                    @if let Some(deadline) = job.deadline {
                        dt { "Deadline" } dd {
                            (format::time(deadline))
                            @let slack = (deadline - end).num_milliseconds();
                            @if slack >= 0 { " · slack " (format::millis(slack)) } @else { " · " span.bad { "missed by " (format::millis(-slack)) } }
                        }
                    }
                    @if let Some(error) = &job.error {
                        dt { "Error" } dd.bad { (error.kind) ": " (error.message) }
                    }
                }
                @if job.status == JobStatus::Queued {
                    form method="post" action={ "/ui/jobs/" (job.id) "/cancel" } {
                        button.danger type="submit" { "Cancel job" }
                    }
                }
            }
            section.panel {
                h2 { "Cost" }
                @if let Some(cost) = &job.cost {
                    dl {
                        dt { "Amount" } dd.amount { "$" (cost.amount_usd) @if !cost.price_known { " (price unknown)" } }
                        dt { "Deployment" } dd { (cost.deployment) }
                        dt { "Tier" } dd { (cost.tier) }
                        dt { "Tokens" } dd { (format::count(cost.input_tokens)) " in (" (format::count(cost.cached_tokens)) " cached) · " (format::count(cost.output_tokens)) " out" }
                        dt { "Prices / Mtok" } dd { "$" (cost.input_price_per_mtok) " in · $" (cost.output_price_per_mtok) " out" }
                        @if let Some(saved) = &cost.batch_saved_usd { dt { "Saved by the tier" } dd { "$" (saved) } }
                    }
                } @else {
                    p.muted { "No cost recorded yet." }
                }
                @if let Some(batch) = &job.batch {
                    h2 { "Provider batch" }
                    dl {
                        dt { "Batch" } dd.mono { (batch.id) }
                        dt { "Deployment" } dd { (batch.deployment) }
                        dt { "State" } dd { (batch.state) @if let Some(s) = &batch.provider_status { " (provider: " (s) ")" } }
                        dt { "This job's item" } dd { (batch.item_state) }
                    }
                }
            }
        }
        section.panel {
            h2 { "Attempts" }
            table.attempts {
                thead { tr { th.num { "#" } th { "Deployment" } th { "Key" } th { "Tier" } th { "Outcome" } th { "Started" } th.num { "Took" } th.num { "First token" } th { "Chosen because" } } }
                tbody {
                    @for attempt in &job.attempts {
                        tr {
                            td.num { (attempt.number) }
                            td { (attempt.deployment) }
                            td.mono { (attempt.key_id) }
                            td { (attempt.tier) }
                            td {
                                span class={ "outcome " (outcome_class(&attempt.outcome)) } { (attempt.outcome) }
                                @if let Some(status) = attempt.http_status { " · HTTP " (status) }
                                @if let Some(error) = &attempt.error { div.muted { (error) } }
                            }
                            td { (format::time(attempt.started_at)) }
                            td.num { (format::millis(attempt.duration_ms)) }
                            td.num { @if let Some(ms) = attempt.first_token_ms { (format::millis(ms)) } }
                            td { (attempt.chosen_because.as_deref().unwrap_or("")) }
                        }
                    }
                    @if job.attempts.is_empty() {
                        tr { td.empty colspan="9" { "No attempt yet." } }
                    }
                }
            }
        }
        @if let Some(result) = &job.result {
            section.panel {
                h2 { "Answer" }
                @if let Some(content) = result.pointer("/choices/0/message/content").and_then(|c| c.as_str()) {
                    blockquote.answer { (content) }
                }
                details {
                    summary { "The whole answer (JSON)" }
                    pre.json { (serde_json::to_string_pretty(result).unwrap_or_default()) }
                }
            }
        }
    }
}

/// The colour of an attempt's outcome: a failure is shown by its kind's name, coloured as one.
fn outcome_class(outcome: &AttemptOutcome) -> &'static str {
    match outcome {
        AttemptOutcome::Ok => "ok",
        AttemptOutcome::Running => "running",
        AttemptOutcome::Interrupted => "interrupted",
        AttemptOutcome::Failed(_) => "failed",
    }
}

/// A stored JSON text, indented; as it is when it is not JSON.
fn pretty(text: &str) -> String {
    serde_json::from_str::<serde_json::Value>(text)
        .and_then(|v| serde_json::to_string_pretty(&v))
        .unwrap_or_else(|_| text.to_string())
}

/// `POST /ui/jobs/{id}/cancel`: cancels a queued job, then shows it again.
pub async fn cancel(
    State(state): State<ApiState>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Response, UiError> {
    let id = crate::api::parse_id(&id, "job")?;
    let tenant = owner(&state, &viewer, id).await?;
    // A job that is no longer queued stays as it is; its page says what it is now.
    state
        .store
        .cancel(&tenant, id)
        .await?
        .ok_or_else(|| not_found(id))?;
    Ok(Redirect::to(&format!("/ui/jobs/{id}")).into_response())
}
