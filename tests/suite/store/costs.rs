//! The cost report's query: records summed exactly, grouped by a dimension, within a time
//! range and a tenant.

use super::rows::{self, Cost, Row};
use crate::common::stores::{StoreBackend, TestStore};
use chrono::{DateTime, Utc};
use sluice::costs::{Dimension, ReportQuery, ReportRow, Totals};
use sluice::pricing::PicoUsd;

on_both_stores!(a_report_groups_and_sums_exactly);

/// 2026-03-01T23:00:00Z and an hour later, the next UTC day.
const DAY_ONE: i64 = 1_772_406_000_000;
const DAY_TWO: i64 = DAY_ONE + 3_600_000;

fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap()
}

async fn a_report_groups_and_sums_exactly(backend: StoreBackend) {
    let t = TestStore::open(backend).await;
    let s = &t.store;
    // Amounts past 2^53, so a float anywhere would show.
    let big = 9_007_199_254_740_993;
    for (tenant, team, amount, realtime, known, primary, created_at) in [
        ("acme", Some("search"), big, big + 10, true, None, DAY_ONE),
        (
            "acme",
            Some("search"),
            3,
            3,
            true,
            Some(("big", 1)),
            DAY_TWO,
        ),
        ("acme", None, 0, 0, false, None, DAY_TWO),
        ("acme", Some("ads"), 5, 5, true, None, DAY_TWO + 1),
        ("globex", Some("search"), 100, 100, true, None, DAY_ONE),
    ] {
        rows::write(
            s,
            Row {
                tenant,
                status: "succeeded",
                cost: Some(Cost {
                    team,
                    amount,
                    realtime_amount: realtime,
                    price_known: known,
                    primary,
                    input_tokens: 10,
                    cached_tokens: 1,
                    output_tokens: 2,
                    created_at,
                    ..Cost::default()
                }),
                ..Row::default()
            },
        )
        .await;
    }
    let totals =
        |requests: i64, cost: i64, saved: i64, fallbacks: i64, extra: i64, unpriced| Totals {
            requests,
            input_tokens: 10 * requests,
            cached_tokens: requests,
            cache_write_tokens: 0,
            output_tokens: 2 * requests,
            cost: PicoUsd(cost),
            batch_saved: PicoUsd(saved),
            fallbacks,
            fallback_extra: PicoUsd(extra),
            unpriced,
        };

    let report = s
        .cost_report(ReportQuery {
            tenant: Some("acme".into()),
            by: vec![Dimension::Team],
            since: None,
            until: None,
        })
        .await
        .unwrap();
    assert_eq!(report.total, totals(4, big + 8, 10, 1, 2, 1));
    // NULL sorts first on SQLite and last on Postgres: compared in one order here.
    let mut rows = report.rows.clone();
    rows.sort_by(|a, b| a.keys.cmp(&b.keys));
    assert_eq!(
        rows,
        vec![
            ReportRow {
                keys: vec![None],
                totals: totals(1, 0, 0, 0, 0, 1)
            },
            ReportRow {
                keys: vec![Some("ads".into())],
                totals: totals(1, 5, 0, 0, 0, 0)
            },
            ReportRow {
                keys: vec![Some("search".into())],
                totals: totals(2, big + 3, 10, 1, 2, 0)
            },
        ]
    );

    // By UTC day, all tenants, from the first day's last hour on, before the last record.
    let report = s
        .cost_report(ReportQuery {
            tenant: None,
            by: vec![Dimension::Day, Dimension::Tenant],
            since: Some(at(DAY_ONE)),
            until: Some(at(DAY_TWO + 1)),
        })
        .await
        .unwrap();
    let keys: Vec<Vec<Option<String>>> = report.rows.iter().map(|r| r.keys.clone()).collect();
    let key = |day: &str, tenant: &str| vec![Some(day.to_string()), Some(tenant.to_string())];
    assert_eq!(
        keys,
        vec![
            key("2026-03-01", "acme"),
            key("2026-03-01", "globex"),
            key("2026-03-02", "acme"),
        ]
    );
    assert_eq!(report.rows[0].totals.cost, PicoUsd(big));
    assert_eq!(report.rows[2].totals, totals(2, 3, 0, 1, 2, 1));
    assert_eq!(report.total, totals(4, big + 103, 10, 1, 2, 1));
}
