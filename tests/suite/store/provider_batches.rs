//! Provider batches (the batch tier): jobs placed into a deployment's open batch, batches
//! closed and leased when due (two stores on one database, as two processes, never sharing
//! a lease), the steps that move a batch along, and the item guard (a result for an item no
//! longer pending changes nothing).
//!
//! The cases that place jobs (`placing`, `results`) go through the jobs' own helpers; the
//! others set their batches up as rows.

use crate::common::stores::{StoreBackend, TestStore};
use sluice::failure::ErrorKind;
use sluice::job::{ChatRequest, Envelope, JobSpec, Urgency};
use sluice::store::provider_batches::{BatchState, DueBatch, NewBatchItem, Placement};
use sluice::store::{now_ms, AttemptFailure, AttemptOutcome, AttemptRecord, Store};
use sluice::tier::Tier;
use sluice::{with_conn, with_pool};
use std::collections::HashSet;
use std::time::Duration;
use uuid::Uuid;

const LEASE: Duration = Duration::from_secs(120);

/// A second handle on the test's database, as another process opens it.
async fn second_process(t: &TestStore) -> Store {
    match &t.postgres {
        Some(database) => {
            let url: sluice::config::PostgresUrl = database.url.parse().unwrap();
            Store::open_postgres(
                &url,
                sluice::config::DEFAULT_DATABASE_CONNECTIONS,
                sluice::config::FileBytes::Store,
            )
            .await
            .unwrap()
        }
        None => Store::open(&t.dir.path().join("sluice.db")).await.unwrap(),
    }
}

/// A batch of deployment `mini` in `state`, written as a row (see the module's doc).
async fn batch_row(store: &Store, state: BatchState, next_check_at: i64) -> Uuid {
    let id = Uuid::now_v7();
    let now = now_ms();
    store
        .write(move |mut conn| {
            Box::pin(async move {
                Ok(with_conn!(conn, c => sqlx::query(
                    "INSERT INTO provider_batches (id, deployment, key_id, state, max_requests, \
                     max_bytes, flush_at, next_check_at, created_at, updated_at) \
                     VALUES ($1, 'mini', 'k1', $2, 10, 1000, $3, $3, $4, $4)",
                )
                .bind(id.to_string())
                .bind(state.as_str())
                .bind(next_check_at)
                .bind(now)
                .execute(&mut *c)
                .await?
                .rows_affected()))
            })
        })
        .await
        .unwrap();
    id
}

/// A job waiting in the queue, as the API records it.
async fn queued_job(store: &Store) -> Uuid {
    let request: ChatRequest = serde_json::from_value(serde_json::json!({
        "model": "fast", "messages": [{"role": "user", "content": "hi"}],
    }))
    .unwrap();
    let envelope = Envelope::new("acme", JobSpec::new(Urgency::Batch, request));
    store.insert_job(&envelope, true).await.unwrap();
    envelope.id
}

/// `job` offered to deployment `mini`'s batches, which hold `max_requests` jobs each.
fn item(job: Uuid, max_requests: usize, max_wait: Duration) -> NewBatchItem {
    NewBatchItem {
        job,
        deployment: "mini".into(),
        key_ids: vec!["k1".into(), "k2".into()],
        bytes: 10,
        max_requests,
        max_bytes: 1000,
        max_wait,
        max_attempts: 3,
        deadline: None,
        chosen_because: "batch tier: no deadline".into(),
    }
}

async fn place(store: &Store, job: Uuid, max_requests: usize) -> (Uuid, u32) {
    match store
        .add_to_batch(item(job, max_requests, Duration::from_secs(60)))
        .await
        .unwrap()
    {
        Placement::Placed { batch, attempt } => (batch, attempt),
        other => panic!("job {job} not placed: {other:?}"),
    }
}

/// The batch attempt of an item that did not answer, as the tracker records it.
fn errored(job_attempt: u32, failure: AttemptFailure) -> AttemptRecord {
    AttemptRecord {
        number: job_attempt,
        deployment: "mini".into(),
        provider: "openai".into(),
        model: "gpt-4o-mini".into(),
        key_id: "k1".into(),
        tier: Tier::Batch,
        outcome: AttemptOutcome::Failed(failure),
        http_status: Some(429),
        error: Some("rate limited".into()),
        retry_after_ms: None,
        started_at: now_ms(),
        finished_at: now_ms(),
        chosen_because: Some("batch tier: no deadline".into()),
        first_token_ms: None,
    }
}

/// The state of `job`'s batch item.
async fn item_state(store: &Store, job: Uuid) -> String {
    with_pool!(store.pool(), p => sqlx::query_scalar(
        "SELECT state FROM batch_items WHERE job_id = $1",
    )
    .bind(job.to_string())
    .fetch_one(p)
    .await
    .unwrap())
}

/// The job's status, whether it is published, its attempts started and recorded.
async fn job_row(store: &Store, job: Uuid) -> (String, bool, i64, i64) {
    with_pool!(store.pool(), p => sqlx::query_as(
        "SELECT status, published, attempts, \
         (SELECT COUNT(*) FROM attempts a WHERE a.job_id = jobs.id) FROM jobs WHERE id = $1",
    )
    .bind(job.to_string())
    .fetch_one(p)
    .await
    .unwrap())
}

fn ids(due: &[DueBatch]) -> Vec<Uuid> {
    due.iter().map(|b| b.id).collect()
}

/// Jobs fill the open batch up to its `max_requests`, which closes it; the next job opens
/// another batch, on the deployment's next key. A redelivered job keeps its placement. The
/// closed batch is leased for submission with its items; the open one waits.
async fn placing(backend: StoreBackend) {
    let t = TestStore::open(backend).await;
    let store = &t.store;
    let (a, b, c) = (
        queued_job(store).await,
        queued_job(store).await,
        queued_job(store).await,
    );
    let (first, attempt) = place(store, a, 2).await;
    assert_eq!(attempt, 1);
    assert_eq!(place(store, b, 2).await, (first, 1));
    let (second, _) = place(store, c, 2).await;
    assert_ne!(second, first, "a full batch takes no more jobs");
    // A redelivery of a's message: the same placement, no attempt counted.
    assert_eq!(place(store, a, 2).await, (first, 1));
    assert_eq!(job_row(store, a).await, ("running".into(), true, 1, 0));

    let due = store.claim_due_batches(LEASE, 10).await.unwrap();
    assert_eq!(ids(&due), [first], "only the full batch is due");
    assert_eq!(due[0].state, BatchState::Submitting);
    assert_eq!((due[0].key_id.as_str(), due[0].pending), ("k1", 2));
    let pending = store.pending_items(first).await.unwrap();
    let jobs: Vec<Uuid> = pending.iter().map(|i| i.job).collect();
    assert_eq!(jobs, [a, b]);
    assert!(pending.iter().all(|i| i.attempt == 1));
    assert_eq!(pending[0].request.model, "fast");

    // The second batch, open until its wait is over, is on the other key.
    let keys: Vec<String> = with_pool!(store.pool(), p => sqlx::query_scalar(
        "SELECT key_id FROM provider_batches WHERE id = $1",
    )
    .bind(second.to_string())
    .fetch_all(p)
    .await
    .unwrap());
    assert_eq!(keys, ["k2"]);
}

/// An open batch whose wait is over is closed as it is claimed, with its items' earliest
/// deadline.
async fn an_open_batch_closes_when_its_wait_is_over(backend: StoreBackend) {
    let t = TestStore::open(backend).await;
    let store = &t.store;
    let open = batch_row(store, BatchState::Collecting, now_ms() + 60_000).await;
    let over = batch_row(store, BatchState::Collecting, now_ms() - 1).await;
    let due = store.claim_due_batches(LEASE, 10).await.unwrap();
    assert_eq!(ids(&due), [over]);
    assert_eq!(due[0].state, BatchState::Submitting);
    assert_eq!((due[0].pending, due[0].earliest_deadline), (0, None));
    let states: Vec<(String, String)> = with_pool!(store.pool(), p => sqlx::query_as(
        "SELECT id, state FROM provider_batches ORDER BY id",
    )
    .fetch_all(p)
    .await
    .unwrap());
    assert_eq!(
        states,
        [
            (open.to_string(), "collecting".to_string()),
            (over.to_string(), "submitting".to_string())
        ]
    );
}

/// A batch moves along: submitted (polled when due), checked (not due until the next
/// look), a failed submission (tried again, counted), finished (never due again). Each
/// step gives its lease back.
async fn a_batch_moves_along(backend: StoreBackend) {
    let t = TestStore::open(backend).await;
    let store = &t.store;
    let batch = batch_row(store, BatchState::Submitting, now_ms() - 1).await;
    let due = store.claim_due_batches(LEASE, 10).await.unwrap();
    assert_eq!(ids(&due), [batch]);
    assert_eq!((due[0].submit_failures, due[0].submitted_at), (0, None));

    store
        .batch_submit_failed(batch, "upload refused".into(), now_ms() - 1)
        .await
        .unwrap();
    let due = store.claim_due_batches(LEASE, 10).await.unwrap();
    assert_eq!(ids(&due), [batch]);
    assert_eq!(
        (due[0].state, due[0].submit_failures),
        (BatchState::Submitting, 1)
    );

    store
        .batch_submitted(batch, "batch_abc".into(), now_ms() - 1)
        .await
        .unwrap();
    let due = store.claim_due_batches(LEASE, 10).await.unwrap();
    assert_eq!(ids(&due), [batch]);
    assert_eq!(due[0].state, BatchState::Submitted);
    assert_eq!(due[0].provider_batch_id.as_deref(), Some("batch_abc"));
    assert!(due[0].submitted_at.is_some());

    store
        .batch_checked(batch, "in_progress".into(), now_ms() + 60_000)
        .await
        .unwrap();
    assert!(store.claim_due_batches(LEASE, 10).await.unwrap().is_empty());

    store
        .batch_finished(batch, BatchState::Ended, None)
        .await
        .unwrap();
    let row: (String, Option<String>, Option<i64>, Option<i64>) = with_pool!(store.pool(), p => sqlx::query_as(
            "SELECT state, provider_status, lease_until, ended_at FROM provider_batches WHERE id = $1",
        )
        .bind(batch.to_string())
        .fetch_one(p)
        .await
        .unwrap());
    assert_eq!(
        (row.0.as_str(), row.1.as_deref(), row.2),
        ("ended", Some("in_progress"), None)
    );
    assert!(row.3.is_some());
    assert!(store.claim_due_batches(LEASE, 10).await.unwrap().is_empty());
}

/// Two processes claiming at once never get the same batch, and between them take every
/// due batch; a batch leased is nobody else's until its lease runs out.
async fn two_processes_never_share_a_lease(backend: StoreBackend) {
    let t = TestStore::open(backend).await;
    let other = second_process(&t).await;
    let mut all = HashSet::new();
    for _ in 0..20 {
        all.insert(batch_row(&t.store, BatchState::Submitting, now_ms() - 1).await);
    }
    let claim = |store: Store| async move {
        let mut got = Vec::new();
        for _ in 0..10 {
            got.extend(ids(&store.claim_due_batches(LEASE, 3).await.unwrap()));
            tokio::task::yield_now().await;
        }
        got
    };
    let (one, two) = tokio::join!(
        tokio::spawn(claim(t.store.clone())),
        tokio::spawn(claim(other.clone()))
    );
    let (mut one, mut two) = (one.unwrap(), two.unwrap());
    // What a claim skipped while the other held it, the last looks take.
    one.extend(ids(&t.store.claim_due_batches(LEASE, 32).await.unwrap()));
    two.extend(ids(&other.claim_due_batches(LEASE, 32).await.unwrap()));
    let mut leased = HashSet::new();
    for id in one.iter().chain(&two) {
        assert!(leased.insert(*id), "batch {id} was leased twice");
    }
    assert_eq!(leased, all, "every due batch was leased");
    assert!(t
        .store
        .claim_due_batches(LEASE, 32)
        .await
        .unwrap()
        .is_empty());
    assert!(other.claim_due_batches(LEASE, 32).await.unwrap().is_empty());
}

/// A lease that ran out (its process died holding it) is taken by the next process.
async fn a_lease_that_ran_out_is_taken_again(backend: StoreBackend) {
    let t = TestStore::open(backend).await;
    let other = second_process(&t).await;
    let batch = batch_row(&t.store, BatchState::Submitted, now_ms() - 1).await;
    let short = Duration::from_millis(1);
    assert_eq!(
        ids(&t.store.claim_due_batches(short, 10).await.unwrap()),
        [batch]
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        ids(&other.claim_due_batches(LEASE, 10).await.unwrap()),
        [batch]
    );
    assert!(t
        .store
        .claim_due_batches(LEASE, 10)
        .await
        .unwrap()
        .is_empty());
}

/// Each item takes one result: an answered item is `done`, an errored one goes back to the
/// real-time tier (queued, unpublished, its batch attempt recorded) once; a result for an
/// item no longer pending (a late or repeated one, from either process) changes nothing.
async fn results(backend: StoreBackend) {
    let t = TestStore::open(backend).await;
    let store = &t.store;
    let other = second_process(&t).await;
    let (answered, errored_job, raced, waiting) = (
        queued_job(store).await,
        queued_job(store).await,
        queued_job(store).await,
        queued_job(store).await,
    );
    let mut batch = None;
    for job in [answered, errored_job, raced, waiting] {
        batch = Some(place(store, job, 10).await.0);
    }
    let batch = batch.unwrap();
    let retryable = || errored(1, AttemptFailure::Provider(ErrorKind::RateLimited));

    // Succeeded: the tracker commits the job's answer, then marks the item done.
    store.item_done(answered).await.unwrap();
    assert_eq!(item_state(store, answered).await, "done");
    assert!(!store.return_item(answered, retryable()).await.unwrap());
    assert_eq!(item_state(store, answered).await, "done");
    assert_eq!(
        job_row(store, answered).await,
        ("running".into(), true, 1, 0)
    );

    // Errored: back to the real-time tier, once.
    assert!(store.return_item(errored_job, retryable()).await.unwrap());
    assert_eq!(item_state(store, errored_job).await, "returned");
    assert_eq!(
        job_row(store, errored_job).await,
        ("queued".into(), false, 1, 1)
    );
    assert!(!store.return_item(errored_job, retryable()).await.unwrap());
    store.item_done(errored_job).await.unwrap();
    assert_eq!(item_state(store, errored_job).await, "returned");
    assert_eq!(
        job_row(store, errored_job).await,
        ("queued".into(), false, 1, 1)
    );

    // Two processes returning one item at once: exactly one does.
    let (one, two) = tokio::join!(
        store.return_item(raced, retryable()),
        other.return_item(raced, errored(1, AttemptFailure::Expired))
    );
    assert!(
        one.unwrap() ^ two.unwrap(),
        "exactly one process returns the item"
    );
    assert_eq!(job_row(store, raced).await, ("queued".into(), false, 1, 1));

    let pending: Vec<Uuid> = store
        .pending_items(batch)
        .await
        .unwrap()
        .iter()
        .map(|i| i.job)
        .collect();
    assert_eq!(pending, [waiting]);
}

on_both_stores!(
    an_open_batch_closes_when_its_wait_is_over,
    a_batch_moves_along,
    two_processes_never_share_a_lease,
    a_lease_that_ran_out_is_taken_again,
    placing,
    results,
);
