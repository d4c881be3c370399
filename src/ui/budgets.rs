//! `/ui/budgets`: each budget's spend and reservations against its limit this period, the
//! warning thresholds crossed, and when it resets: `budgets::view`, the view of
//! `GET /v1/budgets` and `sluice budgets`, for the viewer's tenant (every tenant's for an
//! operator).

use super::auth::Viewer;
use super::format;
use super::page::{self, Nav, UiError};
use crate::api::ApiState;
use crate::pricing::PicoUsd;
use axum::extract::State;
use chrono::Utc;
use maud::{html, Markup};

pub async fn page(State(state): State<ApiState>, viewer: Viewer) -> Result<Markup, UiError> {
    let tenants: Vec<&str> = match viewer.tenant() {
        Some(own) => vec![own],
        None => state
            .config
            .tenants
            .iter()
            .map(|t| t.name.as_str())
            .collect(),
    };
    let budgets = &state.submitter.budgets;
    let views = crate::budgets::view::views(&state.store, budgets, &tenants).await?;
    let now = Utc::now();
    let body = html! {
        div.heading {
            h1 { "Budgets" }
            p.muted { "This period's spend and reservations (running jobs' estimated maximum) against each limit" }
        }
        (page::live(10, html! {
            section.panel {
                table.budgets {
                    thead {
                        tr {
                            th { "Budget" } th { "Tenant" } th { "Scope" } th { "Used" }
                            th.num { "Spent" } th.num { "Reserved" } th.num { "Limit" }
                            th { "Warnings crossed" } th { "Resets" } th { "Over it" }
                        }
                    }
                    tbody {
                        @for b in &views {
                            @let used = (b.spent_pico_usd + b.reserved_pico_usd).min(b.limit_pico_usd);
                            tr {
                                td { strong { (b.name) } div.muted { (b.period) } }
                                td { (b.tenant) }
                                td { (serde_json::to_value(&b.scope).ok().map(|s| scope(&s)).unwrap_or_default()) }
                                td {
                                    meter min="0" max=(b.limit_pico_usd) low=(b.limit_pico_usd * 8 / 10) high=(b.limit_pico_usd * 95 / 100) optimum="0" value=(used) {}
                                    " " (format!("{:.1} %", b.percent))
                                }
                                td.num { (PicoUsd(b.spent_pico_usd).for_people()) }
                                td.num { (PicoUsd(b.reserved_pico_usd).for_people()) }
                                td.num { (PicoUsd(b.limit_pico_usd).for_people()) }
                                td {
                                    @for t in &b.thresholds_crossed { span.badge.warn { (format!("{:.0} %", t * 100.0)) } " " }
                                }
                                td title=(format::time(b.resets_at)) { "in " (format::millis((b.resets_at - now).num_milliseconds())) }
                                td { (b.on_exceed) }
                            }
                        }
                        @if views.is_empty() {
                            tr { td.empty colspan="10" { "No budget applies. Budgets are set in " code { "[[budgets]]" } "." } }
                        }
                    }
                }
            }
        }))
    };
    Ok(page::shell("Budgets", Some(&viewer), Nav::Budgets, body))
}

/// A budget's scope, from its view's JSON: `tenant acme`, `team search`, ….
fn scope(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Object(map) => map
            .iter()
            .map(|(k, v)| format!("{k} {}", v.as_str().map_or(v.to_string(), str::to_string)))
            .collect::<Vec<_>>()
            .join(", "),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
