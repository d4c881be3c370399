//! Counting a finished job's cost against its budgets: which budgets it counts against, in
//! which period, which warning thresholds each has, and the warning logged when a spend
//! first crosses one.
//!
//! The store adds the amounts and records the thresholds reached ([`store::budgets::add_spend`])
//! on what it is given here; it decides none of it. [`charge`] runs inside the transaction
//! that records the job's success (see [`crate::finish::succeed`]), so a total never
//! disagrees with the costs it counts; the [`Warning`]s it returns are logged once that
//! transaction has committed.

use super::Budgets;
use crate::pricing::PicoUsd;
use crate::store::budgets::{self as store, Spend, Threshold};
use crate::store::{Conn, Dialect, JobOwner};

/// A warning threshold a budget's spend has just crossed, for the first time this period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub budget: String,
    pub tenant: String,
    /// The threshold, basis points of the limit.
    pub points: u32,
    pub spent: PicoUsd,
    pub limit: PicoUsd,
}

impl Warning {
    /// Logs it: the operator's one notice that the budget is this far spent.
    pub fn log(&self) {
        tracing::warn!(
            budget = %self.budget,
            tenant = %self.tenant,
            threshold = %super::view::threshold_text(self.points),
            spent = %self.spent,
            limit = %self.limit,
            "budget spend crossed a warning threshold"
        );
    }
}

/// Adds a finished job's actual cost `amount` to every budget `owner`'s job counts against,
/// in the current period, on `conn` (inside the transaction recording the success), and says
/// which warning thresholds that crossed first.
///
/// On Postgres the budgets' rows are charged in the order every transaction that locks them
/// takes (budget, tenant, period), so two finishing jobs never wait on each other in a cycle.
pub async fn charge(
    conn: &mut Conn<'_>,
    budgets: &Budgets,
    owner: &JobOwner,
    amount: PicoUsd,
) -> Result<Vec<Warning>, sqlx::Error> {
    let now = budgets.now();
    let mut warnings = Vec::new();
    let mut matching: Vec<_> = budgets.matching(&owner.tenant, &owner.tags).collect();
    if conn.dialect() == Dialect::Postgres {
        // One tenant and one period per budget: the order is the budgets' names.
        matching.sort_by(|a, b| a.name.cmp(&b.name));
    }
    for budget in matching {
        let spend = Spend {
            budget: budget.name.clone(),
            tenant: owner.tenant.clone(),
            period_start: budget.period.start(now).timestamp_millis(),
            amount,
            thresholds: budget
                .warn_at
                .iter()
                .map(|&points| Threshold {
                    points,
                    at: budget.threshold_amount(points),
                })
                .collect(),
        };
        let spent = store::add_spend(conn, &spend).await?;
        warnings.extend(spent.crossed.into_iter().map(|points| Warning {
            budget: budget.name.clone(),
            tenant: owner.tenant.clone(),
            points,
            spent: spent.spent,
            limit: budget.limit,
        }));
    }
    Ok(warnings)
}
