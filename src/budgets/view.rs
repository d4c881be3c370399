//! What a budget looks like from outside: `GET /v1/budgets` (a tenant's own budgets) and
//! `sluice budgets` (every tenant's, read from the store), as JSON or a table.

use super::config::{Tag, WHOLE};
use super::{Budget, Budgets, OnExceed};
use crate::pricing::PicoUsd;
use crate::store::{Store, StoreError};
use crate::table::Table;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

/// One budget's standing for one tenant in the current period.
#[derive(Debug, Clone, Serialize)]
pub struct BudgetView {
    pub name: String,
    /// Whose running total this is.
    pub tenant: String,
    pub scope: Scope,
    pub period: super::Period,
    pub period_start: DateTime<Utc>,
    /// When the next period starts from zero.
    pub resets_at: DateTime<Utc>,
    /// `reject`, or `downgrade:ROUTE`.
    pub on_exceed: String,
    pub limit_usd: String,
    pub limit_pico_usd: i64,
    pub spent_usd: String,
    pub spent_pico_usd: i64,
    /// Estimated maximum costs of the jobs running now.
    pub reserved_usd: String,
    pub reserved_pico_usd: i64,
    /// `limit - spent - reserved`, never below 0.
    pub remaining_usd: String,
    pub remaining_pico_usd: i64,
    /// Spent (not reserved) as a percentage of the limit, to two decimals (display only).
    pub percent: f64,
    /// The configured warning thresholds, as fractions of the limit.
    pub warn_at: Vec<f64>,
    /// The thresholds the spend has crossed this period (each logged once).
    pub thresholds_crossed: Vec<f64>,
}

/// A budget's scope as configured.
#[derive(Debug, Clone, Serialize)]
pub struct Scope {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feature: Option<String>,
}

/// The standing of every budget that applies to one of `tenants`, in configuration order.
pub async fn views(
    store: &Store,
    budgets: &Budgets,
    tenants: &[&str],
) -> Result<Vec<BudgetView>, StoreError> {
    let now = budgets.now();
    let mut out = Vec::new();
    for budget in budgets.all() {
        for tenant in tenants.iter().filter(|t| budget.applies_to(t)) {
            out.push(view(store, budget, tenant, now).await?);
        }
    }
    Ok(out)
}

async fn view(
    store: &Store,
    budget: &Budget,
    tenant: &str,
    now: DateTime<Utc>,
) -> Result<BudgetView, StoreError> {
    let start = budget.period.start(now);
    let totals = store
        .budget_totals(&budget.name, tenant, start.timestamp_millis())
        .await?;
    let remaining =
        PicoUsd((budget.limit.0 - totals.spent.0.saturating_add(totals.reserved.0)).max(0));
    let basis_points = i128::from(totals.spent.0) * 10_000 / i128::from(budget.limit.0.max(1));
    let tag = |which: Tag| {
        budget
            .tag
            .as_ref()
            .filter(|(t, _)| *t == which)
            .map(|(_, v)| v.clone())
    };
    Ok(BudgetView {
        name: budget.name.clone(),
        tenant: tenant.to_string(),
        scope: Scope {
            tenant: budget.tenant.clone(),
            user: tag(Tag::User),
            team: tag(Tag::Team),
            feature: tag(Tag::Feature),
        },
        period: budget.period,
        period_start: start,
        resets_at: budget.period.next_start(start),
        on_exceed: match &budget.on_exceed {
            OnExceed::Reject => "reject".into(),
            OnExceed::Downgrade(route) => format!("downgrade:{route}"),
        },
        limit_usd: budget.limit.to_usd_string(),
        limit_pico_usd: budget.limit.0,
        spent_usd: totals.spent.to_usd_string(),
        spent_pico_usd: totals.spent.0,
        reserved_usd: totals.reserved.to_usd_string(),
        reserved_pico_usd: totals.reserved.0,
        remaining_usd: remaining.to_usd_string(),
        remaining_pico_usd: remaining.0,
        percent: basis_points as f64 / 100.0,
        warn_at: budget.warn_at.iter().map(|p| fraction(*p)).collect(),
        thresholds_crossed: totals.crossed.iter().map(|p| fraction(*p)).collect(),
    })
}

/// A threshold in basis points as the fraction it was written as (8,000 → 0.8); display only.
fn fraction(points: u32) -> f64 {
    f64::from(points) / f64::from(WHOLE)
}

/// A threshold as a percentage for logs: `80%`, `12.5%`.
pub fn threshold_text(points: u32) -> String {
    let percent = format!("{}.{:02}", points / 100, points % 100);
    format!("{}%", percent.trim_end_matches('0').trim_end_matches('.'))
}

/// The views as a table, one line per budget and tenant.
pub fn to_table(views: &[BudgetView]) -> String {
    // Every column left-aligned, money included: the layout `sluice budgets` has always printed.
    const COLUMNS: [&str; 11] = [
        "budget",
        "tenant",
        "scope",
        "period",
        "resets_at",
        "limit",
        "spent",
        "reserved",
        "remaining",
        "percent",
        "crossed",
    ];
    let mut table = Table::new(COLUMNS, COLUMNS.len());
    for v in views {
        let scope = [
            ("tenant", &v.scope.tenant),
            ("user", &v.scope.user),
            ("team", &v.scope.team),
            ("feature", &v.scope.feature),
        ]
        .iter()
        .filter_map(|(k, value)| value.as_ref().map(|value| format!("{k}={value}")))
        .collect::<Vec<_>>()
        .join(",");
        table.row([
            v.name.clone(),
            v.tenant.clone(),
            scope,
            v.period.to_string(),
            v.resets_at.to_rfc3339_opts(SecondsFormat::Secs, true),
            PicoUsd(v.limit_pico_usd).for_reading(),
            PicoUsd(v.spent_pico_usd).for_reading(),
            PicoUsd(v.reserved_pico_usd).for_reading(),
            PicoUsd(v.remaining_pico_usd).for_reading(),
            format!("{:.2}%", v.percent),
            v.thresholds_crossed
                .iter()
                .map(|t| t.to_string())
                .collect::<Vec<_>>()
                .join(","),
        ]);
    }
    table.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_read_as_percentages() {
        assert_eq!(threshold_text(8_000), "80%");
        assert_eq!(threshold_text(10_000), "100%");
        assert_eq!(threshold_text(1_250), "12.5%");
        assert_eq!(fraction(8_000), 0.8);
    }
}
