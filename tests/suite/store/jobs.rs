//! Jobs in the store: recording them (created, existing, a `custom_id` reused), starting
//! attempts, the transitions (success with its one cost row, retry, failure, cancel) and the
//! job's view read back.

use crate::common::stores::{StoreBackend, TestStore};
use sluice::budgets::Budgets;
use sluice::failure::{ErrorKind, JobFailure};
use sluice::job::{ChatRequest, Envelope, JobSpec, JobStatus, Urgency};
use sluice::pricing::PicoUsd;
use sluice::providers::Usage;
use sluice::store::{
    Adopted, AttemptOutcome, AttemptRecord, AttemptStart, CostRecord, InsertOutcome, Orphan,
    Refusal, StartOutcome, Store, StoreError,
};
use sluice::tier::Tier;
use sluice::with_pool;
use std::sync::Arc;
use uuid::Uuid;

pub fn envelope(tenant: &str, content: &str) -> Envelope {
    let request: ChatRequest = serde_json::from_value(serde_json::json!({
        "model": "fast",
        "messages": [{"role": "user", "content": content}],
    }))
    .unwrap();
    let mut spec = JobSpec::new(Urgency::Standard, request);
    spec.tags.team = Some("search".into());
    Envelope::new(tenant, spec)
}

pub fn start() -> AttemptStart {
    AttemptStart {
        deployment: "gpt-mini".into(),
        provider: "openai".into(),
        model: "gpt-4o-mini".into(),
        key_id: "k1".into(),
        tier: Tier::Realtime,
        started_at: 1,
        chosen_because: Some("primary".into()),
    }
}

pub fn attempt(number: u32, outcome: AttemptOutcome) -> AttemptRecord {
    AttemptRecord {
        number,
        deployment: "gpt-mini".into(),
        provider: "openai".into(),
        model: "gpt-4o-mini".into(),
        key_id: "k1".into(),
        tier: Tier::Realtime,
        outcome,
        http_status: Some(200),
        error: None,
        retry_after_ms: None,
        started_at: 1,
        finished_at: 2,
        chosen_because: Some("primary".into()),
        first_token_ms: Some(1),
    }
}

pub fn cost(amount: i64) -> CostRecord {
    CostRecord {
        tier: Tier::Realtime,
        usage: Usage {
            prompt_tokens: 10,
            completion_tokens: 5,
            cached_tokens: 0,
            cache_write_tokens: 0,
        },
        price: None,
        amount: PicoUsd(amount),
        realtime_amount: PicoUsd(amount),
        route: "fast".into(),
        fallback_from: None,
    }
}

/// Finishes a running job with an answer and its cost, through the one success path.
pub async fn succeed(store: &Store, id: Uuid, number: u32, amount: i64) -> bool {
    sluice::finish::succeed(
        store,
        &Arc::new(Budgets::default()),
        id,
        attempt(number, AttemptOutcome::Ok),
        serde_json::json!({"answer": number}),
        cost(amount),
    )
    .await
    .unwrap()
}

/// Rows of `table` for job `id`.
async fn rows(store: &Store, table: &str, id: Uuid) -> i64 {
    let sql = format!("SELECT COUNT(*) FROM {table} WHERE job_id = $1");
    with_pool!(store.pool(), p => sqlx::query_scalar(&sql)
        .bind(id.to_string())
        .fetch_one(p)
        .await
        .unwrap())
}

/// A job is created once: offered again (same id, or same `custom_id` and request) the
/// first stands; a `custom_id` offered with another request is refused, writing nothing.
async fn insert_created_existing_and_reused(backend: StoreBackend) {
    let t = TestStore::open(backend).await;
    let store = &t.store;
    let mut first = envelope("acme", "hello");
    first.spec.custom_id = Some("c-1".into());
    assert_eq!(
        store.insert_job(&first, true).await.unwrap(),
        InsertOutcome::Created
    );
    assert_eq!(
        store.insert_job(&first, true).await.unwrap(),
        InsertOutcome::Existing(first.id)
    );
    let mut retry = envelope("acme", "hello");
    retry.spec.custom_id = Some("c-1".into());
    assert_eq!(
        store.insert_jobs(vec![retry.clone()]).await.unwrap(),
        vec![InsertOutcome::Existing(first.id)]
    );
    // Another tenant's custom_id is its own.
    let mut other = envelope("globex", "hello");
    other.spec.custom_id = Some("c-1".into());
    let fresh = envelope("acme", "fresh");
    assert_eq!(
        store
            .insert_jobs(vec![other.clone(), fresh.clone()])
            .await
            .unwrap(),
        vec![InsertOutcome::Created, InsertOutcome::Created]
    );

    let mut changed = envelope("acme", "changed");
    changed.spec.custom_id = Some("c-1".into());
    let beside = envelope("acme", "beside");
    match store.insert_jobs(vec![beside.clone(), changed]).await {
        Err(StoreError::CustomIdReused(reused)) => {
            assert_eq!(
                (reused.custom_id.as_str(), reused.existing),
                ("c-1", first.id)
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(store.job("acme", beside.id).await.unwrap().is_none());

    let view = store.job("acme", first.id).await.unwrap().unwrap();
    assert_eq!(view.status, JobStatus::Queued);
    assert_eq!(view.custom_id.as_deref(), Some("c-1"));
    assert_eq!(view.tags.team.as_deref(), Some("search"));
    assert_eq!(view.model, "fast");
    assert!(store.job("globex", first.id).await.unwrap().is_none());
}

/// Jobs recorded unpublished are stranded until marked published; refused ones are gone,
/// and their late message is an orphan.
async fn publishing_and_refusing(backend: StoreBackend) {
    let t = TestStore::open(backend).await;
    let store = &t.store;
    let (a, b, c) = (
        envelope("acme", "a"),
        envelope("acme", "b"),
        envelope("acme", "c"),
    );
    store
        .insert_jobs(vec![a.clone(), b.clone(), c.clone()])
        .await
        .unwrap();
    let stranded = store
        .stranded_jobs(std::time::Duration::ZERO, 10)
        .await
        .unwrap();
    assert_eq!(stranded.len(), 3);
    store.mark_published(vec![a.id]).await.unwrap();
    let stranded: Vec<Uuid> = store
        .stranded_jobs(std::time::Duration::ZERO, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(stranded.len(), 2);
    assert!(!stranded.contains(&a.id));

    let mut found: Vec<Uuid> = store
        .envelopes(&[a.id, b.id, Uuid::now_v7()])
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    found.sort();
    let mut expected = vec![a.id, b.id];
    expected.sort();
    assert_eq!(found, expected);
    let back = store.envelopes(&[b.id]).await.unwrap().remove(0);
    assert_eq!(back.spec.request, b.spec.request);
    assert_eq!(back.spec.tags, b.spec.tags);
    assert!(back.recorded);

    // A touched job (published) stops the refusal; untouched ones are refused.
    assert_eq!(
        store.refuse_unpublished(vec![a.id, b.id]).await.unwrap(),
        Refusal::TooLate
    );
    assert_eq!(
        store.refuse_unpublished(vec![b.id, c.id]).await.unwrap(),
        Refusal::Refused
    );
    assert!(store.job("acme", b.id).await.unwrap().is_none());
    assert_eq!(
        store.adopt(&b).await.unwrap(),
        Adopted::Orphan(Orphan::Refused(b.id))
    );
    let mut recorded = envelope("acme", "recorded elsewhere");
    recorded.recorded = true;
    assert_eq!(
        store.adopt(&recorded).await.unwrap(),
        Adopted::Orphan(Orphan::Unrecorded(recorded.id))
    );
    let foreign = envelope("acme", "foreign");
    assert_eq!(store.adopt(&foreign).await.unwrap(), Adopted::Recorded);
    assert_eq!(
        store.adopt(&foreign).await.unwrap(),
        Adopted::Existing(foreign.id)
    );
}

/// Starting an attempt counts it; a success writes its attempt, result and one cost row, and
/// a second answer changes nothing.
async fn start_then_succeed_once(backend: StoreBackend) {
    let t = TestStore::open(backend).await;
    let store = &t.store;
    let job = envelope("acme", "hi");
    store.insert_job(&job, true).await.unwrap();
    assert!(
        !succeed(store, job.id, 1, 7).await,
        "a queued job is not finished"
    );
    assert_eq!(
        store.start_attempt(job.id, 3, start()).await.unwrap(),
        StartOutcome::Started(1)
    );
    assert_eq!(
        store.progress(job.id).await.unwrap(),
        Some((JobStatus::Running, 1))
    );
    assert!(succeed(store, job.id, 1, 7).await);
    assert!(
        !succeed(store, job.id, 2, 9).await,
        "a second answer is discarded"
    );
    for table in ["attempts", "results", "costs"] {
        assert_eq!(rows(store, table, job.id).await, 1, "{table}");
    }
    assert_eq!(store.total_cost().await.unwrap(), PicoUsd(7));

    let view = store.job("acme", job.id).await.unwrap().unwrap();
    assert_eq!(view.status, JobStatus::Succeeded);
    assert!(view.finished_at.is_some());
    assert_eq!(view.result, Some(serde_json::json!({"answer": 1})));
    assert_eq!(view.attempts.len(), 1);
    let a = &view.attempts[0];
    assert_eq!((a.number, a.outcome.clone()), (1, AttemptOutcome::Ok));
    assert_eq!(
        (a.deployment.as_str(), a.tier.as_str()),
        ("gpt-mini", "realtime")
    );
    assert_eq!(a.http_status, Some(200));
    assert_eq!(a.chosen_because.as_deref(), Some("primary"));
    let cost = view.cost.unwrap();
    assert_eq!(cost.amount_pico_usd, 7);
    assert!(!cost.price_known);
    assert_eq!((cost.input_tokens, cost.output_tokens), (10, 5));
    assert!(view.batch.is_none());

    let outcome = store
        .job_outcome("acme", job.id, true)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(outcome.status, JobStatus::Succeeded);
    assert_eq!(outcome.answer, Some(serde_json::json!({"answer": 1})));
    assert_eq!(outcome.last_attempt.unwrap().outcome, "ok");
    let outcome = store
        .job_outcome("acme", job.id, false)
        .await
        .unwrap()
        .unwrap();
    assert!(outcome.answer.is_none());
    assert_eq!(
        store.start_attempt(job.id, 3, start()).await.unwrap(),
        StartOutcome::AlreadyFinal(JobStatus::Succeeded)
    );
}

/// A retried attempt sends the job back to `queued`; the next start numbers after it, and a
/// start that finds an attempt still `running` marks it `interrupted`; past `max_attempts`
/// the job is failed instead.
async fn retry_interrupt_and_exhaust(backend: StoreBackend) {
    let t = TestStore::open(backend).await;
    let store = &t.store;
    let job = envelope("acme", "hi");
    store.insert_job(&job, true).await.unwrap();
    assert_eq!(
        store
            .start_attempt(Uuid::now_v7(), 3, start())
            .await
            .unwrap(),
        StartOutcome::Missing
    );
    assert_eq!(
        store.start_attempt(job.id, 3, start()).await.unwrap(),
        StartOutcome::Started(1)
    );
    let mut failed = attempt(1, AttemptOutcome::Failed(ErrorKind::RateLimited.into()));
    failed.http_status = Some(429);
    failed.error = Some("slow down".into());
    failed.retry_after_ms = Some(500);
    store.record_retry(job.id, failed).await.unwrap();
    assert_eq!(
        store.progress(job.id).await.unwrap(),
        Some((JobStatus::Queued, 1))
    );
    assert_eq!(
        store.start_attempt(job.id, 3, start()).await.unwrap(),
        StartOutcome::Started(2)
    );
    // Its worker died; the job is delivered again.
    assert_eq!(
        store.start_attempt(job.id, 3, start()).await.unwrap(),
        StartOutcome::Started(3)
    );
    let view = store.job("acme", job.id).await.unwrap().unwrap();
    let outcomes: Vec<_> = view.attempts.iter().map(|a| a.outcome.clone()).collect();
    assert_eq!(
        outcomes,
        [
            AttemptOutcome::Failed(ErrorKind::RateLimited.into()),
            AttemptOutcome::Interrupted,
            AttemptOutcome::Running,
        ]
    );
    assert_eq!(view.attempts[0].retry_after_ms, Some(500));
    assert_eq!(
        store.start_attempt(job.id, 3, start()).await.unwrap(),
        StartOutcome::Exhausted { attempts: 3 }
    );
    let view = store.job("acme", job.id).await.unwrap().unwrap();
    assert_eq!(view.status, JobStatus::Failed);
    let error = view.error.unwrap();
    assert_eq!(error.kind, JobFailure::Interrupted);
    assert!(
        error.message.contains("max_attempts 3"),
        "{}",
        error.message
    );
    assert_eq!(view.attempts[2].outcome, AttemptOutcome::Interrupted);
}

/// A failure stores its attempt, kind, message and param once; a final job is not failed
/// again, and a message the queue gave up on fails only a job not final yet.
async fn finish_failed_once(backend: StoreBackend) {
    let t = TestStore::open(backend).await;
    let store = &t.store;
    let job = envelope("acme", "hi");
    store.insert_job(&job, true).await.unwrap();
    store.start_attempt(job.id, 3, start()).await.unwrap();
    let mut last = attempt(1, AttemptOutcome::Failed(ErrorKind::BadRequest.into()));
    last.http_status = Some(400);
    let failed = store
        .finish_failed(
            job.id,
            Some(last),
            JobFailure::Provider(ErrorKind::BadRequest),
            "bad temperature".into(),
            Some("temperature".into()),
        )
        .await
        .unwrap();
    assert!(failed);
    let again = store
        .finish_failed(
            job.id,
            None,
            JobFailure::DeadlineExceeded,
            "late".into(),
            None,
        )
        .await
        .unwrap();
    assert!(!again);
    assert!(!store
        .fail_undelivered(job.id, "gave up".into())
        .await
        .unwrap());
    let view = store.job("acme", job.id).await.unwrap().unwrap();
    assert_eq!(view.status, JobStatus::Failed);
    let error = view.error.unwrap();
    assert_eq!(error.kind, JobFailure::Provider(ErrorKind::BadRequest));
    assert_eq!(error.message, "bad temperature");
    assert_eq!(error.param.as_deref(), Some("temperature"));
    assert_eq!(view.attempts.len(), 1);
    assert_eq!(view.attempts[0].http_status, Some(400));
    let outcome = store
        .job_outcome("acme", job.id, true)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(outcome.error.unwrap().param.as_deref(), Some("temperature"));
    assert!(outcome.answer.is_none());

    let undelivered = envelope("acme", "lost");
    store.insert_job(&undelivered, true).await.unwrap();
    store
        .start_attempt(undelivered.id, 3, start())
        .await
        .unwrap();
    assert!(store
        .fail_undelivered(undelivered.id, "past the delivery limit".into())
        .await
        .unwrap());
    let view = store.job("acme", undelivered.id).await.unwrap().unwrap();
    assert_eq!(view.error.unwrap().kind, JobFailure::Interrupted);
    assert_eq!(view.attempts[0].outcome, AttemptOutcome::Interrupted);
}

/// A tenant cancels its queued job; another tenant sees no such job; a running job stays.
async fn cancel_a_queued_job(backend: StoreBackend) {
    let t = TestStore::open(backend).await;
    let store = &t.store;
    let queued = envelope("acme", "queued");
    let running = envelope("acme", "running");
    store
        .insert_jobs(vec![queued.clone(), running.clone()])
        .await
        .unwrap();
    store.start_attempt(running.id, 3, start()).await.unwrap();
    assert_eq!(store.cancel("globex", queued.id).await.unwrap(), None);
    assert_eq!(
        store.cancel("acme", queued.id).await.unwrap(),
        Some(JobStatus::Cancelled)
    );
    assert_eq!(
        store.cancel("acme", running.id).await.unwrap(),
        Some(JobStatus::Running)
    );
    assert_eq!(
        store.start_attempt(queued.id, 3, start()).await.unwrap(),
        StartOutcome::AlreadyFinal(JobStatus::Cancelled)
    );
    let view = store.job("acme", queued.id).await.unwrap().unwrap();
    assert_eq!(view.status, JobStatus::Cancelled);
    assert!(view.finished_at.is_some());
}

/// Two processes starting the same job at once (two store handles on one database): each
/// gets its own number, and the one started first is found `running` and interrupted.
async fn concurrent_starts_number_attempts_once(backend: StoreBackend) {
    let t = TestStore::open(backend).await;
    let other = crate::store::budgets::second_handle(&t).await;
    let job = envelope("acme", "hi");
    t.store.insert_job(&job, true).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = if i % 2 == 0 {
            t.store.clone()
        } else {
            other.clone()
        };
        tasks.push(tokio::spawn(async move {
            store.start_attempt(job.id, 100, start()).await.unwrap()
        }));
    }
    let mut numbers = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            StartOutcome::Started(n) => numbers.push(n),
            other => panic!("{other:?}"),
        }
    }
    numbers.sort();
    assert_eq!(numbers, (1..=8).collect::<Vec<_>>());
    let view = t.store.job("acme", job.id).await.unwrap().unwrap();
    let running = view
        .attempts
        .iter()
        .filter(|a| a.outcome == AttemptOutcome::Running)
        .count();
    assert_eq!(running, 1, "{:?}", view.attempts);
}

/// Eight submissions of one `custom_id`, each with its own request, at once through two
/// store handles (two processes on Postgres): one is recorded, every other is refused as a
/// reuse, none answered with the first's job.
async fn concurrent_custom_id_reuse_is_refused(backend: StoreBackend) {
    let t = TestStore::open(backend).await;
    let other = crate::store::budgets::second_handle(&t).await;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = if i % 2 == 0 {
            t.store.clone()
        } else {
            other.clone()
        };
        let mut job = envelope("acme", &format!("request {i}"));
        job.spec.custom_id = Some("same".into());
        tasks.push(tokio::spawn(
            async move { store.insert_jobs(vec![job]).await },
        ));
    }
    let (mut created, mut refused) = (0, 0);
    for task in tasks {
        match task.await.unwrap() {
            Ok(outcomes) => {
                assert_eq!(outcomes, vec![InsertOutcome::Created]);
                created += 1;
            }
            Err(StoreError::CustomIdReused(_)) => refused += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!((created, refused), (1, 7));
}

on_both_stores!(
    concurrent_custom_id_reuse_is_refused,
    insert_created_existing_and_reused,
    publishing_and_refusing,
    start_then_succeed_once,
    retry_interrupt_and_exhaust,
    finish_failed_once,
    cancel_a_queued_job,
    concurrent_starts_number_attempts_once,
);
