//! What a cluster shares through the store: key buckets taken from in blocks (never more than
//! the bucket holds, however many processes take at once), keys at rest (a longer rest never
//! shortened), each process's heartbeat and health report.

use super::budgets::second_handle;
use crate::common::stores::{StoreBackend, TestStore};
use sluice::gcra::{Gcra, KeyLimit};
use sluice::store::{
    BucketId, CellRequest, DeploymentReport, KeyRest, ProcessBeat, RestKind, Store,
};
use std::time::Duration;

on_both_stores!(
    a_bucket_gives_its_burst_once_to_processes_taking_at_once,
    buckets_are_kept_apart_by_deployment_key_and_limit,
    a_rest_is_never_shortened_and_ends,
    beats_and_reports_are_read_back_while_fresh,
);

fn bucket(deployment: &str, key_id: &str, limit: KeyLimit) -> BucketId {
    BucketId {
        deployment: deployment.into(),
        key_id: key_id.into(),
        limit,
    }
}

/// 60 a minute, all at once when full.
fn per_minute_60() -> Gcra {
    Gcra::per(60, Duration::from_secs(60), 0).unwrap()
}

fn ask(bucket: BucketId, want: u64) -> CellRequest {
    CellRequest {
        bucket,
        shape: per_minute_60(),
        want,
    }
}

/// 40 takes of 5 cells at once, half through each of two store handles (two processes on
/// Postgres), from one bucket of 60: 60 cells granted in all (give or take the one a second
/// that refills while they run), and the bucket then says when its next cell comes.
async fn a_bucket_gives_its_burst_once_to_processes_taking_at_once(backend: StoreBackend) {
    let t = TestStore::open(backend).await;
    let other = second_handle(&t).await;
    let key = bucket("gpt", "k1", KeyLimit::RequestsPerMinute);
    let started = std::time::Instant::now();
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let store: Store = if i % 2 == 0 {
                t.store.clone()
            } else {
                other.clone()
            };
            let key = key.clone();
            tokio::spawn(async move { store.take_cells(vec![ask(key, 5)]).await.unwrap()[0] })
        })
        .collect();
    let mut granted = 0;
    for task in tasks {
        granted += task.await.unwrap().granted;
    }
    let refilled = started.elapsed().as_secs() + 1;
    assert!(
        (60..=60 + refilled).contains(&granted),
        "{granted} cells granted from a bucket of 60 in {:?}",
        started.elapsed()
    );
    let after = t.store.take_cells(vec![ask(key, 5)]).await.unwrap()[0];
    assert!(after.granted <= 1, "{after:?}");
    assert!(
        after.next_cell_in > Duration::ZERO && after.next_cell_in <= Duration::from_secs(1),
        "{after:?}"
    );
}

async fn buckets_are_kept_apart_by_deployment_key_and_limit(backend: StoreBackend) {
    let t = TestStore::open(backend).await;
    let grants = t
        .store
        .take_cells(vec![
            ask(bucket("gpt", "k1", KeyLimit::RequestsPerMinute), 50),
            ask(bucket("gpt", "k1", KeyLimit::RequestsPerDay), 50),
            ask(bucket("gpt", "k2", KeyLimit::RequestsPerMinute), 50),
            ask(bucket("claude", "k1", KeyLimit::RequestsPerMinute), 50),
        ])
        .await
        .unwrap();
    assert!(grants.iter().all(|g| g.granted == 50), "{grants:?}");
    let levels = t.store.bucket_levels().await.unwrap();
    assert_eq!(levels.len(), 4);
    // 50 of 60 cells used: 50 seconds of refill, less the time since.
    for level in &levels {
        assert!(
            level.used > Duration::from_secs(45) && level.used <= Duration::from_secs(50),
            "{level:?}"
        );
    }
    let again = t
        .store
        .take_cells(vec![ask(
            bucket("gpt", "k1", KeyLimit::RequestsPerMinute),
            50,
        )])
        .await
        .unwrap();
    assert!(again[0].granted <= 11, "{again:?}");
}

async fn a_rest_is_never_shortened_and_ends(backend: StoreBackend) {
    let t = TestStore::open(backend).await;
    let rest = |kind, scope: &str, ms| KeyRest {
        kind,
        scope: scope.into(),
        key_id: "k1".into(),
        rest: Duration::from_millis(ms),
    };
    t.store
        .tell_rests(vec![
            rest(RestKind::Cooldown, "gpt", 30_000),
            rest(RestKind::Spent, "openai", 600),
        ])
        .await
        .unwrap();
    // Another process tells a shorter cooldown: the longer one stands.
    other_tells(&t, rest(RestKind::Cooldown, "gpt", 1_000)).await;
    let rests = t.store.key_rests().await.unwrap();
    assert_eq!(rests.len(), 2, "{rests:?}");
    let cooldown = rests.iter().find(|r| r.kind == RestKind::Cooldown).unwrap();
    assert_eq!(
        (cooldown.scope.as_str(), cooldown.key_id.as_str()),
        ("gpt", "k1")
    );
    assert!(cooldown.rest > Duration::from_secs(25), "{cooldown:?}");
    // The short rest ends, and is no longer read.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let rests = t.store.key_rests().await.unwrap();
    assert_eq!(rests.len(), 1, "{rests:?}");
    assert_eq!(rests[0].kind, RestKind::Cooldown);
    assert_eq!(t.store.prune_rests(Duration::ZERO).await.unwrap(), 1);
}

async fn other_tells(t: &TestStore, rest: KeyRest) {
    second_handle(t).await.tell_rests(vec![rest]).await.unwrap();
}

async fn beats_and_reports_are_read_back_while_fresh(backend: StoreBackend) {
    let t = TestStore::open(backend).await;
    let process = |id: &str, role: &str| ProcessBeat {
        id: id.into(),
        role: role.into(),
        host: "test-host".into(),
        pid: 42,
    };
    let report = |deployment: &str, opened: Option<u64>| DeploymentReport {
        deployment: deployment.into(),
        report: serde_json::json!({ "state": if opened.is_some() { "open" } else { "closed" } }),
        opened_for: opened.map(Duration::from_millis),
    };
    t.store
        .beat(
            process("w1", "worker"),
            vec![report("gpt", Some(20_000)), report("claude", None)],
        )
        .await
        .unwrap();
    // SQLite's clock counts milliseconds: a1 starts strictly later.
    tokio::time::sleep(Duration::from_millis(5)).await;
    t.store.beat(process("a1", "api"), vec![]).await.unwrap();
    // A second beat updates the report rather than adding one.
    t.store
        .beat(process("w1", "worker"), vec![report("gpt", Some(20_000))])
        .await
        .unwrap();
    let seen = t.store.processes(Duration::from_secs(10)).await.unwrap();
    let ids: Vec<&str> = seen.iter().map(|p| p.beat.id.as_str()).collect();
    assert_eq!(ids, ["w1", "a1"], "oldest first");
    assert!(
        seen.iter().all(|p| p.age < Duration::from_secs(5)),
        "{seen:?}"
    );
    assert_eq!(seen[0].beat.role, "worker");
    let reports = t
        .store
        .health_reports(Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(reports.len(), 2, "{reports:?}");
    let gpt = reports.iter().find(|r| r.deployment == "gpt").unwrap();
    assert_eq!(gpt.process, "w1");
    assert_eq!(gpt.report["state"], "open");
    assert!(
        gpt.opened_for
            .is_some_and(|left| left > Duration::from_secs(15)),
        "{gpt:?}"
    );
    let claude = reports.iter().find(|r| r.deployment == "claude").unwrap();
    assert_eq!(claude.opened_for, None);
    // Stale beats are not read, and are forgotten.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(t
        .store
        .processes(Duration::from_millis(20))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        t.store
            .prune_processes(Duration::from_millis(20))
            .await
            .unwrap(),
        2
    );
    assert!(t
        .store
        .health_reports(Duration::from_secs(10))
        .await
        .unwrap()
        .is_empty());
}
