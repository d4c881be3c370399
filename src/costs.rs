//! Cost reports: who spent what on which model, from the cost records the worker writes (one
//! per answered job, in integer pico-USD).
//!
//! A report groups the records of a time range by any of [`Dimension`] and sums them in SQL
//! ([`crate::store::Store::cost_report`]); integers all the way, so a report's total equals
//! the sum of its records to the pico-dollar and the rows of any grouping sum to that total.
//! Money is shown as exact decimal text, never a float. `sluice costs` (all tenants, straight
//! from the database) and `GET /v1/costs` (the caller's tenant only) both render a [`Report`].
//!
//! Columns besides requests, tokens and cost:
//! - **batch saved**: for records charged on a batch tier, what the same usage costs at the
//!   deployment's real-time price minus what it cost (both stored in the record).
//! - **fallback extra**: for jobs answered by a deployment other than their route's primary
//!   (the first of a `priority` route), the cost minus what the primary would have charged for
//!   the same usage on the same tier (negative when the fallback is cheaper). Records whose
//!   primary has no known price are counted in `fallbacks` but add nothing.
//! - **unpriced**: records of deployments with `price = "unknown"` (amount 0, not free).

use crate::pricing::PicoUsd;
use crate::table::Table;
use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{json, Map, Value};
use std::fmt::Write as _;
use std::str::FromStr;

/// What a report can group by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dimension {
    Model,
    Route,
    Deployment,
    Provider,
    Tier,
    Tenant,
    User,
    Team,
    Feature,
    /// The UTC calendar day of the charge.
    Day,
}

impl Dimension {
    pub const ALL: [Dimension; 10] = [
        Dimension::Model,
        Dimension::Route,
        Dimension::Deployment,
        Dimension::Provider,
        Dimension::Tier,
        Dimension::Tenant,
        Dimension::User,
        Dimension::Team,
        Dimension::Feature,
        Dimension::Day,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Dimension::Model => "model",
            Dimension::Route => "route",
            Dimension::Deployment => "deployment",
            Dimension::Provider => "provider",
            Dimension::Tier => "tier",
            Dimension::Tenant => "tenant",
            Dimension::User => "user",
            Dimension::Team => "team",
            Dimension::Feature => "feature",
            Dimension::Day => "day",
        }
    }

    /// The SQL expression over the `costs` table (a fixed set, never user text).
    pub fn sql(self) -> &'static str {
        match self {
            Dimension::User => "user_tag",
            Dimension::Team => "team_tag",
            Dimension::Feature => "feature_tag",
            Dimension::Day => "strftime('%Y-%m-%d', created_at / 1000, 'unixepoch')",
            // The others are columns of their own name.
            other => other.as_str(),
        }
    }
}

/// A request for a report that is not understood, saying what would be.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{field}: {message}")]
pub struct ReportError {
    pub field: &'static str,
    pub message: String,
}

fn bad(field: &'static str, message: String) -> ReportError {
    ReportError { field, message }
}

/// Parses `team,day` into dimensions (empty text: no grouping, the total only).
pub fn parse_dimensions(text: &str) -> Result<Vec<Dimension>, ReportError> {
    let mut dims = Vec::new();
    for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let dim = Dimension::ALL
            .into_iter()
            .find(|d| d.as_str() == name)
            .ok_or_else(|| {
                let known: Vec<&str> = Dimension::ALL.iter().map(|d| d.as_str()).collect();
                bad(
                    "by",
                    format!(
                        "unknown grouping \"{name}\"; use any of {}",
                        known.join(", ")
                    ),
                )
            })?;
        if !dims.contains(&dim) {
            dims.push(dim);
        }
    }
    Ok(dims)
}

/// Parses a time bound: RFC 3339 (`2026-11-01T00:00:00Z`), a UTC date (`2026-11-01`), or a
/// span back from `now` (`7d`, `36h`, `90m`).
pub fn parse_time(
    field: &'static str,
    text: &str,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>, ReportError> {
    let text = text.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = NaiveDate::from_str(text) {
        return Ok(d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc());
    }
    if let Ok(span) = humantime::parse_duration(text) {
        let span = chrono::Duration::from_std(span)
            .map_err(|_| bad(field, format!("\"{text}\" is too long a span")))?;
        return Ok(now - span);
    }
    Err(bad(
        field,
        format!(
            "\"{text}\" is not a time like 2026-11-01T00:00:00Z, 2026-11-01 or 7d (that long ago)"
        ),
    ))
}

/// Output format of a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns for people.
    #[default]
    Table,
    /// Comma-separated values for spreadsheets.
    Csv,
    /// JSON for programs.
    Json,
}

impl FromStr for Format {
    type Err = ReportError;
    fn from_str(s: &str) -> Result<Format, ReportError> {
        match s {
            "table" => Ok(Format::Table),
            "csv" => Ok(Format::Csv),
            "json" => Ok(Format::Json),
            other => Err(bad(
                "format",
                format!("unknown format \"{other}\"; use table, csv or json"),
            )),
        }
    }
}

/// Which records a report covers and how it groups them.
#[derive(Debug, Clone, Default)]
pub struct ReportQuery {
    /// Only this tenant's records (always set by the API).
    pub tenant: Option<String>,
    pub by: Vec<Dimension>,
    /// Records charged at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Records charged before this time.
    pub until: Option<DateTime<Utc>>,
}

impl ReportQuery {
    /// A query from its text form (`by`: `team,day`; times as [`parse_time`] reads them),
    /// as the CLI and the API receive it.
    pub fn parse(
        tenant: Option<String>,
        by: &str,
        since: Option<&str>,
        until: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<ReportQuery, ReportError> {
        Ok(ReportQuery {
            tenant,
            by: parse_dimensions(by)?,
            since: since.map(|s| parse_time("since", s, now)).transpose()?,
            until: until.map(|s| parse_time("until", s, now)).transpose()?,
        })
    }
}

/// The sums over a set of cost records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub requests: i64,
    /// Prompt tokens, cached and cache-written ones included.
    pub input_tokens: i64,
    pub cached_tokens: i64,
    pub cache_write_tokens: i64,
    pub output_tokens: i64,
    pub cost: PicoUsd,
    pub batch_saved: PicoUsd,
    /// Jobs answered by a deployment other than their route's primary.
    pub fallbacks: i64,
    pub fallback_extra: PicoUsd,
    /// Records of deployments whose price is unknown (their cost is not in `cost`).
    pub unpriced: i64,
}

impl std::ops::AddAssign for Totals {
    /// The sums of two sets of records taken together (a report's groups merged).
    fn add_assign(&mut self, other: Totals) {
        self.requests += other.requests;
        self.input_tokens += other.input_tokens;
        self.cached_tokens += other.cached_tokens;
        self.cache_write_tokens += other.cache_write_tokens;
        self.output_tokens += other.output_tokens;
        self.cost = self.cost + other.cost;
        self.batch_saved = self.batch_saved + other.batch_saved;
        self.fallbacks += other.fallbacks;
        self.fallback_extra = self.fallback_extra + other.fallback_extra;
        self.unpriced += other.unpriced;
    }
}

/// One group of a report: the values of its dimensions (`None`: the tag was not set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportRow {
    pub keys: Vec<Option<String>>,
    pub totals: Totals,
}

#[derive(Debug, Clone)]
pub struct Report {
    pub query: ReportQuery,
    pub rows: Vec<ReportRow>,
    pub total: Totals,
}

/// The money and count columns, in order, with how each is read from [`Totals`].
const COLUMNS: [&str; 10] = [
    "requests",
    "input_tokens",
    "cached_tokens",
    "cache_write_tokens",
    "output_tokens",
    "cost_usd",
    "batch_saved_usd",
    "fallbacks",
    "fallback_extra_usd",
    "unpriced",
];

impl Totals {
    /// The cells of [`COLUMNS`], amounts written by `money`: the fixed exact form for CSV
    /// and JSON, the form for reading in a table.
    fn cells(&self, money: fn(PicoUsd) -> String) -> [String; 10] {
        [
            self.requests.to_string(),
            self.input_tokens.to_string(),
            self.cached_tokens.to_string(),
            self.cache_write_tokens.to_string(),
            self.output_tokens.to_string(),
            money(self.cost),
            money(self.batch_saved),
            self.fallbacks.to_string(),
            money(self.fallback_extra),
            self.unpriced.to_string(),
        ]
    }

    fn json(&self) -> Map<String, Value> {
        let mut map = Map::new();
        for (column, cell) in COLUMNS.iter().zip(self.cells(PicoUsd::to_usd_string)) {
            // Counts are numbers; money is exact decimal text (a JSON number would be read
            // as a float by most clients), with the integer pico-USD beside it.
            let value = if column.ends_with("_usd") {
                Value::String(cell)
            } else {
                json!(cell.parse::<i64>().expect("a count"))
            };
            map.insert((*column).into(), value);
        }
        map.insert("cost_pico_usd".into(), json!(self.cost.0));
        map.insert("batch_saved_pico_usd".into(), json!(self.batch_saved.0));
        map.insert(
            "fallback_extra_pico_usd".into(),
            json!(self.fallback_extra.0),
        );
        map
    }
}

impl Report {
    pub fn render(&self, format: Format) -> String {
        match format {
            Format::Table => self.to_table(),
            Format::Csv => self.to_csv(),
            Format::Json => {
                let mut text = serde_json::to_string_pretty(&self.to_json()).expect("json");
                text.push('\n');
                text
            }
        }
    }

    pub fn to_json(&self) -> Value {
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|row| {
                let mut map = Map::new();
                for (dim, key) in self.query.by.iter().zip(&row.keys) {
                    map.insert(dim.as_str().into(), json!(key));
                }
                map.extend(row.totals.json());
                Value::Object(map)
            })
            .collect();
        json!({
            "tenant": self.query.tenant,
            "since": self.query.since,
            "until": self.query.until,
            "by": self.query.by.iter().map(|d| d.as_str()).collect::<Vec<_>>(),
            "rows": rows,
            "total": self.total.json(),
        })
    }

    fn header(&self) -> Vec<&'static str> {
        self.query
            .by
            .iter()
            .map(|d| d.as_str())
            .chain(COLUMNS)
            .collect()
    }

    /// One line per group, then a `total` line (its key cells empty but the first).
    pub fn to_csv(&self) -> String {
        let mut out = self.header().join(",");
        out.push('\n');
        for (keys, totals) in self.lines("", "total") {
            let cells: Vec<String> = keys
                .into_iter()
                .map(|k| csv_cell(&k))
                .chain(totals.cells(PicoUsd::to_usd_string))
                .collect();
            out.push_str(&cells.join(","));
            out.push('\n');
        }
        out
    }

    /// Aligned columns (keys left, numbers right), a rule above the total when there are
    /// groups, an unpriced warning under the table.
    pub fn to_table(&self) -> String {
        let mut table = Table::new(self.header(), self.query.by.len());
        for (n, (keys, totals)) in self.lines("(none)", "TOTAL").into_iter().enumerate() {
            // The last line is the total, ruled off from the groups above it (if any).
            if n == self.rows.len() && n > 0 {
                table.rule();
            }
            table.row(keys.into_iter().chain(totals.cells(PicoUsd::for_reading)));
        }
        let mut out = table.render();
        if self.total.unpriced > 0 {
            let _ = writeln!(
                out,
                "warning: {} request(s) ran on deployments with price = \"unknown\"; their cost is not in cost_usd",
                self.total.unpriced
            );
        }
        out
    }

    /// The group lines then the total line: key cells (unset tags shown as `none`) and sums.
    fn lines(&self, none: &str, total: &str) -> Vec<(Vec<String>, Totals)> {
        let mut lines: Vec<(Vec<String>, Totals)> = self
            .rows
            .iter()
            .map(|r| {
                let keys = r
                    .keys
                    .iter()
                    .map(|k| k.clone().unwrap_or_else(|| none.to_string()))
                    .collect();
                (keys, r.totals)
            })
            .collect();
        let mut keys = vec![String::new(); self.query.by.len()];
        if let Some(first) = keys.first_mut() {
            *first = total.to_string();
        }
        lines.push((keys, self.total));
        lines
    }
}

/// A CSV cell, quoted when it holds a comma, quote or line break (RFC 4180).
fn csv_cell(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-24T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn groupings_parse_and_unknown_ones_are_named() {
        assert_eq!(
            parse_dimensions("team, day,team").unwrap(),
            vec![Dimension::Team, Dimension::Day]
        );
        assert_eq!(parse_dimensions("").unwrap(), vec![]);
        let err = parse_dimensions("team,colour").unwrap_err();
        assert_eq!(err.field, "by");
        assert!(err
            .message
            .starts_with("unknown grouping \"colour\"; use any of model, route"));
    }

    #[test]
    fn times_are_rfc3339_dates_or_spans_back() {
        let t = |s| parse_time("since", s, now()).unwrap().to_rfc3339();
        assert_eq!(t("7d"), "2026-11-17T12:00:00+00:00");
        assert_eq!(t("36h"), "2026-11-23T00:00:00+00:00");
        assert_eq!(t("2026-11-01"), "2026-11-01T00:00:00+00:00");
        assert_eq!(t("2026-11-01T10:00:00+02:00"), "2026-11-01T08:00:00+00:00");
        let err = parse_time("until", "yesterday", now()).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("until: \"yesterday\" is not a time"),
            "{err}"
        );
        assert!("xml".parse::<Format>().is_err());
    }

    fn report() -> Report {
        let totals = |requests, cost| Totals {
            requests,
            input_tokens: 100 * requests,
            output_tokens: 10 * requests,
            cost: PicoUsd(cost),
            ..Totals::default()
        };
        Report {
            query: ReportQuery {
                by: vec![Dimension::Team, Dimension::Day],
                ..ReportQuery::default()
            },
            rows: vec![
                ReportRow {
                    keys: vec![Some("a,b".into()), Some("2026-11-24".into())],
                    totals: totals(2, 1_500_000),
                },
                ReportRow {
                    keys: vec![None, Some("2026-11-24".into())],
                    totals: totals(1, 225_000),
                },
            ],
            total: Totals {
                unpriced: 1,
                ..totals(3, 1_725_000)
            },
        }
    }

    #[test]
    fn csv_quotes_cells_and_shows_exact_money() {
        let csv = report().to_csv();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines[0], "team,day,requests,input_tokens,cached_tokens,cache_write_tokens,output_tokens,cost_usd,batch_saved_usd,fallbacks,fallback_extra_usd,unpriced");
        assert_eq!(
            lines[1],
            "\"a,b\",2026-11-24,2,200,0,0,20,0.0000015,0.000000,0,0.000000,0"
        );
        assert_eq!(
            lines[2],
            ",2026-11-24,1,100,0,0,10,0.000000225,0.000000,0,0.000000,0"
        );
        assert_eq!(
            lines[3],
            "total,,3,300,0,0,30,0.000001725,0.000000,0,0.000000,1"
        );
    }

    #[test]
    fn json_keeps_money_as_text_and_pico_integers() {
        let json = report().to_json();
        assert_eq!(json["rows"][1]["team"], Value::Null);
        assert_eq!(json["rows"][0]["cost_usd"], "0.0000015");
        assert_eq!(json["total"]["cost_pico_usd"], 1_725_000);
        assert_eq!(json["total"]["unpriced"], 1);
        assert_eq!(json["by"], json!(["team", "day"]));
    }

    #[test]
    fn the_table_aligns_and_warns_about_unpriced_requests() {
        let table = report().to_table();
        let lines: Vec<&str> = table.lines().collect();
        assert!(
            lines[0].starts_with("team    day         requests"),
            "{table}"
        );
        assert!(lines[2].starts_with("(none)  2026-11-24"), "{table}");
        assert!(lines[3].starts_with("----"), "{table}");
        assert!(lines[4].starts_with("TOTAL"), "{table}");
        assert!(lines[5].starts_with("warning: 1 request(s)"), "{table}");
    }
}
