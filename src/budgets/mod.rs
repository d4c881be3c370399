//! Budgets: spending caps per tenant, user, team or feature, per UTC day or month, enforced
//! *before* a call is made rather than discovered on the bill.
//!
//! Why reservations: checking "spent so far < limit" at dispatch lets 200 jobs that start
//! together all pass and overshoot. Instead each job *reserves* its maximum cost
//! ([`estimate`]: prompt estimate × input price + its `max_tokens` × output price) on the
//! deployment the router picked, in one store transaction over every budget matching the
//! job, all or nothing: `spent + reserved + estimate <= limit` or nothing is reserved. When
//! the job finishes, the same transaction that records its cost releases the reservation and
//! adds the actual amount to `spent` (also for a job that never reserved, so every cost
//! counts); a failure, a retry or a cancel releases it. So concurrent jobs can never take a
//! budget past its limit by more than the providers' counts exceed the estimates.
//!
//! The parts: [`config`] (`[[budgets]]` as written, validated by path), [`period`] (UTC days
//! and months, identified by their start), [`enforce`] (the estimate, the worker's step that
//! reserves and decides — go, downgrade, refuse — for the worker to act on, and the
//! submission check), [`spend`] (a finished job's cost counted against its budgets, and the
//! warning thresholds that crosses), [`view`] (what `GET /v1/budgets` and `sluice budgets`
//! show). The SQL is [`crate::store::budgets`], which runs on the budgets, periods and
//! amounts it is given and knows none of these rules.
//!
//! The configured [`Budgets`] travel beside the store (in the app, the worker's context, the
//! submitter and the API's state), not inside it.
//!
//! A budget's running totals are kept per tenant: a budget naming a tag without a tenant
//! gives each tenant its own allowance, because tags are per tenant and one tenant's
//! spending must never refuse another's jobs.

pub mod config;
pub mod enforce;
pub mod period;
pub mod spend;
pub mod view;

pub use config::{BudgetConfig, OnExceed, Tag};
pub use enforce::{
    estimate, on_exceeded, refuse_exhausted, reserve, reserve_for_batch, BatchHold, BudgetDecision,
    Downgrade, Pass,
};
pub use period::Period;
pub use view::BudgetView;

use crate::job::Tags;
use crate::pricing::PicoUsd;
use chrono::{DateTime, Utc};
use std::sync::atomic::{AtomicI64, Ordering};

/// One configured budget, validated and parsed.
#[derive(Debug, Clone)]
pub struct Budget {
    pub name: String,
    pub tenant: Option<String>,
    pub tag: Option<(Tag, String)>,
    pub period: Period,
    pub limit: PicoUsd,
    pub on_exceed: OnExceed,
    /// Warning thresholds in basis points of the limit (8,000 = 80 %), ascending.
    pub warn_at: Vec<u32>,
}

impl Budget {
    /// Whether a job of `tenant` with `tags` counts against this budget.
    pub fn covers(&self, tenant: &str, tags: &Tags) -> bool {
        if self.tenant.as_deref().is_some_and(|t| t != tenant) {
            return false;
        }
        match &self.tag {
            None => true,
            Some((tag, value)) => {
                let job = match tag {
                    Tag::User => &tags.user,
                    Tag::Team => &tags.team,
                    Tag::Feature => &tags.feature,
                };
                job.as_deref() == Some(value.as_str())
            }
        }
    }

    /// Whether jobs of `tenant` can ever count against it (the budgets a tenant may see).
    pub fn applies_to(&self, tenant: &str) -> bool {
        self.tenant.as_deref().is_none_or(|t| t == tenant)
    }

    /// `tenant acme, team search`: who the budget is for.
    pub fn scope(&self) -> String {
        let tenant = self.tenant.as_ref().map(|t| format!("tenant {t}"));
        let tag = self
            .tag
            .as_ref()
            .map(|(tag, value)| format!("{} {value}", tag.as_str()));
        [tenant, tag]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The amount at which threshold `points` (basis points of the limit) is crossed.
    pub fn threshold_amount(&self, points: u32) -> PicoUsd {
        let amount = i128::from(self.limit.0) * i128::from(points) / i128::from(config::WHOLE);
        PicoUsd(amount as i64)
    }
}

/// Every configured budget, and the clock their periods are read from.
#[derive(Debug, Default)]
pub struct Budgets {
    rules: Vec<Budget>,
    /// Added to the wall clock, in milliseconds: a test moves into the next period with it
    /// instead of waiting for midnight. Zero in production.
    clock_shift_ms: AtomicI64,
}

impl Budgets {
    /// The budgets of a validated configuration.
    pub fn from_config(config: &crate::config::Config) -> Budgets {
        let rules = config
            .budgets
            .iter()
            .map(|b| Budget {
                name: b.name.clone(),
                tenant: b.tenant.clone(),
                tag: b.tag().map(|(tag, value)| (tag, value.to_string())),
                period: b.period,
                limit: b.limit().unwrap_or_default(),
                on_exceed: b.on_exceed.clone(),
                warn_at: b.thresholds().unwrap_or_default(),
            })
            .collect();
        Budgets {
            rules,
            clock_shift_ms: AtomicI64::new(0),
        }
    }

    pub fn all(&self) -> &[Budget] {
        &self.rules
    }

    /// The budgets a job of `tenant` with `tags` counts against, in configuration order.
    pub fn matching<'a>(
        &'a self,
        tenant: &'a str,
        tags: &'a Tags,
    ) -> impl Iterator<Item = &'a Budget> + 'a {
        self.rules.iter().filter(move |b| b.covers(tenant, tags))
    }

    /// Now, as budget periods see it.
    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + chrono::TimeDelta::milliseconds(self.clock_shift_ms.load(Ordering::Relaxed))
    }

    /// Moves the budgets' clock by `by` (tests cross into the next period with it).
    pub fn shift_clock(&self, by: chrono::TimeDelta) {
        self.clock_shift_ms
            .fetch_add(by.num_milliseconds(), Ordering::Relaxed);
    }
}

/// A budget that refuses a job, with what its error message needs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "budget \"{budget}\" ({scope}, per {period}) is exhausted: limit {limit}, spent {spend} \
     ({spent} spent + {reserved} reserved by running jobs){needs}; it resets at {resets_at}",
    spend = PicoUsd(spent.0.saturating_add(reserved.0)),
    needs = needed.map(|n| format!(", and this job may cost up to {n}")).unwrap_or_default(),
    resets_at = resets_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
)]
pub struct Exceeded {
    pub budget: String,
    pub scope: String,
    pub period: Period,
    pub limit: PicoUsd,
    pub spent: PicoUsd,
    pub reserved: PicoUsd,
    /// The job's estimated maximum cost, when a job was refused for it.
    pub needed: Option<PicoUsd>,
    pub resets_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(tenant: Option<&str>, tag: Option<(Tag, &str)>) -> Budget {
        Budget {
            name: "b".into(),
            tenant: tenant.map(str::to_string),
            tag: tag.map(|(t, v)| (t, v.to_string())),
            period: Period::Day,
            limit: PicoUsd(1_000),
            on_exceed: OnExceed::Reject,
            warn_at: vec![8_000, 10_000],
        }
    }

    #[test]
    fn a_budget_covers_its_tenant_and_tag_only() {
        let search = Tags {
            team: Some("search".into()),
            ..Tags::default()
        };
        let acme = budget(Some("acme"), None);
        assert!(acme.covers("acme", &search) && acme.covers("acme", &Tags::default()));
        assert!(!acme.covers("globex", &search));
        let team = budget(None, Some((Tag::Team, "search")));
        assert!(team.covers("acme", &search) && team.covers("globex", &search));
        assert!(!team.covers("acme", &Tags::default()));
        let both = budget(Some("acme"), Some((Tag::Team, "search")));
        assert!(both.covers("acme", &search) && !both.covers("globex", &search));
        assert_eq!(both.scope(), "tenant acme, team search");
        assert_eq!(both.threshold_amount(8_000), PicoUsd(800));
    }

    #[test]
    fn the_refusal_names_budget_limit_spend_and_reset() {
        let exceeded = Exceeded {
            budget: "acme-daily".into(),
            scope: "tenant acme".into(),
            period: Period::Day,
            limit: PicoUsd::parse_usd("25").unwrap(),
            spent: PicoUsd::parse_usd("24.5").unwrap(),
            reserved: PicoUsd::parse_usd("0.25").unwrap(),
            needed: Some(PicoUsd::parse_usd("0.5").unwrap()),
            resets_at: "2026-11-25T00:00:00Z".parse().unwrap(),
        };
        assert_eq!(
            exceeded.to_string(),
            "budget \"acme-daily\" (tenant acme, per day) is exhausted: limit $25.00, \
             spent $24.75 ($24.50 spent + $0.25 reserved by running jobs), and this \
             job may cost up to $0.50; it resets at 2026-11-25T00:00:00Z"
        );
    }
}
