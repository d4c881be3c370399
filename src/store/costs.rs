//! The cost report query: the `costs` table summed in SQL, grouped by the report's
//! dimensions, over a time range, optionally for one tenant (see [`crate::costs`]).
//!
//! Every sum is of integers (SQLite's `SUM` of integers is exact and fails on overflow rather
//! than rounding; Postgres sums BIGINTs as NUMERIC, exact too, cast back to BIGINT, which
//! fails past its range), so the total equals the records' sum to the pico-dollar.

use super::{Dialect, Store, StoreError};
use crate::costs::{Dimension, Report, ReportQuery, ReportRow, Totals};
use crate::pricing::PicoUsd;
use crate::with_pool;
use sqlx::{ColumnIndex, Decode, Row, Type};

/// The sums on SQLite, in the order [`totals_of`] reads them.
const SUMS_SQLITE: &str = "COUNT(*), \
     COALESCE(SUM(input_tokens), 0), \
     COALESCE(SUM(cached_tokens), 0), \
     COALESCE(SUM(cache_write_tokens), 0), \
     COALESCE(SUM(output_tokens), 0), \
     COALESCE(SUM(amount_pico_usd), 0), \
     COALESCE(SUM(realtime_amount_pico_usd - amount_pico_usd), 0), \
     COALESCE(SUM(primary_deployment IS NOT NULL), 0), \
     COALESCE(SUM(CASE WHEN primary_amount_pico_usd IS NOT NULL AND price_known \
                  THEN amount_pico_usd - primary_amount_pico_usd ELSE 0 END), 0), \
     COALESCE(SUM(NOT price_known), 0)";

/// [`SUMS_SQLITE`] on Postgres: each sum cast back from NUMERIC, and the counts of a
/// condition summed as 1 or 0 (Postgres does not add booleans).
const SUMS_POSTGRES: &str = "COUNT(*), \
     CAST(COALESCE(SUM(input_tokens), 0) AS BIGINT), \
     CAST(COALESCE(SUM(cached_tokens), 0) AS BIGINT), \
     CAST(COALESCE(SUM(cache_write_tokens), 0) AS BIGINT), \
     CAST(COALESCE(SUM(output_tokens), 0) AS BIGINT), \
     CAST(COALESCE(SUM(amount_pico_usd), 0) AS BIGINT), \
     CAST(COALESCE(SUM(realtime_amount_pico_usd - amount_pico_usd), 0) AS BIGINT), \
     CAST(COALESCE(SUM(CASE WHEN primary_deployment IS NOT NULL THEN 1 ELSE 0 END), 0) \
          AS BIGINT), \
     CAST(COALESCE(SUM(CASE WHEN primary_amount_pico_usd IS NOT NULL AND price_known \
                  THEN amount_pico_usd - primary_amount_pico_usd ELSE 0 END), 0) AS BIGINT), \
     CAST(COALESCE(SUM(CASE WHEN NOT price_known THEN 1 ELSE 0 END), 0) AS BIGINT)";

/// [`Dimension::Day`] on Postgres: the UTC day of `created_at` (Unix ms), as `YYYY-MM-DD`.
const DAY_POSTGRES: &str =
    "to_char(to_timestamp(created_at / 1000) AT TIME ZONE 'UTC', 'YYYY-MM-DD')";

/// The SQL expression of `dimension` in `dialect` ([`Dimension::sql`] is SQLite's).
fn dimension_sql(dimension: Dimension, dialect: Dialect) -> &'static str {
    match (dimension, dialect) {
        (Dimension::Day, Dialect::Postgres) => DAY_POSTGRES,
        (dimension, _) => dimension.sql(),
    }
}

/// The totals in `row`'s columns from `first` on, as [`SUMS_SQLITE`] lists them; a row of
/// either backend.
fn totals_of<R>(row: &R, first: usize) -> Result<Totals, sqlx::Error>
where
    R: Row,
    usize: ColumnIndex<R>,
    i64: for<'r> Decode<'r, R::Database> + Type<R::Database>,
{
    let at = |i: usize| row.try_get::<i64, _>(first + i);
    Ok(Totals {
        requests: at(0)?,
        input_tokens: at(1)?,
        cached_tokens: at(2)?,
        cache_write_tokens: at(3)?,
        output_tokens: at(4)?,
        cost: PicoUsd(at(5)?),
        batch_saved: PicoUsd(at(6)?),
        fallbacks: at(7)?,
        fallback_extra: PicoUsd(at(8)?),
        unpriced: at(9)?,
    })
}

/// A report's row: its `keys` dimensions' values, then the totals.
fn report_row<R>(row: &R, keys: usize) -> Result<ReportRow, sqlx::Error>
where
    R: Row,
    usize: ColumnIndex<R>,
    i64: for<'r> Decode<'r, R::Database> + Type<R::Database>,
    Option<String>: for<'r> Decode<'r, R::Database> + Type<R::Database>,
{
    Ok(ReportRow {
        keys: (0..keys)
            .map(|i| row.try_get::<Option<String>, _>(i))
            .collect::<Result<_, _>>()?,
        totals: totals_of(row, keys)?,
    })
}

impl Store {
    /// The report for `query`: one row per distinct combination of its dimensions, in order,
    /// and the total over every record in range (computed separately, not from the rows).
    pub async fn cost_report(&self, query: ReportQuery) -> Result<Report, StoreError> {
        let dialect = self.dialect();
        // The filter's placeholders are numbered as its values are bound, in this order.
        let mut filter = String::from("WHERE 1 = 1");
        let mut n = 0;
        let mut next = || {
            n += 1;
            n
        };
        if query.tenant.is_some() {
            filter.push_str(&format!(" AND tenant = ${}", next()));
        }
        if query.since.is_some() {
            filter.push_str(&format!(" AND created_at >= ${}", next()));
        }
        if query.until.is_some() {
            filter.push_str(&format!(" AND created_at < ${}", next()));
        }
        let sums = match dialect {
            Dialect::Sqlite => SUMS_SQLITE,
            Dialect::Postgres => SUMS_POSTGRES,
        };
        let total_sql = format!("SELECT {sums} FROM costs {filter}");
        // The dimensions' expressions come from a fixed list, never from the request.
        let keys: Vec<&str> = query
            .by
            .iter()
            .map(|d| dimension_sql(*d, dialect))
            .collect();
        let keys = keys.join(", ");
        let grouped_sql =
            format!("SELECT {keys}, {sums} FROM costs {filter} GROUP BY {keys} ORDER BY {keys}");
        let (tenant, since, until) = (
            query.tenant.clone(),
            query.since.map(|t| t.timestamp_millis()),
            query.until.map(|t| t.timestamp_millis()),
        );
        let width = query.by.len();
        let (total, rows) = with_pool!(self.pool(), p => {
            // Binds the filter's values, in the order of its placeholders.
            let bind = |sql| {
                let mut q = sqlx::query(sql).persistent(false);
                if let Some(tenant) = &tenant {
                    q = q.bind(tenant.clone());
                }
                if let Some(since) = since {
                    q = q.bind(since);
                }
                if let Some(until) = until {
                    q = q.bind(until);
                }
                q
            };
            let total = totals_of(&bind(&total_sql).fetch_one(p).await?, 0)?;
            let mut rows = Vec::new();
            if width > 0 {
                for row in bind(&grouped_sql).fetch_all(p).await? {
                    rows.push(report_row(&row, width)?);
                }
            }
            (total, rows)
        });
        Ok(Report { query, rows, total })
    }
}
