//! `/ui/costs`: spend per UTC day stacked by model (or route, deployment, provider, tier,
//! team, user, feature; tenant for operators) over the last days, and the table of
//! `sluice costs --by DIMENSION` over the same days, downloadable as its CSV. Both are the
//! store's cost report (`Store::cost_report`), the query of `GET /v1/costs`: integer sums
//! in SQL, amounts shown exact.

use super::auth::Viewer;
use super::format;
use super::page::{self, Nav, UiError};
use crate::api::{ApiError, ApiState};
use crate::costs::{Dimension, Report, ReportQuery, ReportRow};
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Duration, DurationRound, Utc};
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::json;

/// The spans a person may pick, in days back from today (today included).
const SPANS: [u32; 4] = [7, 14, 30, 90];

/// The colours of the stacked series, in turn.
const PALETTE: [&str; 8] = [
    "#3b5bdb", "#2f9e44", "#f08c00", "#ae3ec9", "#1098ad", "#e03131", "#5c940d", "#868e96",
];

#[derive(Debug, Deserialize)]
pub struct Params {
    days: Option<u32>,
    by: Option<String>,
}

/// What a page shows: the first day, how many days, the dimension the spend is split by.
struct Span {
    first_day: DateTime<Utc>,
    days: u32,
    by: Dimension,
}

impl Params {
    fn span(&self, viewer: &Viewer) -> Result<Span, UiError> {
        let days = self.days.unwrap_or(14);
        if !SPANS.contains(&days) {
            return Err(ApiError::invalid("days", format!("one of {SPANS:?}")).into());
        }
        let by = match self.by.as_deref().unwrap_or("model") {
            "day" => return Err(ApiError::invalid("by", "the chart is by day already").into()),
            // Grouping by tenant shows other tenants' names: operators only.
            "tenant" if !viewer.is_operator() => return Err(UiError::Forbidden),
            text => crate::costs::parse_dimensions(text)?
                .first()
                .copied()
                .unwrap_or(Dimension::Model),
        };
        let now = Utc::now();
        let today = now.duration_trunc(Duration::days(1)).unwrap_or(now);
        Ok(Span {
            first_day: today - Duration::days(i64::from(days) - 1),
            days,
            by,
        })
    }
}

impl Span {
    /// The report `by` over the span, the viewer's tenant only unless an operator's.
    fn query(&self, viewer: &Viewer, by: Vec<Dimension>) -> ReportQuery {
        ReportQuery {
            tenant: viewer.tenant().map(str::to_string),
            by,
            since: Some(self.first_day),
            until: None,
        }
    }
}

pub async fn page(
    State(state): State<ApiState>,
    viewer: Viewer,
    Query(params): Query<Params>,
) -> Result<Markup, UiError> {
    let span = params.span(&viewer)?;
    let daily = state
        .store
        .cost_report(span.query(&viewer, vec![Dimension::Day, span.by]))
        .await?;
    // The table is the daily report's groups merged across the days: the same records
    // summed, equal to `sluice costs --by DIMENSION` over the span, for one read of them.
    let table = merged_days(&daily, span.query(&viewer, vec![span.by]));
    let dimensions: Vec<Dimension> = Dimension::ALL
        .into_iter()
        .filter(|d| *d != Dimension::Day && (viewer.is_operator() || *d != Dimension::Tenant))
        .collect();
    let csv = format!("/ui/costs.csv?days={}&by={}", span.days, span.by.as_str());
    let body = html! {
        div.heading {
            h1 { "Costs" }
            p.muted {
                @match viewer.tenant() { Some(t) => { "Tenant " strong { (t) } }, None => "Every tenant" }
                " · UTC days · the same report as " code { "sluice costs" } " and " code { "GET /v1/costs" }
            }
        }
        form.filters method="get" action="/ui/costs" {
            label {
                span { "Days" }
                select name="days" {
                    @for days in SPANS { option value=(days) selected[days == span.days] { "last " (days) } }
                }
            }
            label {
                span { "Split by" }
                select name="by" {
                    @for d in &dimensions { option value=(d.as_str()) selected[*d == span.by] { (d.as_str()) } }
                }
            }
            button type="submit" { "Show" }
            a.button.secondary href=(csv) download="sluice-costs.csv" { "Download CSV" }
        }
        (page::live(30, html! {
            div.cards {
                div.card { div.label { "Spent" } div.value { (table.total.cost.for_people()) } div.note { "over " (span.days) " days" } }
                div.card { div.label { "Requests" } div.value { (format::count(table.total.requests)) } div.note { "charged" } }
                div.card { div.label { "Saved by batch tiers" } div.value { (table.total.batch_saved.for_people()) } div.note { "against real-time prices" } }
                div.card { div.label { "Fallbacks" } div.value { (format::count(table.total.fallbacks)) } div.note { "extra " (table.total.fallback_extra.for_people()) } }
            }
            section.panel {
                h2 { "Spend per day by " (span.by.as_str()) " (USD)" }
                (page::chart("cost-chart", &chart(&daily, &span), "spend per day"))
            }
            section.panel {
                h2 { "By " (span.by.as_str()) }
                (report_table(&table))
            }
        }))
    };
    Ok(page::shell("Costs", Some(&viewer), Nav::Costs, body))
}

/// `daily` (grouped by day, then one dimension) as the report `query` (by that dimension
/// alone): each group's totals summed over the days, groups in the dimension's order.
fn merged_days(daily: &Report, query: ReportQuery) -> Report {
    let mut rows: Vec<ReportRow> = Vec::new();
    for row in &daily.rows {
        let key = &row.keys[1];
        match rows.iter_mut().find(|merged| &merged.keys[0] == key) {
            Some(merged) => merged.totals += row.totals,
            None => rows.push(ReportRow {
                keys: vec![key.clone()],
                totals: row.totals,
            }),
        }
    }
    rows.sort_by(|a, b| a.keys.cmp(&b.keys));
    Report {
        query,
        rows,
        total: daily.total,
    }
}

/// The stacked bars: a series per value of the dimension, a bar per day of the span.
fn chart(daily: &Report, span: &Span) -> serde_json::Value {
    let days: Vec<String> = (0..span.days)
        .map(|i| {
            (span.first_day + Duration::days(i64::from(i)))
                .format("%Y-%m-%d")
                .to_string()
        })
        .collect();
    let mut series: Vec<String> = daily
        .rows
        .iter()
        .map(|row| row.keys[1].clone().unwrap_or_else(|| "(none)".into()))
        .collect();
    series.sort();
    series.dedup();
    let datasets: Vec<_> = series
        .iter()
        .enumerate()
        .map(|(i, name)| {
            // Exact decimal text: the browser reads it as a number to draw it, no float here.
            let data: Vec<String> = days
                .iter()
                .map(|day| {
                    daily
                        .rows
                        .iter()
                        .filter(|row| row.keys[0].as_deref() == Some(day.as_str()))
                        .filter(|row| row.keys[1].as_deref().unwrap_or("(none)") == name)
                        .map(|row| row.totals.cost.to_usd_string())
                        .next()
                        .unwrap_or_else(|| "0".into())
                })
                .collect();
            json!({
                "label": name,
                "data": data,
                "backgroundColor": PALETTE[i % PALETTE.len()],
            })
        })
        .collect();
    json!({ "type": "bar", "stacked": true, "labels": days, "datasets": datasets, "money": true })
}

fn report_table(report: &Report) -> Markup {
    let by = report.query.by[0].as_str();
    html! {
        table.report {
            thead {
                tr {
                    th { (by) } th.num { "Requests" } th.num { "Input tokens" } th.num { "Output tokens" }
                    th.num { "Cost" } th.num { "Batch saved" } th.num { "Fallbacks" } th.num { "Unpriced" }
                }
            }
            tbody {
                @for row in &report.rows {
                    tr {
                        td { (row.keys[0].as_deref().unwrap_or("(none)")) }
                        td.num { (format::count(row.totals.requests)) }
                        td.num { (format::count(row.totals.input_tokens)) }
                        td.num { (format::count(row.totals.output_tokens)) }
                        td.num { (row.totals.cost.for_people()) }
                        td.num { (row.totals.batch_saved.for_people()) }
                        td.num { (format::count(row.totals.fallbacks)) }
                        td.num { (format::count(row.totals.unpriced)) }
                    }
                }
                @if report.rows.is_empty() {
                    tr { td.empty colspan="8" { "No cost recorded in these days." } }
                }
            }
            tfoot {
                tr {
                    th { "total" }
                    th.num { (format::count(report.total.requests)) }
                    th.num { (format::count(report.total.input_tokens)) }
                    th.num { (format::count(report.total.output_tokens)) }
                    th.num { (report.total.cost.for_people()) }
                    th.num { (report.total.batch_saved.for_people()) }
                    th.num { (format::count(report.total.fallbacks)) }
                    th.num { (format::count(report.total.unpriced)) }
                }
            }
        }
    }
}

/// `GET /ui/costs.csv`: the table's report as `sluice costs --format csv` writes it.
pub async fn csv(
    State(state): State<ApiState>,
    viewer: Viewer,
    Query(params): Query<Params>,
) -> Result<Response, UiError> {
    let span = params.span(&viewer)?;
    let report = state
        .store
        .cost_report(span.query(&viewer, vec![span.by]))
        .await?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"sluice-costs.csv\"",
            ),
        ],
        report.to_csv(),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::costs::Totals;
    use crate::pricing::PicoUsd;

    fn row(keys: [Option<&str>; 2], requests: i64, cost: i64) -> ReportRow {
        ReportRow {
            keys: keys.iter().map(|k| k.map(str::to_string)).collect(),
            totals: Totals {
                requests,
                cost: PicoUsd(cost),
                ..Totals::default()
            },
        }
    }

    #[test]
    fn the_days_of_a_group_are_summed_into_one_row() {
        let daily = Report {
            query: ReportQuery::default(),
            rows: vec![
                row([Some("2026-12-01"), Some("gpt-4o")], 2, 30),
                row([Some("2026-12-01"), None], 1, 5),
                row([Some("2026-12-02"), Some("gpt-4o")], 3, 70),
                row([Some("2026-12-02"), Some("claude")], 1, 1),
            ],
            total: Totals {
                requests: 7,
                cost: PicoUsd(106),
                ..Totals::default()
            },
        };
        let merged = merged_days(&daily, ReportQuery::default());
        let rows: Vec<_> = merged
            .rows
            .iter()
            .map(|r| (r.keys[0].as_deref(), r.totals.requests, r.totals.cost.0))
            .collect();
        assert_eq!(
            rows,
            [
                (None, 1, 5),
                (Some("claude"), 1, 1),
                (Some("gpt-4o"), 5, 100)
            ]
        );
        assert_eq!(merged.total, daily.total);
    }
}
