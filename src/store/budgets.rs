//! Budget totals, reservations and crossed thresholds (see [`crate::budgets`]).
//!
//! Every change happens inside a writer transaction, and the ones that belong to a job's
//! transition run in *that* transaction (`finish_succeeded` charges and releases,
//! `finish_failed`, `record_retry` and the cancels release), so a total can never disagree
//! with the jobs it counts. Enforcement reads one row per budget, never a sum over `costs`.

use super::{now_ms, Store, StoreError};
use crate::budgets::Budgets;
use crate::job::Tags;
use crate::pricing::PicoUsd;
use sqlx::SqliteConnection;
use uuid::Uuid;

/// What a job asks one budget to hold for it.
#[derive(Debug, Clone)]
pub struct Hold {
    pub budget: String,
    pub tenant: String,
    /// The period's start, Unix milliseconds.
    pub period_start: i64,
    pub limit: PicoUsd,
    /// The job's estimated maximum cost.
    pub amount: PicoUsd,
}

/// What [`Store::reserve`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reserved {
    /// Every hold is in place.
    Held,
    /// Hold `index` does not fit (its budget's totals are given); nothing was reserved.
    Refused {
        index: usize,
        spent: PicoUsd,
        reserved: PicoUsd,
    },
    /// The job is no longer queued or running (finished or cancelled meanwhile).
    NotRunnable,
}

/// A budget's running totals in one period.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BudgetTotals {
    pub spent: PicoUsd,
    pub reserved: PicoUsd,
    /// Warning thresholds crossed, basis points of the limit, ascending.
    pub crossed: Vec<u32>,
}

impl Store {
    /// Reserves `holds` for job `job`, all or none: each must fit `spent + reserved + amount
    /// <= limit` in its budget's period. A reservation the job already held (a crash before
    /// its attempt started, a redelivery) is released first, so a job never holds twice.
    pub async fn reserve(&self, job: Uuid, holds: Vec<Hold>) -> Result<Reserved, StoreError> {
        self.write(move |conn| {
            Box::pin(async move {
                let status: Option<String> =
                    sqlx::query_scalar("SELECT status FROM jobs WHERE id = ?")
                        .bind(job.to_string())
                        .fetch_optional(&mut *conn)
                        .await?;
                if !matches!(status.as_deref(), Some("queued" | "running")) {
                    return Ok(Reserved::NotRunnable);
                }
                release(conn, job).await?;
                for (index, hold) in holds.iter().enumerate() {
                    let (spent, reserved) = totals(conn, hold).await?;
                    let after = i128::from(spent) + i128::from(reserved) + i128::from(hold.amount.0);
                    if after > i128::from(hold.limit.0) {
                        return Ok(Reserved::Refused {
                            index,
                            spent: PicoUsd(spent),
                            reserved: PicoUsd(reserved),
                        });
                    }
                }
                let now = now_ms();
                for hold in &holds {
                    sqlx::query(
                        "INSERT INTO budget_totals (budget, tenant, period_start, reserved_pico_usd) \
                         VALUES (?, ?, ?, ?) ON CONFLICT (budget, tenant, period_start) \
                         DO UPDATE SET reserved_pico_usd = reserved_pico_usd + excluded.reserved_pico_usd",
                    )
                    .bind(&hold.budget)
                    .bind(&hold.tenant)
                    .bind(hold.period_start)
                    .bind(hold.amount.0)
                    .execute(&mut *conn)
                    .await?;
                    sqlx::query(
                        "INSERT INTO budget_reservations \
                         (job_id, budget, tenant, period_start, amount_pico_usd, created_at) \
                         VALUES (?, ?, ?, ?, ?, ?)",
                    )
                    .bind(job.to_string())
                    .bind(&hold.budget)
                    .bind(&hold.tenant)
                    .bind(hold.period_start)
                    .bind(hold.amount.0)
                    .bind(now)
                    .execute(&mut *conn)
                    .await?;
                }
                Ok(Reserved::Held)
            })
        })
        .await
    }

    /// A budget's totals for `tenant` in the period starting at `period_start` (zero for a
    /// period nothing was charged or reserved in yet).
    pub async fn budget_totals(
        &self,
        budget: &str,
        tenant: &str,
        period_start: i64,
    ) -> Result<BudgetTotals, StoreError> {
        let row: Option<(i64, i64)> = sqlx::query_as(
            "SELECT spent_pico_usd, reserved_pico_usd FROM budget_totals \
             WHERE budget = ? AND tenant = ? AND period_start = ?",
        )
        .bind(budget)
        .bind(tenant)
        .bind(period_start)
        .fetch_optional(self.reader())
        .await?;
        let crossed: Vec<i64> = sqlx::query_scalar(
            "SELECT threshold_bp FROM budget_warnings \
             WHERE budget = ? AND tenant = ? AND period_start = ? ORDER BY threshold_bp",
        )
        .bind(budget)
        .bind(tenant)
        .bind(period_start)
        .fetch_all(self.reader())
        .await?;
        let (spent, reserved) = row.unwrap_or_default();
        Ok(BudgetTotals {
            spent: PicoUsd(spent),
            reserved: PicoUsd(reserved),
            crossed: crossed.into_iter().map(|p| p as u32).collect(),
        })
    }
}

async fn totals(conn: &mut SqliteConnection, hold: &Hold) -> Result<(i64, i64), sqlx::Error> {
    let row: Option<(i64, i64)> = sqlx::query_as(
        "SELECT spent_pico_usd, reserved_pico_usd FROM budget_totals \
         WHERE budget = ? AND tenant = ? AND period_start = ?",
    )
    .bind(&hold.budget)
    .bind(&hold.tenant)
    .bind(hold.period_start)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.unwrap_or_default())
}

/// Releases whatever a job holds: its reservations leave their totals and are deleted. Two
/// statements sent as one (a single round trip to SQLite's thread, no rows sent back); both
/// take the job id, so it is bound twice. [`release`] runs it alone.
pub(super) const RELEASE: &str = "UPDATE budget_totals \
     SET reserved_pico_usd = reserved_pico_usd - r.amount_pico_usd \
     FROM budget_reservations AS r WHERE r.job_id = ? AND r.budget = budget_totals.budget \
     AND r.tenant = budget_totals.tenant AND r.period_start = budget_totals.period_start; \
     DELETE FROM budget_reservations WHERE job_id = ?";

/// [`RELEASE`] for a job that has just succeeded, sent with `finish_succeeded`'s other
/// statements: it releases only if the job is `succeeded` (a finish that lost its race to a
/// cancel or a retry leaves the reservations of whoever holds the job now). Binds the job id
/// three times.
pub(super) const RELEASE_SUCCEEDED: &str = "UPDATE budget_totals \
     SET reserved_pico_usd = reserved_pico_usd - r.amount_pico_usd \
     FROM budget_reservations AS r JOIN jobs AS j ON j.id = r.job_id AND j.status = 'succeeded' \
     WHERE r.job_id = ? AND r.budget = budget_totals.budget \
     AND r.tenant = budget_totals.tenant AND r.period_start = budget_totals.period_start; \
     DELETE FROM budget_reservations WHERE job_id = ? \
     AND (SELECT status FROM jobs WHERE id = ?) = 'succeeded'";

/// Releases whatever job `job` holds (see [`RELEASE`]).
pub(super) async fn release(conn: &mut SqliteConnection, job: Uuid) -> Result<(), sqlx::Error> {
    let id = job.to_string();
    sqlx::query(RELEASE)
        .bind(&id)
        .bind(&id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Releases what cancelled jobs hold (a cancel may cover a whole bulk; only the few jobs
/// caught between reserving and starting hold anything, and the reservations table holds
/// only running jobs, so this looks at a handful of rows).
pub(super) async fn release_cancelled(conn: &mut SqliteConnection) -> Result<(), sqlx::Error> {
    let released = sqlx::query_as(
        "DELETE FROM budget_reservations WHERE EXISTS (SELECT 1 FROM jobs \
         WHERE jobs.id = budget_reservations.job_id AND jobs.status = 'cancelled') \
         RETURNING budget, tenant, period_start, amount_pico_usd",
    )
    .fetch_all(&mut *conn)
    .await?;
    unreserve(conn, released).await
}

async fn unreserve(
    conn: &mut SqliteConnection,
    released: Vec<(String, String, i64, i64)>,
) -> Result<(), sqlx::Error> {
    for (budget, tenant, period_start, amount) in released {
        sqlx::query(
            "UPDATE budget_totals SET reserved_pico_usd = reserved_pico_usd - ? \
             WHERE budget = ? AND tenant = ? AND period_start = ?",
        )
        .bind(amount)
        .bind(&budget)
        .bind(&tenant)
        .bind(period_start)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Adds a finished job's actual cost to every budget it counts against, in the current
/// period, and records (and logs, once) each warning threshold the spend has reached.
pub(super) async fn charge(
    conn: &mut SqliteConnection,
    budgets: &Budgets,
    tenant: &str,
    tags: &Tags,
    amount: PicoUsd,
) -> Result<(), sqlx::Error> {
    let now = budgets.now();
    for budget in budgets.matching(tenant, tags) {
        let period_start = budget.period.start(now).timestamp_millis();
        let spent: i64 = sqlx::query_scalar(
            "INSERT INTO budget_totals (budget, tenant, period_start, spent_pico_usd) \
             VALUES (?, ?, ?, ?) ON CONFLICT (budget, tenant, period_start) \
             DO UPDATE SET spent_pico_usd = spent_pico_usd + excluded.spent_pico_usd \
             RETURNING spent_pico_usd",
        )
        .bind(&budget.name)
        .bind(tenant)
        .bind(period_start)
        .bind(amount.0)
        .fetch_one(&mut *conn)
        .await?;
        for &points in &budget.warn_at {
            if spent < budget.threshold_amount(points).0 {
                break;
            }
            let fired = sqlx::query(
                "INSERT INTO budget_warnings \
                 (budget, tenant, period_start, threshold_bp, spent_pico_usd, fired_at) \
                 VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            )
            .bind(&budget.name)
            .bind(tenant)
            .bind(period_start)
            .bind(i64::from(points))
            .bind(spent)
            .bind(now_ms())
            .execute(&mut *conn)
            .await?;
            if fired.rows_affected() == 1 {
                tracing::warn!(
                    budget = %budget.name,
                    %tenant,
                    threshold = %crate::budgets::view::threshold_text(points),
                    spent = %PicoUsd(spent),
                    limit = %budget.limit,
                    "budget spend crossed a warning threshold"
                );
            }
        }
    }
    Ok(())
}
