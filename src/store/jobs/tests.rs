use super::attempts::*;
use super::insert::*;
use super::transitions::*;
use super::views::*;
use crate::job::{ChatRequest, Envelope, JobSpec, JobStatus, Urgency};
use crate::pricing::PicoUsd;
use crate::providers::Usage;
use crate::store::Store;
use crate::tier::Tier;
use serde_json::Value;
use uuid::Uuid;

fn envelope() -> Envelope {
    let request: ChatRequest = serde_json::from_value(serde_json::json!({
        "model": "fast",
        "messages": [{"role": "user", "content": "hi"}],
    }))
    .unwrap();
    let mut spec = JobSpec::new(Urgency::Standard, request);
    spec.tags.team = Some("search".into());
    Envelope::new("acme", spec)
}

/// Within a bulk, a `custom_id` offered again is a duplicate for the same request and a
/// conflict for another; neither writes, and a conflict does not stop the lines after it.
#[tokio::test]
async fn a_bulk_tells_a_changed_request_from_a_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("t.db")).await.unwrap();
    let bulk = store.open_bulk("acme", "b").await.unwrap().id;
    let line = |custom_id: &str, content: &str| {
        let mut job = envelope();
        job.spec.custom_id = Some(custom_id.into());
        job.spec.request.messages[0]["content"] = content.into();
        job
    };
    let (changed, kept) = (line("c", "before"), line("k", "same"));
    let first = store
        .insert_bulk_jobs(bulk, vec![(1, changed.clone()), (2, kept.clone())])
        .await
        .unwrap();
    assert_eq!(first, vec![InsertOutcome::Created; 2]);

    let again = store
        .insert_bulk_jobs(bulk, vec![(1, line("c", "after")), (2, line("k", "same"))])
        .await
        .unwrap();
    assert_eq!(
        again,
        vec![
            InsertOutcome::Conflicting(changed.id),
            InsertOutcome::Existing(kept.id)
        ]
    );
    let request: String = sqlx::query_scalar("SELECT request FROM jobs WHERE custom_id = 'c'")
        .fetch_one(store.sqlite_reader().unwrap())
        .await
        .unwrap();
    assert!(request.contains("before"), "{request}");
    let jobs: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs")
        .fetch_one(store.sqlite_reader().unwrap())
        .await
        .unwrap();
    assert_eq!(jobs, 2);
}

fn attempt(number: u32) -> AttemptRecord {
    AttemptRecord {
        number,
        deployment: "gpt-mini".into(),
        provider: "openai".into(),
        model: "gpt-4o-mini".into(),
        key_id: "k1".into(),
        tier: Tier::Realtime,
        outcome: AttemptOutcome::Ok,
        http_status: Some(200),
        error: None,
        retry_after_ms: None,
        started_at: 1,
        finished_at: 2,
        chosen_because: None,
        first_token_ms: None,
    }
}

fn start() -> AttemptStart {
    AttemptStart {
        deployment: "gpt-mini".into(),
        provider: "openai".into(),
        model: "gpt-4o-mini".into(),
        key_id: "k1".into(),
        tier: Tier::Realtime,
        started_at: 1,
        chosen_because: None,
    }
}

/// A crash leaves the attempt it cut short `running`; picking the job up again marks it
/// `interrupted`, and attempts counted across crashes stop at `max_attempts`: the start
/// after the last one fails the job instead.
#[tokio::test]
async fn attempts_cut_short_are_interrupted_and_count_toward_max_attempts() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("t.db")).await.unwrap();
    let job = envelope();
    store.insert_job(&job, true).await.unwrap();
    let outcomes = |view: JobView| {
        view.attempts
            .into_iter()
            .map(|a| a.outcome)
            .collect::<Vec<_>>()
    };

    let started = store.start_attempt(job.id, 2, start()).await.unwrap();
    assert_eq!(started, StartOutcome::Started(1));
    let view = store.job("acme", job.id).await.unwrap().unwrap();
    assert_eq!(outcomes(view), [AttemptOutcome::Running]);

    // The worker died mid-call; the job is delivered again.
    let started = store.start_attempt(job.id, 2, start()).await.unwrap();
    assert_eq!(started, StartOutcome::Started(2));
    let view = store.job("acme", job.id).await.unwrap().unwrap();
    assert_eq!(
        outcomes(view),
        [AttemptOutcome::Interrupted, AttemptOutcome::Running]
    );

    // And again: both attempts are used up.
    let started = store.start_attempt(job.id, 2, start()).await.unwrap();
    assert_eq!(started, StartOutcome::Exhausted { attempts: 2 });
    let view = store.job("acme", job.id).await.unwrap().unwrap();
    assert_eq!(view.status, JobStatus::Failed);
    let error = view.error.clone().unwrap();
    assert_eq!(error.kind, INTERRUPTED);
    assert!(
        error.message.contains("max_attempts 2"),
        "{}",
        error.message
    );
    assert_eq!(
        outcomes(view),
        [AttemptOutcome::Interrupted, AttemptOutcome::Interrupted]
    );
    let again = store.start_attempt(job.id, 2, start()).await.unwrap();
    assert_eq!(again, StartOutcome::AlreadyFinal(JobStatus::Failed));
}

fn cost(amount: i64) -> CostRecord {
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

/// [`succeed_job`] in a write of its own: whether it finished the job.
async fn succeed(
    store: &Store,
    id: Uuid,
    attempt: AttemptRecord,
    response: Value,
    cost: CostRecord,
) -> bool {
    store
        .write(move |conn| {
            Box::pin(async move {
                let mut conn = conn;
                let owner = succeed_job(&mut conn, id, &attempt, &response, &cost).await?;
                Ok(owner.is_some())
            })
        })
        .await
        .unwrap()
}

async fn count(store: &Store, table: &str, job: Uuid) -> i64 {
    sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table} WHERE job_id = ?"))
        .bind(job.to_string())
        .fetch_one(store.sqlite_reader().unwrap())
        .await
        .unwrap()
}

/// The finish writes its attempt, result and cost only behind the transition from
/// `running`: a job never started, or already finished by another answer, gets nothing
/// from it and is not charged twice.
#[tokio::test]
async fn a_finish_writes_only_for_a_running_job() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("t.db")).await.unwrap();
    let job = envelope();
    store.insert_job(&job, true).await.unwrap();

    let queued = succeed(
        &store,
        job.id,
        attempt(1),
        serde_json::json!({"n": 0}),
        cost(7),
    )
    .await;
    assert!(!queued, "a queued job is not finished by an answer");
    for table in ["attempts", "results", "costs"] {
        assert_eq!(count(&store, table, job.id).await, 0, "{table}");
    }

    assert_eq!(
        store.start_attempt(job.id, 5, start()).await.unwrap(),
        StartOutcome::Started(1)
    );
    let first = succeed(
        &store,
        job.id,
        attempt(1),
        serde_json::json!({"n": 1}),
        cost(7),
    )
    .await;
    assert!(first);
    let second = succeed(
        &store,
        job.id,
        attempt(2),
        serde_json::json!({"n": 2}),
        cost(9),
    )
    .await;
    assert!(!second, "a second answer is discarded");
    for table in ["attempts", "results", "costs"] {
        assert_eq!(count(&store, table, job.id).await, 1, "{table}");
    }
    let (tenant, team, amount, attempt_number): (String, Option<String>, i64, i64) =
        sqlx::query_as(
            "SELECT c.tenant, c.team_tag, c.amount_pico_usd, a.number FROM costs c \
             JOIN attempts a ON a.id = c.attempt_id WHERE c.job_id = ?",
        )
        .bind(job.id.to_string())
        .fetch_one(store.sqlite_reader().unwrap())
        .await
        .unwrap();
    assert_eq!(
        (tenant.as_str(), team.as_deref(), amount, attempt_number),
        ("acme", Some("search"), 7, 1)
    );
    assert_eq!(store.total_cost().await.unwrap(), PicoUsd(7));
}

/// Every outcome reads back from the word it is stored by, a word this build does not know
/// unchanged.
#[test]
fn attempt_outcomes_read_back_from_their_stored_words() {
    use crate::failure::{ErrorKind, JobFailure};
    let outcomes = [
        AttemptOutcome::Running,
        AttemptOutcome::Interrupted,
        AttemptOutcome::Ok,
        AttemptOutcome::Failed(ErrorKind::RateLimited.into()),
        AttemptOutcome::Failed(ErrorKind::InvalidResponse.into()),
        AttemptOutcome::Failed(AttemptFailure::Expired),
        AttemptOutcome::Failed(AttemptFailure::Cancelled),
        AttemptOutcome::Failed(AttemptFailure::Missing),
        AttemptOutcome::Failed(AttemptFailure::Abandoned),
        AttemptOutcome::Failed(AttemptFailure::Unrecognised("something_newer".into())),
    ];
    for outcome in outcomes {
        assert_eq!(AttemptOutcome::from_stored(outcome.as_str()), outcome);
    }
    assert_eq!(
        AttemptOutcome::Failed(ErrorKind::ServerError.into()).as_str(),
        "server_error"
    );
    assert_eq!(AttemptFailure::Expired.as_str(), "expired");
    assert_eq!(
        AttemptFailure::Provider(ErrorKind::Timeout).job_failure(),
        JobFailure::Provider(ErrorKind::Timeout)
    );
    assert_eq!(
        AttemptFailure::Missing.job_failure(),
        JobFailure::Unrecognised
    );
}
