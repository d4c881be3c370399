//! Uploaded files: kept, listed (a page after a cursor, either order, by purpose), deleted;
//! and the batches that read them, which keep a file from being deleted until their
//! submission has finished.

use crate::common::stores::{StoreBackend, TestStore};
use sluice::store::{DeleteOutcome, FileQuery, FileRecord, NewBatch, Store, UnfinishedBatch};
use std::io::Write;
use uuid::Uuid;

on_both_stores!(
    files_are_kept_listed_and_deleted,
    a_file_an_unfinished_batch_reads_is_not_deleted,
);

async fn keep(store: &Store, tenant: &str, name: &str, purpose: &str) -> FileRecord {
    let mut upload = store.new_upload().unwrap();
    upload.write_all(b"{}\n").unwrap();
    store
        .keep_upload(tenant, upload, name, purpose, 3)
        .await
        .unwrap()
}

async fn files_are_kept_listed_and_deleted(backend: StoreBackend) {
    let t = TestStore::open(backend).await;
    let s = &t.store;
    let a = keep(s, "acme", "a.jsonl", "batch").await;
    let b = keep(s, "acme", "b.jsonl", "batch").await;
    let c = keep(s, "acme", "c.txt", "assistants").await;
    keep(s, "globex", "d.jsonl", "batch").await;

    assert_eq!(s.file("acme", &a.id).await.unwrap(), Some(a.clone()));
    assert_eq!(s.file("globex", &a.id).await.unwrap(), None);
    assert_eq!((a.bytes, a.filename.as_str()), (3, "a.jsonl"));
    assert!(s.file_path(&a.id).exists());

    let ids = |files: Vec<FileRecord>| files.into_iter().map(|f| f.id).collect::<Vec<_>>();
    let list = |query: FileQuery| async move { ids(s.files("acme", &query).await.unwrap()) };
    let all = FileQuery {
        limit: 10,
        ..FileQuery::default()
    };
    assert_eq!(
        list(all.clone()).await,
        [c.id.as_str(), b.id.as_str(), a.id.as_str()]
    );
    let ascending = FileQuery {
        ascending: true,
        ..all.clone()
    };
    assert_eq!(
        list(ascending.clone()).await,
        [a.id.as_str(), b.id.as_str(), c.id.as_str()]
    );
    assert_eq!(
        list(FileQuery {
            after: Some(a.id.clone()),
            limit: 1,
            ..ascending
        })
        .await,
        [b.id.as_str()]
    );
    assert_eq!(
        list(FileQuery {
            after: Some(c.id.clone()),
            ..all.clone()
        })
        .await,
        [b.id.as_str(), a.id.as_str()]
    );
    assert_eq!(
        list(FileQuery {
            purpose: Some("assistants".into()),
            ..all.clone()
        })
        .await,
        [c.id.as_str()]
    );

    assert_eq!(
        s.delete_file("globex", &a.id).await.unwrap(),
        DeleteOutcome::NotFound
    );
    assert_eq!(
        s.delete_file("acme", &a.id).await.unwrap(),
        DeleteOutcome::Deleted
    );
    assert!(!s.file_path(&a.id).exists());
    assert_eq!(s.file("acme", &a.id).await.unwrap(), None);
    assert_eq!(
        s.delete_file("acme", &a.id).await.unwrap(),
        DeleteOutcome::NotFound
    );
    assert_eq!(list(all).await, [c.id.as_str(), b.id.as_str()]);
}

fn batch(input_file_id: &str) -> NewBatch {
    let id = Uuid::now_v7();
    NewBatch {
        id,
        name: format!("batch_{}", id.simple()),
        endpoint: "/v1/chat/completions".into(),
        metadata: Some(serde_json::json!({"run": "7"})),
        input_file_id: input_file_id.into(),
        completion_window: "24h".into(),
        expires_at: 86_400_000,
    }
}

async fn a_file_an_unfinished_batch_reads_is_not_deleted(backend: StoreBackend) {
    let t = TestStore::open(backend).await;
    let s = &t.store;
    let file = keep(s, "acme", "in.jsonl", "batch").await;
    // Another tenant's file, or none, makes no batch.
    assert!(!s.create_batch("globex", batch(&file.id)).await.unwrap());
    assert!(!s.create_batch("acme", batch("file-0")).await.unwrap());

    let first = batch(&file.id);
    assert!(s.create_batch("acme", first.clone()).await.unwrap());
    assert_eq!(
        s.unfinished_batches().await.unwrap(),
        vec![UnfinishedBatch {
            id: first.id,
            tenant: "acme".into(),
            input_file_id: file.id.clone(),
            expires_at: Some(86_400_000),
        }]
    );
    assert_eq!(
        s.delete_file("acme", &file.id).await.unwrap(),
        DeleteOutcome::InUse(first.id)
    );

    s.start_batch(first.id).await.unwrap();
    let started = s
        .batch_fields(first.id)
        .await
        .unwrap()
        .in_progress_at
        .unwrap();
    s.start_batch(first.id).await.unwrap();
    let fields = s.batch_fields(first.id).await.unwrap();
    assert_eq!(
        fields.in_progress_at,
        Some(started),
        "the first time is kept"
    );
    assert_eq!(fields.metadata, Some(serde_json::json!({"run": "7"})));
    assert_eq!(fields.input_file_id.as_deref(), Some(file.id.as_str()));
    assert_eq!(fields.completion_window.as_deref(), Some("24h"));
    assert_eq!(fields.expires_at, Some(86_400_000));
    assert!(fields.failed_at.is_none() && fields.errors.is_none());

    let errors = serde_json::json!([{"code": "invalid_json", "line": 1}]);
    s.fail_batch(first.id, errors.clone()).await.unwrap();
    let fields = s.batch_fields(first.id).await.unwrap();
    assert!(fields.failed_at.is_some());
    assert_eq!(fields.errors, Some(errors));
    assert_eq!(s.unfinished_batches().await.unwrap(), vec![]);
    let view = s.bulk("acme", first.id).await.unwrap().unwrap();
    assert_eq!(
        view.status, "completed",
        "a failed batch submits nothing more"
    );

    assert_eq!(
        s.delete_file("acme", &file.id).await.unwrap(),
        DeleteOutcome::Deleted
    );
    assert!(!s.create_batch("acme", batch(&file.id)).await.unwrap());
}
