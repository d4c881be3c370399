//! `/ui`: the system at a glance. Jobs finished and failed per minute over the last hour (a
//! chart), what is queued and running per urgency with the oldest wait, today's spend, and
//! for operators the provider batches open and the queue's own messages: ready, parked on
//! the delay ladder, dead-lettered (the queue holds every tenant's, so a tenant sees none).

use super::auth::Viewer;
use super::format;
use super::page::{self, Nav, UiError};
use crate::api::ApiState;
use crate::costs::ReportQuery;
use crate::job::JobStatus;
use crate::queue::Depths;
use axum::extract::State;
use chrono::{DateTime, Duration, DurationRound, Utc};
use maud::{html, Markup};
use serde_json::json;

/// How often the page refreshes.
const REFRESH_SECONDS: u32 = 5;

/// The statuses the chart stacks, with their colours (the stylesheet's).
const FINAL: [(JobStatus, &str); 3] = [
    (JobStatus::Succeeded, "#2f9e44"),
    (JobStatus::Failed, "#e03131"),
    (JobStatus::Cancelled, "#adb5bd"),
];

pub async fn page(State(state): State<ApiState>, viewer: Viewer) -> Result<Markup, UiError> {
    let now = Utc::now();
    let tenant = viewer.tenant();
    let minute_now = now.duration_trunc(Duration::minutes(1)).unwrap_or(now);
    let first_minute = minute_now - Duration::minutes(59);
    let counts = state
        .store
        .finished_per_minute(tenant, first_minute)
        .await?;
    let depths = state.store.depths(tenant).await?;
    let today = now.duration_trunc(Duration::days(1)).unwrap_or(now);
    let spent = state
        .store
        .cost_report(ReportQuery {
            tenant: tenant.map(str::to_string),
            by: Vec::new(),
            since: Some(today),
            until: None,
        })
        .await?
        .total;
    let batches = if viewer.is_operator() {
        Some(state.store.open_provider_batches().await?)
    } else {
        None
    };
    // A broker that cannot answer leaves its panel saying so; the rest of the page stands.
    let messages = if viewer.is_operator() {
        Some(
            state
                .submitter
                .queue
                .depths()
                .await
                .map_err(|e| e.to_string()),
        )
    } else {
        None
    };

    let minutes: Vec<DateTime<Utc>> = (0..60)
        .map(|i| first_minute + Duration::minutes(i))
        .collect();
    let in_hour = |status: JobStatus| -> i64 {
        counts
            .iter()
            .filter(|c| c.status == status)
            .map(|c| c.jobs)
            .sum()
    };
    let datasets: Vec<_> = FINAL
        .iter()
        .map(|(status, colour)| {
            let data: Vec<i64> = minutes
                .iter()
                .map(|minute| {
                    counts
                        .iter()
                        .find(|c| c.minute == *minute && c.status == *status)
                        .map_or(0, |c| c.jobs)
                })
                .collect();
            json!({ "label": status.to_string(), "data": data, "backgroundColor": colour })
        })
        .collect();
    let spec = json!({
        "type": "bar",
        "stacked": true,
        "labels": minutes.iter().map(|m| m.format("%H:%M").to_string()).collect::<Vec<_>>(),
        "datasets": datasets,
    });
    let queued: i64 = depths.iter().map(|d| d.queued).sum();
    let running: i64 = depths.iter().map(|d| d.running).sum();

    let body = html! {
        div.heading {
            h1 { "Overview" }
            p.muted {
                @match tenant { Some(t) => { "Tenant " strong { (t) } }, None => "Every tenant" }
                " · times in UTC · refreshed every " (REFRESH_SECONDS) " s"
            }
        }
        (page::live(REFRESH_SECONDS, html! {
            div.cards {
                (card("Queued", &format::count(queued), "waiting now"))
                (card("Running", &format::count(running), "in a provider call or a batch"))
                (card("Succeeded", &format::count(in_hour(JobStatus::Succeeded)), "in the last hour"))
                (card("Failed", &format::count(in_hour(JobStatus::Failed)), "in the last hour"))
                (card("Spent today", &spent.cost.for_people(), &format!("{} requests since 00:00 UTC", format::count(spent.requests))))
            }
            section.panel {
                h2 { "Jobs finished per minute, last hour" }
                (page::chart("finished-chart", &spec, "jobs finished per minute"))
            }
            div.columns {
                section.panel {
                    h2 { "Queues" }
                    table {
                        thead { tr { th { "Urgency" } th.num { "Queued" } th.num { "Running" } th { "Oldest waiting" } } }
                        tbody {
                            @for depth in &depths {
                                tr {
                                    td { a href={ "/ui/jobs?status=queued&urgency=" (depth.urgency) } { (depth.urgency) } }
                                    td.num { (format::count(depth.queued)) }
                                    td.num { (format::count(depth.running)) }
                                    td { @if let Some(oldest) = depth.oldest_queued { (format::ago(oldest, now)) } @else { "—" } }
                                }
                            }
                            @if depths.is_empty() {
                                tr { td.empty colspan="4" { "Nothing queued or running." } }
                            }
                        }
                    }
                }
                @if let Some(messages) = &messages {
                    (queue_messages(messages))
                }
                @if let Some(batches) = &batches {
                    section.panel {
                        h2 { "Provider batches open" }
                        table {
                            thead { tr { th { "State" } th.num { "Batches" } } }
                            tbody {
                                @for (state, n) in batches {
                                    tr { td { (state) } td.num { (format::count(*n)) } }
                                }
                                @if batches.is_empty() {
                                    tr { td.empty colspan="2" { "No provider batch is open." } }
                                }
                            }
                        }
                    }
                }
            }
        }))
    };
    Ok(page::shell("Overview", Some(&viewer), Nav::Overview, body))
}

/// The queue's own messages per urgency (ready, parked on the delay ladder) and its dead
/// letters, or why the queue could not say.
fn queue_messages(messages: &Result<Depths, String>) -> Markup {
    html! {
        section.panel.messages {
            h2 { "On the queue" }
            @match messages {
                Ok(depths) => {
                    table {
                        thead { tr { th { "Urgency" } th.num { "Ready" } th.num { "Parked" } } }
                        tbody {
                            @for depth in &depths.urgencies {
                                tr {
                                    td { (depth.urgency) }
                                    td.num { (format::count(saturating(depth.ready))) }
                                    td.num { (format::count(saturating(depth.delayed))) }
                                }
                            }
                        }
                    }
                    p.muted { "Dead-lettered: " strong.dead { (format::count(saturating(depths.dead))) } }
                }
                Err(why) => p.empty { "The queue cannot say: " (why) }
            }
        }
    }
}

/// A message count as the pages' counts are written.
fn saturating(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// One figure with its label and what it counts.
fn card(label: &str, value: &str, note: &str) -> Markup {
    html! {
        div.card {
            div.label { (label) }
            div.value { (value) }
            div.note { (note) }
        }
    }
}
