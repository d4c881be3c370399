-- Budgets (see src/budgets): a running total per budget, tenant and period, so enforcing a
-- budget never sums the costs table. A period is identified by its start (UTC midnight, or
-- the first of the month at midnight), in Unix milliseconds; a new period is a new row.
CREATE TABLE budget_totals (
    budget TEXT NOT NULL,
    tenant TEXT NOT NULL,
    period_start INTEGER NOT NULL,
    -- Actual costs of the jobs that finished in the period.
    spent_pico_usd INTEGER NOT NULL DEFAULT 0,
    -- Estimated maximum costs of the jobs running now.
    reserved_pico_usd INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (budget, tenant, period_start)
) WITHOUT ROWID;

-- What each running job holds, one row per budget it counts against: released (and the
-- actual cost charged) in the transaction that finishes, retries or cancels the job.
CREATE TABLE budget_reservations (
    job_id TEXT NOT NULL,
    budget TEXT NOT NULL,
    tenant TEXT NOT NULL,
    period_start INTEGER NOT NULL,
    amount_pico_usd INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (job_id, budget)
) WITHOUT ROWID;

-- Warning thresholds crossed (basis points of the limit: 8000 = 80 %), so each is logged
-- once per budget, tenant and period, even across restarts.
CREATE TABLE budget_warnings (
    budget TEXT NOT NULL,
    tenant TEXT NOT NULL,
    period_start INTEGER NOT NULL,
    threshold_bp INTEGER NOT NULL,
    spent_pico_usd INTEGER NOT NULL,
    fired_at INTEGER NOT NULL,
    PRIMARY KEY (budget, tenant, period_start, threshold_bp)
) WITHOUT ROWID;
