//! Bulks and the batch fields of their rows: opening one (idempotent by tenant and name), its
//! counts, cost and status, its finished jobs streamed, cancelling it.

use super::rows::{self, Cost, Row};
use crate::common::stores::{StoreBackend, TestStore};
use futures::TryStreamExt;
use sluice::job::{ChatRequest, Envelope, JobSpec, Urgency};
use sluice::store::bulks::BulkCounts;
use sluice::store::{BulkCancel, InsertOutcome, ResultsFilter, StoreError};
use uuid::Uuid;

on_both_stores!(
    a_bulk_is_opened_once_per_tenant_and_name,
    a_bulks_view_counts_its_jobs_and_sums_their_cost,
    results_stream_the_finished_jobs_as_filtered,
    a_finished_bulk_is_not_cancelled,
    cancel_stops_the_queued_jobs_and_later_submissions,
);

async fn a_bulk_is_opened_once_per_tenant_and_name(backend: StoreBackend) {
    let t = TestStore::open(backend).await;
    let s = &t.store;
    let first = s.open_bulk("acme", "nightly").await.unwrap();
    assert!(first.created && !first.cancelled);
    let again = s.open_bulk("acme", "nightly").await.unwrap();
    assert_eq!(
        (again.id, again.created, again.cancelled),
        (first.id, false, false)
    );
    let other = s.open_bulk("globex", "nightly").await.unwrap();
    assert!(other.created);
    assert_ne!(other.id, first.id);
    let second = s.open_bulk("acme", "weekly").await.unwrap();

    assert_eq!(
        s.bulk_named("acme", "nightly").await.unwrap(),
        Some(first.id)
    );
    assert_eq!(s.bulk_named("acme", "monthly").await.unwrap(), None);
    // Newest first, a page after the cursor, the tenant's only.
    assert_eq!(
        s.bulk_ids("acme", None, 10).await.unwrap(),
        vec![second.id, first.id]
    );
    assert_eq!(
        s.bulk_ids("acme", Some(second.id), 10).await.unwrap(),
        vec![first.id]
    );
    assert_eq!(s.bulk_ids("acme", None, 1).await.unwrap(), vec![second.id]);
    assert!(s.bulk("globex", first.id).await.unwrap().is_none());
}

async fn a_bulks_view_counts_its_jobs_and_sums_their_cost(backend: StoreBackend) {
    let t = TestStore::open(backend).await;
    let s = &t.store;
    let bulk = s.open_bulk("acme", "b").await.unwrap().id;
    let view = s.bulk("acme", bulk).await.unwrap().unwrap();
    assert_eq!((view.status, view.total, view.done), ("submitting", 0, 0));
    assert_eq!(view.cost.amount_pico_usd, 0);

    for (line, status, amount) in [
        (1, "succeeded", Some(7_000_000_000_123)),
        (2, "succeeded", Some(5)),
        (3, "failed", None),
        (4, "queued", None),
        (5, "running", None),
    ] {
        rows::write(
            s,
            Row {
                bulk: Some((bulk, line)),
                status,
                cost: amount.map(|amount| Cost {
                    amount,
                    input_tokens: 10,
                    cached_tokens: 2,
                    output_tokens: 3,
                    ..Cost::default()
                }),
                ..Row::default()
            },
        )
        .await;
    }
    s.finish_bulk_submission(bulk).await.unwrap();
    let view = s.bulk("acme", bulk).await.unwrap().unwrap();
    assert_eq!(view.name, "b");
    assert_eq!(view.status, "in_progress");
    assert!(view.submitted_at.is_some() && view.cancelled_at.is_none());
    assert_eq!((view.total, view.done), (5, 3));
    assert_eq!(
        view.counts,
        BulkCounts {
            queued: 1,
            running: 1,
            succeeded: 2,
            failed: 1,
            cancelled: 0
        }
    );
    assert_eq!(view.cost.amount_pico_usd, 7_000_000_000_128);

    // Its batch fields sum the same records' tokens.
    let fields = s.batch_fields(bulk).await.unwrap();
    assert_eq!(
        (
            fields.input_tokens,
            fields.cached_tokens,
            fields.output_tokens
        ),
        (20, 4, 6)
    );
    assert_eq!(fields.last_finished_at, Some(2_000));
    assert!(fields.input_file_id.is_none() && fields.metadata.is_none());

    // Every job final: completed.
    let done = s.open_bulk("acme", "done").await.unwrap().id;
    rows::write(
        s,
        Row {
            bulk: Some((done, 1)),
            status: "cancelled",
            ..Row::default()
        },
    )
    .await;
    s.finish_bulk_submission(done).await.unwrap();
    assert_eq!(
        s.bulk("acme", done).await.unwrap().unwrap().status,
        "completed"
    );
}

async fn results_stream_the_finished_jobs_as_filtered(backend: StoreBackend) {
    let t = TestStore::open(backend).await;
    let s = &t.store;
    let bulk = s.open_bulk("acme", "b").await.unwrap().id;
    let job = |line, status, error_kind, http_status, cost: bool| Row {
        bulk: Some((bulk, line)),
        custom_id: None,
        status,
        error_kind,
        http_status,
        cost: cost.then(Cost::default),
        ..Row::default()
    };
    let third = rows::write(s, job(3, "succeeded", None, Some(200), true)).await;
    let first = rows::write(s, job(1, "failed", Some("rate_limited"), Some(429), false)).await;
    rows::write(s, job(4, "queued", None, None, false)).await;
    let second = rows::write(s, job(2, "cancelled", None, None, false)).await;

    let read = |filter| async move {
        s.bulk_results(bulk, filter)
            .try_collect::<Vec<_>>()
            .await
            .unwrap()
    };
    let all = read(ResultsFilter {
        ordered: true,
        ..ResultsFilter::default()
    })
    .await;
    let lines: Vec<(u64, Uuid)> = all.iter().map(|r| (r.line, r.id)).collect();
    assert_eq!(lines, vec![(1, first), (2, second), (3, third)]);
    assert_eq!(all[0].http_status, Some(429));
    assert_eq!(all[0].error_kind.map(|k| k.as_str()), Some("rate_limited"));
    assert_eq!(all[0].error.as_deref(), Some("rate_limited happened"));
    assert_eq!(all[1].http_status, None);
    assert_eq!(
        all[2].response.as_deref(),
        Some(&*format!(r#"{{"id":"{third}"}}"#))
    );

    let errors = read(ResultsFilter {
        ordered: true,
        errors_only: true,
        ..ResultsFilter::default()
    })
    .await;
    assert_eq!(
        errors.iter().map(|r| r.line).collect::<Vec<_>>(),
        vec![1, 2]
    );
    let successes = read(ResultsFilter {
        successes_only: true,
        ..ResultsFilter::default()
    })
    .await;
    assert_eq!(
        successes.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![third]
    );
    let mut unordered: Vec<u64> = read(ResultsFilter::default())
        .await
        .iter()
        .map(|r| r.line)
        .collect();
    unordered.sort();
    assert_eq!(unordered, vec![1, 2, 3]);
}

async fn a_finished_bulk_is_not_cancelled(backend: StoreBackend) {
    let t = TestStore::open(backend).await;
    let s = &t.store;
    let bulk = s.open_bulk("acme", "b").await.unwrap().id;
    rows::write(
        s,
        Row {
            bulk: Some((bulk, 1)),
            status: "succeeded",
            ..Row::default()
        },
    )
    .await;
    s.finish_bulk_submission(bulk).await.unwrap();
    assert_eq!(
        s.cancel_bulk("acme", bulk).await.unwrap(),
        Some(BulkCancel::Finished)
    );
    assert_eq!(s.cancel_bulk("globex", bulk).await.unwrap(), None);
    let view = s.bulk("acme", bulk).await.unwrap().unwrap();
    assert_eq!((view.status, view.cancelled_at), ("completed", None));
}

fn envelope(custom_id: &str) -> Envelope {
    let request: ChatRequest = serde_json::from_value(serde_json::json!({
        "model": "fast",
        "messages": [{"role": "user", "content": "hi"}],
    }))
    .unwrap();
    let mut spec = JobSpec::new(Urgency::Standard, request);
    spec.custom_id = Some(custom_id.into());
    Envelope::new("acme", spec)
}

async fn cancel_stops_the_queued_jobs_and_later_submissions(backend: StoreBackend) {
    let t = TestStore::open(backend).await;
    let s = &t.store;
    let bulk = s.open_bulk("acme", "b").await.unwrap().id;
    let outcomes = s
        .insert_bulk_jobs(bulk, vec![(1, envelope("a")), (2, envelope("b"))])
        .await
        .unwrap();
    assert_eq!(outcomes, vec![InsertOutcome::Created; 2]);
    assert_eq!(
        s.cancel_bulk("acme", bulk).await.unwrap(),
        Some(BulkCancel::Cancelled { jobs: 2 })
    );
    let view = s.bulk("acme", bulk).await.unwrap().unwrap();
    assert_eq!((view.status, view.counts.cancelled), ("cancelled", 2));
    // Cancelling again cancels nothing more; the bulk takes no more jobs, nor reopens.
    assert_eq!(
        s.cancel_bulk("acme", bulk).await.unwrap(),
        Some(BulkCancel::Cancelled { jobs: 0 })
    );
    let refused = s.insert_bulk_jobs(bulk, vec![(3, envelope("c"))]).await;
    assert!(matches!(refused, Err(StoreError::BulkCancelled(id)) if id == bulk));
    let reopened = s.open_bulk("acme", "b").await.unwrap();
    assert!(reopened.cancelled && !reopened.created);
}
