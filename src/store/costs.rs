//! The cost report query: the `costs` table summed in SQL, grouped by the report's
//! dimensions, over a time range, optionally for one tenant (see [`crate::costs`]).
//!
//! Every sum is of integers (SQLite's `SUM` of integers is exact and fails on overflow rather
//! than rounding), so the total equals the records' sum to the pico-dollar.

use super::{Store, StoreError};
use crate::costs::{Report, ReportQuery, ReportRow, Totals};
use crate::pricing::PicoUsd;
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

/// The sums, in the order [`totals_of`] reads them.
const SUMS: &str = "COUNT(*), \
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

fn totals_of(row: &SqliteRow, first: usize) -> Totals {
    let at = |i: usize| row.get::<i64, _>(first + i);
    Totals {
        requests: at(0),
        input_tokens: at(1),
        cached_tokens: at(2),
        cache_write_tokens: at(3),
        output_tokens: at(4),
        cost: PicoUsd(at(5)),
        batch_saved: PicoUsd(at(6)),
        fallbacks: at(7),
        fallback_extra: PicoUsd(at(8)),
        unpriced: at(9),
    }
}

impl Store {
    /// The report for `query`: one row per distinct combination of its dimensions, in order,
    /// and the total over every record in range (computed separately, not from the rows).
    pub async fn cost_report(&self, query: ReportQuery) -> Result<Report, StoreError> {
        let mut filter = String::from("WHERE 1 = 1");
        if query.tenant.is_some() {
            filter.push_str(" AND tenant = ?");
        }
        if query.since.is_some() {
            filter.push_str(" AND created_at >= ?");
        }
        if query.until.is_some() {
            filter.push_str(" AND created_at < ?");
        }
        fn bind<'q>(
            query: &ReportQuery,
            sql: &'q str,
        ) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>> {
            let mut q = sqlx::query(sql).persistent(false);
            if let Some(tenant) = &query.tenant {
                q = q.bind(tenant.clone());
            }
            if let Some(since) = query.since {
                q = q.bind(since.timestamp_millis());
            }
            if let Some(until) = query.until {
                q = q.bind(until.timestamp_millis());
            }
            q
        }
        let total_sql = format!("SELECT {SUMS} FROM costs {filter}");
        let total_row = bind(&query, &total_sql).fetch_one(self.reader()?).await?;
        let total = totals_of(&total_row, 0);

        let mut rows = Vec::new();
        if !query.by.is_empty() {
            // The dimensions' expressions come from a fixed list, never from the request.
            let keys: Vec<&str> = query.by.iter().map(|d| d.sql()).collect();
            let keys = keys.join(", ");
            let grouped_sql = format!(
                "SELECT {keys}, {SUMS} FROM costs {filter} GROUP BY {keys} ORDER BY {keys}"
            );
            for row in bind(&query, &grouped_sql).fetch_all(self.reader()?).await? {
                rows.push(ReportRow {
                    keys: (0..query.by.len())
                        .map(|i| row.get::<Option<String>, _>(i))
                        .collect(),
                    totals: totals_of(&row, query.by.len()),
                });
            }
        }
        Ok(Report { query, rows, total })
    }
}
