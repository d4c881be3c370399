//! `/ui/bulks`: the newest bulks (JSONL files submitted to `/v1/bulk`, and OpenAI batches,
//! which are bulks too) with their progress, jobs by state and cost so far: `Store::bulk`,
//! the view of `GET /v1/bulk/{id}`, for the viewer's tenant (everyone's for an operator).

use super::auth::Viewer;
use super::format;
use super::page::{self, Nav, UiError};
use crate::api::ApiState;
use crate::pricing::PicoUsd;
use axum::extract::State;
use chrono::Utc;
use maud::{html, Markup};

/// Bulks the page shows.
const SHOWN: u32 = 25;

pub async fn page(State(state): State<ApiState>, viewer: Viewer) -> Result<Markup, UiError> {
    let mut bulks = Vec::new();
    for (tenant, id) in state.store.recent_bulks(viewer.tenant(), SHOWN).await? {
        if let Some(view) = state.store.bulk(&tenant, id).await? {
            bulks.push((tenant, view));
        }
    }
    let now = Utc::now();
    let operator = viewer.is_operator();
    let body = html! {
        div.heading {
            h1 { "Bulks and batches" }
            p.muted { "The newest " (SHOWN) " · files sent to " code { "/v1/bulk" } " or " code { "sluice bulk submit" } ", and OpenAI batches" }
        }
        (page::live(5, html! {
            section.panel {
                table.bulks {
                    thead {
                        tr {
                            th { "Bulk" }
                            @if operator { th { "Tenant" } }
                            th { "Status" } th { "Progress" }
                            th.num { "Queued" } th.num { "Running" } th.num { "Succeeded" } th.num { "Failed" } th.num { "Cancelled" }
                            th.num { "Cost so far" } th { "Submitted" }
                        }
                    }
                    tbody {
                        @for (tenant, bulk) in &bulks {
                            tr {
                                td { strong { (bulk.name) } div.muted.mono { (bulk.id) } }
                                @if operator { td { (tenant) } }
                                td { span class={ "bulk " (bulk.status) } { (bulk.status.replace('_', " ")) } }
                                td {
                                    progress max=(bulk.total.max(1)) value=(bulk.done) {}
                                    " " (format::count(bulk.done as i64)) " / " (format::count(bulk.total as i64))
                                }
                                td.num { (format::count(bulk.counts.queued as i64)) }
                                td.num { (format::count(bulk.counts.running as i64)) }
                                td.num { (format::count(bulk.counts.succeeded as i64)) }
                                td.num { (format::count(bulk.counts.failed as i64)) }
                                td.num { (format::count(bulk.counts.cancelled as i64)) }
                                td.num { (PicoUsd(bulk.cost.amount_pico_usd).for_people()) }
                                td title=(format::time(bulk.created_at)) { (format::ago(bulk.created_at, now)) }
                            }
                        }
                        @if bulks.is_empty() {
                            tr { td.empty colspan="11" { "No bulk yet." } }
                        }
                    }
                }
            }
        }))
    };
    Ok(page::shell("Bulks", Some(&viewer), Nav::Bulks, body))
}
