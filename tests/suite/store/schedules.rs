//! What the scheduler remembers: when it first saw a definition, and each run once per due
//! time (scheduled and manual apart).

use crate::common::stores::{StoreBackend, TestStore};
use chrono::{DateTime, Utc};
use sluice::store::schedules::RunRecord;
use uuid::Uuid;

on_both_stores!(
    first_seen_is_kept_from_the_first_look,
    a_run_is_recorded_once_per_due_time,
);

fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap()
}

async fn first_seen_is_kept_from_the_first_look(backend: StoreBackend) {
    let t = TestStore::open(backend).await;
    let s = &t.store;
    assert_eq!(
        s.schedule_first_seen("daily", at(1_000)).await.unwrap(),
        at(1_000)
    );
    assert_eq!(
        s.schedule_first_seen("daily", at(9_000)).await.unwrap(),
        at(1_000)
    );
    assert_eq!(
        s.schedule_first_seen("hourly", at(9_000)).await.unwrap(),
        at(9_000)
    );
}

async fn a_run_is_recorded_once_per_due_time(backend: StoreBackend) {
    let t = TestStore::open(backend).await;
    let s = &t.store;
    assert_eq!(s.last_scheduled_run("daily").await.unwrap(), None);
    let run = |due: i64, manual: bool, job_id: Option<Uuid>, note: Option<&str>| RunRecord {
        name: "daily".into(),
        due_at: at(due),
        manual,
        job_id,
        note: note.map(String::from),
    };
    let (first, second) = (Uuid::now_v7(), Uuid::now_v7());
    s.record_run(run(60_000, false, Some(first), None))
        .await
        .unwrap();
    // The same due time again (a restart re-firing it) is ignored, whatever it carries.
    s.record_run(run(60_000, false, Some(second), Some("again")))
        .await
        .unwrap();
    s.record_run(run(120_000, false, None, Some("skipped: overlap")))
        .await
        .unwrap();
    // A manual run later than every scheduled one is not the last scheduled run.
    s.record_run(run(180_000, true, Some(second), None))
        .await
        .unwrap();
    s.record_run(RunRecord {
        name: "hourly".into(),
        ..run(240_000, false, None, None)
    })
    .await
    .unwrap();

    assert_eq!(
        s.last_scheduled_run("daily").await.unwrap(),
        Some(at(120_000))
    );
    assert_eq!(
        s.runs("daily", 10).await.unwrap(),
        vec![
            run(180_000, true, Some(second), None),
            run(120_000, false, None, Some("skipped: overlap")),
            run(60_000, false, Some(first), None),
        ]
    );
    assert_eq!(s.runs("daily", 1).await.unwrap().len(), 1);
}
