//! `/ui/providers`: each deployment's circuit, error rate, latency and time to first token
//! (p50/p99, also as a chart), and each key's capacity left and rest: the view of
//! `GET /v1/providers` (this process's own on SQLite, the cluster's on PostgreSQL), which
//! names keys by their `id`, never their secret.

use super::auth::Viewer;
use super::page::{self, Nav, UiError};
use crate::api::ApiState;
use axum::extract::State;
use maud::{html, Markup};
use serde_json::{json, Value};

pub async fn page(State(state): State<ApiState>, viewer: Viewer) -> Result<Markup, UiError> {
    let view = crate::api::providers::view(&state).await?;
    let empty = Vec::new();
    let deployments = view["data"].as_array().unwrap_or(&empty);
    let names: Vec<&Value> = deployments.iter().map(|d| &d["name"]).collect();
    let series = |field: &str, percentile: &str, label: &str, colour: &str| {
        json!({
            "label": label,
            "data": deployments.iter().map(|d| d[field][percentile].clone()).collect::<Vec<_>>(),
            "backgroundColor": colour,
        })
    };
    let spec = json!({
        "type": "bar",
        "labels": names,
        "datasets": [
            series("latency_ms", "p50", "latency p50 (ms)", "#3b5bdb"),
            series("latency_ms", "p99", "latency p99 (ms)", "#91a7ff"),
            series("first_token_ms", "p50", "first token p50 (ms)", "#2f9e44"),
            series("first_token_ms", "p99", "first token p99 (ms)", "#8ce99a"),
        ],
    });
    let body = html! {
        div.heading {
            h1 { "Providers" }
            p.muted { (sentence(view["note"].as_str().unwrap_or(""))) }
        }
        (page::live(5, html! {
            section.panel {
                h2 { "Latency and time to first token" }
                (page::chart("latency-chart", &spec, "latency per deployment"))
            }
            section.panel {
                h2 { "Deployments" }
                table.providers {
                    thead {
                        tr {
                            th { "Deployment" } th { "Model" } th { "Circuit" } th.num { "Error rate" }
                            th.num { "Latency p50 / p99" } th.num { "First token p50 / p99" } th { "Keys: capacity left" }
                        }
                    }
                    tbody {
                        @for d in deployments {
                            tr {
                                td { strong { (text(&d["name"])) } div.muted { (text(&d["provider"])) } }
                                td.mono { (text(&d["model"])) }
                                td { span class={ "circuit " (text(&d["state"])) } { (text(&d["state"]).replace('_', " ")) } }
                                td.num { (percent(&d["error_rate"])) div.muted { (d["calls_in_window"]) " calls" } }
                                td.num { (ms(&d["latency_ms"]["p50"])) " / " (ms(&d["latency_ms"]["p99"])) }
                                td.num { (ms(&d["first_token_ms"]["p50"])) " / " (ms(&d["first_token_ms"]["p99"])) }
                                td {
                                    @for key in d["keys"].as_array().unwrap_or(&empty) {
                                        div.key {
                                            span.mono { (text(&key["id"])) } ": "
                                            (left(&key["requests_remaining"], &key["requests_per_minute"], "req/min"))
                                            " · " (left(&key["tokens_remaining"], &key["tokens_per_minute"], "tok/min"))
                                            @if let Some(ms) = key["cooldown_ms"].as_u64() { " · " span.bad { "cooling " (super::format::millis(ms as i64)) } }
                                            @if let Some(ms) = key["spent_ms"].as_u64() { " · " span.bad { "out of credit " (super::format::millis(ms as i64)) } }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }))
    };
    Ok(page::shell(
        "Providers",
        Some(&viewer),
        Nav::Providers,
        body,
    ))
}

/// The API's note, which starts in lower case, as a sentence.
fn sentence(note: &str) -> String {
    let mut chars = note.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).chain(['.']).collect(),
        None => String::new(),
    }
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "—".into(),
        other => other.to_string(),
    }
}

fn ms(value: &Value) -> String {
    value.as_i64().map_or("—".into(), super::format::millis)
}

fn percent(value: &Value) -> String {
    value
        .as_f64()
        .map_or("—".into(), |rate| format!("{:.1} %", rate * 100.0))
}

/// `12 / 60 req/min`, or `unlimited` for a limit the key does not have.
fn left(remaining: &Value, limit: &Value, unit: &str) -> String {
    match (remaining.as_u64(), limit.as_u64()) {
        (Some(remaining), Some(limit)) => format!("{remaining} / {limit} {unit}"),
        _ => format!("no {unit} limit"),
    }
}
