//! Budgets in the store: reservations all or none, released by every way a job ends,
//! spend added with its thresholds recorded once, and reservations from two processes at
//! once admitting exactly what fits.

use super::jobs::{envelope, start, succeed};
use crate::common::stores::{StoreBackend, TestStore};
use sluice::failure::JobFailure;
use sluice::job::Envelope;
use sluice::pricing::PicoUsd;
use sluice::store::budgets::{add_spend, BudgetTotals, Hold, Reserved, Spend, Threshold};
use sluice::store::Store;
use uuid::Uuid;

const PERIOD: i64 = 1_764_547_200_000;

fn hold(budget: &str, limit: i64, amount: i64) -> Hold {
    Hold {
        budget: budget.into(),
        tenant: "acme".into(),
        period_start: PERIOD,
        limit: PicoUsd(limit),
        amount: PicoUsd(amount),
    }
}

async fn totals(store: &Store, budget: &str) -> BudgetTotals {
    store.budget_totals(budget, "acme", PERIOD).await.unwrap()
}

async fn reserved(store: &Store, budget: &str) -> i64 {
    totals(store, budget).await.reserved.0
}

/// Another handle on the test's store, as a second process would open it: on Postgres a
/// store of its own (its own pool) on the same database; on SQLite, where one process
/// writes, a clone of the handle.
pub async fn second_handle(t: &TestStore) -> Store {
    match &t.postgres {
        None => t.store.clone(),
        Some(database) => {
            let url = database.url.parse().unwrap();
            Store::open_postgres(
                &url,
                sluice::config::DEFAULT_DATABASE_CONNECTIONS,
                sluice::config::FileBytes::Store,
            )
            .await
            .unwrap()
        }
    }
}

async fn queued(store: &Store) -> Envelope {
    let job = envelope("acme", "hi");
    store.insert_job(&job, true).await.unwrap();
    job
}

/// A hold that does not fit reserves nothing, not even the holds that fit; holds that fit
/// are all reserved, and reserving again replaces the job's reservations instead of adding.
async fn reservations_are_all_or_none(backend: StoreBackend) {
    let t = TestStore::open(backend).await;
    let store = &t.store;
    let job = queued(store).await;
    let refused = store
        .reserve(job.id, vec![hold("team", 100, 60), hold("user", 50, 60)])
        .await
        .unwrap();
    assert_eq!(
        refused,
        Reserved::Refused {
            index: 1,
            spent: PicoUsd(0),
            reserved: PicoUsd(0),
        }
    );
    assert_eq!(reserved(store, "team").await, 0);
    assert_eq!(reserved(store, "user").await, 0);

    let holds = vec![hold("team", 100, 60), hold("user", 100, 60)];
    assert_eq!(
        store.reserve(job.id, holds.clone()).await.unwrap(),
        Reserved::Held
    );
    assert_eq!(
        store.reserve(job.id, holds).await.unwrap(),
        Reserved::Held,
        "a job's own reservation is released before it reserves again"
    );
    assert_eq!(reserved(store, "team").await, 60);
    assert_eq!(reserved(store, "user").await, 60);

    let other = queued(store).await;
    assert_eq!(
        store
            .reserve(other.id, vec![hold("user", 100, 10), hold("team", 100, 50)])
            .await
            .unwrap(),
        Reserved::Refused {
            index: 1,
            spent: PicoUsd(0),
            reserved: PicoUsd(60),
        }
    );
    assert_eq!(reserved(store, "user").await, 60);
    assert_eq!(
        store
            .reserve(Uuid::now_v7(), vec![hold("team", 100, 1)])
            .await
            .unwrap(),
        Reserved::NotRunnable
    );
}

/// Success, failure, retry and cancel each release what the job held.
async fn every_ending_releases(backend: StoreBackend) {
    let t = TestStore::open(backend).await;
    let store = &t.store;
    let holds = || vec![hold("team", 1_000, 100), hold("user", 1_000, 100)];

    let succeeded = queued(store).await;
    store.reserve(succeeded.id, holds()).await.unwrap();
    store.start_attempt(succeeded.id, 3, start()).await.unwrap();
    assert_eq!(reserved(store, "team").await, 100);
    assert!(succeed(store, succeeded.id, 1, 40).await);
    assert_eq!(reserved(store, "team").await, 0);
    assert_eq!(reserved(store, "user").await, 0);

    let retried = queued(store).await;
    store.reserve(retried.id, holds()).await.unwrap();
    store.start_attempt(retried.id, 3, start()).await.unwrap();
    let failed = super::jobs::attempt(
        1,
        sluice::store::AttemptOutcome::Failed(sluice::failure::ErrorKind::ServerError.into()),
    );
    store.record_retry(retried.id, failed).await.unwrap();
    assert_eq!(reserved(store, "team").await, 0);

    store.reserve(retried.id, holds()).await.unwrap();
    assert!(store
        .finish_failed(
            retried.id,
            None,
            JobFailure::BudgetExceeded,
            "no".into(),
            None
        )
        .await
        .unwrap());
    assert_eq!(reserved(store, "user").await, 0);

    let cancelled = queued(store).await;
    store.reserve(cancelled.id, holds()).await.unwrap();
    assert_eq!(reserved(store, "team").await, 100);
    store.cancel("acme", cancelled.id).await.unwrap();
    assert_eq!(reserved(store, "team").await, 0);
    assert_eq!(reserved(store, "user").await, 0);
    assert_eq!(
        store.reserve(cancelled.id, holds()).await.unwrap(),
        Reserved::NotRunnable
    );
}

/// Spend adds up, and each threshold is recorded (and reported) the first time only.
async fn spend_crosses_each_threshold_once(backend: StoreBackend) {
    let t = TestStore::open(backend).await;
    let store = &t.store;
    let spend = |amount: i64| Spend {
        budget: "team".into(),
        tenant: "acme".into(),
        period_start: PERIOD,
        amount: PicoUsd(amount),
        thresholds: vec![
            Threshold {
                points: 5_000,
                at: PicoUsd(50),
            },
            Threshold {
                points: 8_000,
                at: PicoUsd(80),
            },
        ],
    };
    let mut crossed = Vec::new();
    for amount in [30, 30, 30, 30] {
        let spend = spend(amount);
        let spent = store
            .write(move |conn| {
                Box::pin(async move {
                    let mut conn = conn;
                    add_spend(&mut conn, &spend).await
                })
            })
            .await
            .unwrap();
        crossed.push((spent.spent.0, spent.crossed));
    }
    assert_eq!(
        crossed,
        vec![
            (30, vec![]),
            (60, vec![5_000]),
            (90, vec![8_000]),
            (120, vec![])
        ]
    );
    assert_eq!(
        totals(store, "team").await,
        BudgetTotals {
            spent: PicoUsd(120),
            reserved: PicoUsd(0),
            crossed: vec![5_000, 8_000],
        }
    );
}

/// 40 jobs reserve at once, half through each of two store handles (two processes on
/// Postgres), on two budgets that fit 10 of them: exactly 10 hold, and the totals say so.
async fn concurrent_reservations_admit_exactly_what_fits(backend: StoreBackend) {
    let t = TestStore::open(backend).await;
    let other = second_handle(&t).await;
    let mut jobs = Vec::new();
    for _ in 0..40 {
        jobs.push(queued(&t.store).await.id);
    }
    let mut tasks = Vec::new();
    for (i, job) in jobs.into_iter().enumerate() {
        let store = if i % 2 == 0 {
            t.store.clone()
        } else {
            other.clone()
        };
        // Half name the budgets in one order, half in the other.
        let holds = if i % 4 < 2 {
            vec![hold("team", 1_000, 100), hold("user", 5_000, 100)]
        } else {
            vec![hold("user", 5_000, 100), hold("team", 1_000, 100)]
        };
        tasks.push(tokio::spawn(async move {
            store.reserve(job, holds).await.unwrap()
        }));
    }
    let mut held = 0;
    for task in tasks {
        match task.await.unwrap() {
            Reserved::Held => held += 1,
            Reserved::Refused { .. } => {}
            Reserved::NotRunnable => panic!("every job is queued"),
        }
    }
    assert_eq!(held, 10);
    assert_eq!(reserved(&t.store, "team").await, 1_000);
    assert_eq!(reserved(&t.store, "user").await, 1_000);
}

on_both_stores!(
    reservations_are_all_or_none,
    every_ending_releases,
    spend_crosses_each_threshold_once,
    concurrent_reservations_admit_exactly_what_fits,
);
