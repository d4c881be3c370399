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

use super::{now_ms, Conn, Dialect, Store, StoreError};
use crate::pricing::PicoUsd;
use crate::{with_conn, with_pool};
use sqlx::{PgConnection, SqliteConnection};
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
    ///
    /// On Postgres, where other processes reserve at the same time, the job's row and then
    /// its budgets' rows are locked before they are read (see [`lock_holds`]), so the check
    /// and the reservation see the same totals.
    pub async fn reserve(&self, job: Uuid, holds: Vec<Hold>) -> Result<Reserved, StoreError> {
        self.write(move |mut conn| {
            Box::pin(async move {
                let status: Option<String> = with_conn!(conn, c, sql = (JOB_STATUS, JOB_STATUS_LOCKED) =>
                    sqlx::query_scalar(sql)
                        .bind(job.to_string())
                        .fetch_optional(&mut *c)
                        .await?);
                if !matches!(status.as_deref(), Some("queued" | "running")) {
                    return Ok(Reserved::NotRunnable);
                }
                release(&mut conn, job).await?;
                let found = match conn.reborrow() {
                    Conn::Sqlite(c) => {
                        let mut found = Vec::with_capacity(holds.len());
                        for hold in &holds {
                            found.push(totals(&mut *c, hold).await?);
                        }
                        found
                    }
                    Conn::Postgres(c) => lock_holds(c, &holds).await?,
                };
                for (index, (hold, (spent, reserved))) in holds.iter().zip(found).enumerate() {
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
                    with_conn!(conn, c => sqlx::query(
                        "INSERT INTO budget_totals (budget, tenant, period_start, reserved_pico_usd) \
                         VALUES ($1, $2, $3, $4) ON CONFLICT (budget, tenant, period_start) \
                         DO UPDATE SET reserved_pico_usd = budget_totals.reserved_pico_usd + excluded.reserved_pico_usd",
                    )
                    .bind(&hold.budget)
                    .bind(&hold.tenant)
                    .bind(hold.period_start)
                    .bind(hold.amount.0)
                    .execute(&mut *c)
                    .await?
                    .rows_affected());
                    with_conn!(conn, c => sqlx::query(
                        "INSERT INTO budget_reservations \
                         (job_id, budget, tenant, period_start, amount_pico_usd, created_at) \
                         VALUES ($1, $2, $3, $4, $5, $6)",
                    )
                    .bind(job.to_string())
                    .bind(&hold.budget)
                    .bind(&hold.tenant)
                    .bind(hold.period_start)
                    .bind(hold.amount.0)
                    .bind(now)
                    .execute(&mut *c)
                    .await?
                    .rows_affected());
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
        let row: Option<(i64, i64)> = with_pool!(self.pool(), p => sqlx::query_as(TOTALS)
            .bind(budget)
            .bind(tenant)
            .bind(period_start)
            .fetch_optional(p)
            .await?);
        let crossed: Vec<i64> = with_pool!(self.pool(), p => sqlx::query_scalar(
            "SELECT threshold_bp FROM budget_warnings \
             WHERE budget = $1 AND tenant = $2 AND period_start = $3 ORDER BY threshold_bp",
        )
        .bind(budget)
        .bind(tenant)
        .bind(period_start)
        .fetch_all(p)
        .await?);
        let (spent, reserved) = row.unwrap_or_default();
        Ok(BudgetTotals {
            spent: PicoUsd(spent),
            reserved: PicoUsd(reserved),
            crossed: crossed.into_iter().map(|p| p as u32).collect(),
        })
    }
}

/// A job's status, before a reservation; on Postgres its row stays locked until the
/// reservation commits, so a concurrent transition or reservation of the job waits for it.
const JOB_STATUS: &str = "SELECT status FROM jobs WHERE id = $1";
const JOB_STATUS_LOCKED: &str = "SELECT status FROM jobs WHERE id = $1 FOR UPDATE";

/// A budget's period's totals: spent, reserved.
const TOTALS: &str = "SELECT spent_pico_usd, reserved_pico_usd FROM budget_totals \
     WHERE budget = $1 AND tenant = $2 AND period_start = $3";

async fn totals(conn: &mut SqliteConnection, hold: &Hold) -> Result<(i64, i64), sqlx::Error> {
    let row: Option<(i64, i64)> = sqlx::query_as(TOTALS)
        .bind(&hold.budget)
        .bind(&hold.tenant)
        .bind(hold.period_start)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(row.unwrap_or_default())
}

/// The totals (spent, reserved) of each hold's budget period, in `holds`' order, on Postgres:
/// the missing rows created first (`ON CONFLICT DO NOTHING`, so concurrent creators agree on
/// one), then every row locked `FOR UPDATE` in the one order all budget writers use
/// (budget, tenant, period; names compared byte by byte, `COLLATE "C"`, as Rust compares
/// them where it sorts rows before writing them), so that concurrent reservations queue on them instead of both
/// finding room that only one of them fits in, and no two lock them in opposite orders.
async fn lock_holds(
    conn: &mut PgConnection,
    holds: &[Hold],
) -> Result<Vec<(i64, i64)>, sqlx::Error> {
    if holds.is_empty() {
        return Ok(Vec::new());
    }
    let budgets: Vec<String> = holds.iter().map(|h| h.budget.clone()).collect();
    let tenants: Vec<String> = holds.iter().map(|h| h.tenant.clone()).collect();
    let periods: Vec<i64> = holds.iter().map(|h| h.period_start).collect();
    sqlx::query(
        "INSERT INTO budget_totals (budget, tenant, period_start) \
         SELECT * FROM UNNEST($1::TEXT[], $2::TEXT[], $3::BIGINT[]) AS h (b, t, p) \
         ORDER BY b COLLATE \"C\", t COLLATE \"C\", p ON CONFLICT DO NOTHING",
    )
    .bind(&budgets)
    .bind(&tenants)
    .bind(&periods)
    .execute(&mut *conn)
    .await?;
    let locked: Vec<(String, String, i64, i64, i64)> = sqlx::query_as(
        "SELECT budget, tenant, period_start, spent_pico_usd, reserved_pico_usd FROM budget_totals \
         WHERE (budget, tenant, period_start) IN \
         (SELECT * FROM UNNEST($1::TEXT[], $2::TEXT[], $3::BIGINT[])) \
         ORDER BY budget COLLATE \"C\", tenant COLLATE \"C\", period_start FOR UPDATE",
    )
    .bind(&budgets)
    .bind(&tenants)
    .bind(&periods)
    .fetch_all(&mut *conn)
    .await?;
    Ok(holds
        .iter()
        .map(|hold| {
            locked
                .iter()
                .find(|(b, t, p, _, _)| {
                    *b == hold.budget && *t == hold.tenant && *p == hold.period_start
                })
                .map_or((0, 0), |&(_, _, _, spent, reserved)| (spent, reserved))
        })
        .collect())
}

/// Releases whatever a job holds: its reservations leave their totals and are deleted. Two
/// statements sent as one (a single round trip to SQLite's thread, no rows sent back); both
/// take the job id, so it is bound twice. [`release`] runs it alone. SQLite only: Postgres
/// runs [`LOCK_RESERVED`] and then [`RELEASE_POSTGRES`].
pub(super) const RELEASE: &str = "UPDATE budget_totals \
     SET reserved_pico_usd = reserved_pico_usd - r.amount_pico_usd \
     FROM budget_reservations AS r WHERE r.job_id = ? AND r.budget = budget_totals.budget \
     AND r.tenant = budget_totals.tenant AND r.period_start = budget_totals.period_start; \
     DELETE FROM budget_reservations WHERE job_id = ?";

/// Locks the budget rows a job holds reservations on, in the order every budget writer locks
/// them (see [`lock_holds`]), before [`RELEASE_POSTGRES`] changes them.
const LOCK_RESERVED: &str = "SELECT t.budget FROM budget_totals t JOIN budget_reservations r \
     ON r.budget = t.budget AND r.tenant = t.tenant AND r.period_start = t.period_start \
     WHERE r.job_id = $1 ORDER BY t.budget COLLATE \"C\", t.tenant COLLATE \"C\", t.period_start FOR UPDATE OF t";

/// [`RELEASE`] as one Postgres statement: the reservations deleted, their amounts taken off
/// their totals.
const RELEASE_POSTGRES: &str = "WITH r AS (DELETE FROM budget_reservations WHERE job_id = $1 \
     RETURNING budget, tenant, period_start, amount_pico_usd) \
     UPDATE budget_totals t SET reserved_pico_usd = t.reserved_pico_usd - r.amount_pico_usd \
     FROM r WHERE r.budget = t.budget AND r.tenant = t.tenant AND r.period_start = t.period_start";

/// [`RELEASE`] for a job that has just succeeded, sent with [`super::jobs::succeed_job`]'s other
/// statements: it releases only if the job is `succeeded` (a finish that lost its race to a
/// cancel or a retry leaves the reservations of whoever holds the job now). Binds the job id
/// three times. SQLite only: on Postgres, `succeed_job` releases with [`release`] once its
/// transition applied.
pub(super) const RELEASE_SUCCEEDED: &str = "UPDATE budget_totals \
     SET reserved_pico_usd = reserved_pico_usd - r.amount_pico_usd \
     FROM budget_reservations AS r JOIN jobs AS j ON j.id = r.job_id AND j.status = 'succeeded' \
     WHERE r.job_id = ? AND r.budget = budget_totals.budget \
     AND r.tenant = budget_totals.tenant AND r.period_start = budget_totals.period_start; \
     DELETE FROM budget_reservations WHERE job_id = ? \
     AND (SELECT status FROM jobs WHERE id = ?) = 'succeeded'";

/// Releases whatever job `job` holds (see [`RELEASE`]).
pub(super) async fn release(conn: &mut Conn<'_>, job: Uuid) -> Result<(), sqlx::Error> {
    let id = job.to_string();
    match conn.reborrow() {
        Conn::Sqlite(c) => {
            sqlx::query(RELEASE)
                .bind(&id)
                .bind(&id)
                .execute(&mut *c)
                .await?;
        }
        Conn::Postgres(c) => {
            let locked: Vec<String> = sqlx::query_scalar(LOCK_RESERVED)
                .bind(&id)
                .fetch_all(&mut *c)
                .await?;
            if !locked.is_empty() {
                sqlx::query(RELEASE_POSTGRES)
                    .bind(&id)
                    .execute(&mut *c)
                    .await?;
            }
        }
    }
    Ok(())
}

/// Releases what cancelled jobs hold (a cancel may cover a whole bulk; only the few jobs
/// caught between reserving and starting hold anything, and the reservations table holds
/// only running jobs, so this looks at a handful of rows).
pub(super) async fn release_cancelled(conn: &mut Conn<'_>) -> Result<(), sqlx::Error> {
    let mut released: Vec<(String, String, i64, i64)> = with_conn!(conn, c => sqlx::query_as(
        "DELETE FROM budget_reservations WHERE EXISTS (SELECT 1 FROM jobs \
         WHERE jobs.id = budget_reservations.job_id AND jobs.status = 'cancelled') \
         RETURNING budget, tenant, period_start, amount_pico_usd",
    )
    .fetch_all(&mut *c)
    .await?);
    if conn.dialect() == Dialect::Postgres {
        // Each update locks its row: in the one order (see [`lock_holds`]).
        released.sort();
    }
    unreserve(conn, released).await
}

async fn unreserve(
    conn: &mut Conn<'_>,
    released: Vec<(String, String, i64, i64)>,
) -> Result<(), sqlx::Error> {
    for (budget, tenant, period_start, amount) in released {
        with_conn!(conn, c => sqlx::query(
            "UPDATE budget_totals SET reserved_pico_usd = reserved_pico_usd - $1 \
             WHERE budget = $2 AND tenant = $3 AND period_start = $4",
        )
        .bind(amount)
        .bind(&budget)
        .bind(&tenant)
        .bind(period_start)
        .execute(&mut *c)
        .await?
        .rows_affected());
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
pub async fn add_spend(conn: &mut Conn<'_>, spend: &Spend) -> Result<Spent, sqlx::Error> {
    let spent: i64 = with_conn!(conn, c => sqlx::query_scalar(
        "INSERT INTO budget_totals (budget, tenant, period_start, spent_pico_usd) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (budget, tenant, period_start) \
         DO UPDATE SET spent_pico_usd = budget_totals.spent_pico_usd + excluded.spent_pico_usd \
         RETURNING spent_pico_usd",
    )
    .bind(&spend.budget)
    .bind(&spend.tenant)
    .bind(spend.period_start)
    .bind(spend.amount.0)
    .fetch_one(&mut *c)
    .await?);
    let mut crossed = Vec::new();
    for threshold in &spend.thresholds {
        if spent < threshold.at.0 {
            break;
        }
        let recorded = with_conn!(conn, c => sqlx::query(
            "INSERT INTO budget_warnings \
             (budget, tenant, period_start, threshold_bp, spent_pico_usd, fired_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        )
        .bind(&spend.budget)
        .bind(&spend.tenant)
        .bind(spend.period_start)
        .bind(i64::from(threshold.points))
        .bind(spent)
        .bind(now_ms())
        .execute(&mut *c)
        .await?
        .rows_affected());
        if recorded == 1 {
            crossed.push(threshold.points);
        }
    }
    Ok(Spent {
        spent: PicoUsd(spent),
        crossed,
    })
}
