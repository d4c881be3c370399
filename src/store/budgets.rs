//! Budget totals, reservations and crossed thresholds (see [`crate::budgets`]).
//!
//! Every change happens inside a writer transaction, and the ones that belong to a job's
//! transition run in *that* transaction (a success adds its spend ([`add_spend`]) and
//! releases, `finish_failed`, `record_retry` and the cancels release), so a total can never
//! disagree with the jobs it counts. Enforcement reads one row per budget, never a sum over
//! `costs`.
//!
//! This is the SQL alone, on the budgets, tenants, periods and amounts it is given: which
//! budgets a job counts against, its thresholds and what to do over a limit are decided in
//! [`crate::budgets`], which also reports what these functions found.

use super::{now_ms, Store, StoreError};
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
 let conn = conn.into_sqlite("this operation")?;
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
        .fetch_optional(self.reader()?)
        .await?;
        let crossed: Vec<i64> = sqlx::query_scalar(
            "SELECT threshold_bp FROM budget_warnings \
             WHERE budget = ? AND tenant = ? AND period_start = ? ORDER BY threshold_bp",
        )
        .bind(budget)
        .bind(tenant)
        .bind(period_start)
        .fetch_all(self.reader()?)
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

/// [`RELEASE`] for a job that has just succeeded, sent with [`super::jobs::succeed_job`]'s other
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

/// A finished job's actual cost on one budget's period, with the budget's warning thresholds
/// (what [`add_spend`] is given; which budgets a job counts against is
/// [`crate::budgets`]' business).
#[derive(Debug, Clone)]
pub struct Spend {
    pub budget: String,
    pub tenant: String,
    /// The period's start, Unix milliseconds.
    pub period_start: i64,
    pub amount: PicoUsd,
    /// The budget's warning thresholds, ascending.
    pub thresholds: Vec<Threshold>,
}

/// A warning threshold: its basis points of the limit (its name in `budget_warnings`), and
/// the spend at which it is crossed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Threshold {
    pub points: u32,
    pub at: PicoUsd,
}

/// What [`add_spend`] did to a budget's period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spent {
    /// The period's spend now, this job's cost included.
    pub spent: PicoUsd,
    /// The thresholds (basis points) this spend crossed first, ascending: each is recorded,
    /// and so reported, once a period.
    pub crossed: Vec<u32>,
}

/// Adds `spend.amount` to its budget's spend in its period, and records each of its
/// thresholds the spend has reached that was not recorded yet.
pub async fn add_spend(conn: &mut SqliteConnection, spend: &Spend) -> Result<Spent, sqlx::Error> {
    let spent: i64 = sqlx::query_scalar(
        "INSERT INTO budget_totals (budget, tenant, period_start, spent_pico_usd) \
         VALUES (?, ?, ?, ?) ON CONFLICT (budget, tenant, period_start) \
         DO UPDATE SET spent_pico_usd = spent_pico_usd + excluded.spent_pico_usd \
         RETURNING spent_pico_usd",
    )
    .bind(&spend.budget)
    .bind(&spend.tenant)
    .bind(spend.period_start)
    .bind(spend.amount.0)
    .fetch_one(&mut *conn)
    .await?;
    let mut crossed = Vec::new();
    for threshold in &spend.thresholds {
        if spent < threshold.at.0 {
            break;
        }
        let recorded = sqlx::query(
            "INSERT INTO budget_warnings \
             (budget, tenant, period_start, threshold_bp, spent_pico_usd, fired_at) \
             VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(&spend.budget)
        .bind(&spend.tenant)
        .bind(spend.period_start)
        .bind(i64::from(threshold.points))
        .bind(spent)
        .bind(now_ms())
        .execute(&mut *conn)
        .await?;
        if recorded.rows_affected() == 1 {
            crossed.push(threshold.points);
        }
    }
    Ok(Spent {
        spent: PicoUsd(spent),
        crossed,
    })
}
