//! Uploaded files: kept, listed (a page after a cursor, either order, by purpose), deleted;
//! their bytes in a folder or in the store in chunks (round trip across chunks, removed with
//! the file, an unfinished upload neither listed nor read, and swept); and the batches that
//! read them, which keep a file from being deleted until their submission has finished.

use crate::common::stores::{StoreBackend, TestStore};
use futures::TryStreamExt;
use sluice::config::FileBytes;
use sluice::store::files::chunks::CHUNK_BYTES;
use sluice::store::{
    DeleteOutcome, FileQuery, FileRecord, NewBatch, Store, StoreError, UnfinishedBatch,
};
use std::time::Duration;
use uuid::Uuid;

on_both_stores!(
    files_are_kept_listed_and_deleted,
    a_file_an_unfinished_batch_reads_is_not_deleted,
    bytes_round_trip_across_chunks_in_the_store_or_a_folder,
    deleting_a_file_deletes_its_chunks,
    an_unfinished_upload_is_not_a_file_and_is_swept,
    an_upload_dropped_unkept_removes_its_chunks,
);

async fn keep(store: &Store, tenant: &str, name: &str, purpose: &str) -> FileRecord {
    let mut upload = store.new_upload().await.unwrap();
    upload.write(b"{}\n").await.unwrap();
    upload.keep(tenant, name, purpose).await.unwrap()
}

/// The file's bytes as the store streams them back.
async fn content(store: &Store, record: &FileRecord) -> std::io::Result<Vec<u8>> {
    let chunks: Vec<_> = store.file_content(record).try_collect().await?;
    Ok(chunks.concat())
}

/// Chunks the store holds under `id`.
async fn chunks(store: &Store, id: &str) -> i64 {
    sluice::with_pool!(store.pool(), p => sqlx::query_scalar(
        "SELECT COUNT(*) FROM file_chunks WHERE file_id = $1",
    )
    .bind(id)
    .fetch_one(p)
    .await
    .unwrap())
}

/// Whether any bytes of file `id` are kept, wherever the store keeps them.
async fn bytes_kept(store: &Store, id: &str) -> bool {
    match store.file_path(id) {
        Some(path) => path.exists(),
        None => chunks(store, id).await > 0,
    }
}

/// `n` bytes that differ from chunk to chunk and within one.
fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
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
    assert_eq!(content(s, &a).await.unwrap(), b"{}\n");

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
    assert!(!bytes_kept(s, &a.id).await);
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

async fn bytes_round_trip_across_chunks_in_the_store_or_a_folder(backend: StoreBackend) {
    let t = TestStore::open(backend).await;
    let folder = FileBytes::Folder(t.dir.path().join("uploads"));
    for files in [FileBytes::Store, folder] {
        let s = &t.store.clone().with_files(files.clone());
        // Two full chunks and a part, written in pieces that straddle the chunk boundaries.
        let bytes = pattern(2 * CHUNK_BYTES + 12_345);
        let mut upload = s.new_upload().await.unwrap();
        for piece in bytes.chunks(300_007) {
            upload.write(piece).await.unwrap();
        }
        assert_eq!(upload.bytes(), bytes.len() as u64);
        let record = upload.keep("acme", "big.jsonl", "batch").await.unwrap();
        assert_eq!(record.bytes, bytes.len() as u64);
        assert_eq!(
            s.file("acme", &record.id).await.unwrap(),
            Some(record.clone())
        );
        let read = content(s, &record).await.unwrap();
        assert!(
            read == bytes,
            "{files:?}: {} bytes read back differ",
            read.len()
        );
        let expected_chunks = if files == FileBytes::Store { 3 } else { 0 };
        assert_eq!(chunks(s, &record.id).await, expected_chunks, "{files:?}");

        // An empty file is a file too.
        let empty = s.new_upload().await.unwrap();
        let record = empty.keep("acme", "empty.jsonl", "batch").await.unwrap();
        assert_eq!(content(s, &record).await.unwrap(), b"");
    }
}

async fn deleting_a_file_deletes_its_chunks(backend: StoreBackend) {
    let t = TestStore::open(backend).await;
    let s = &t.store.clone().with_files(FileBytes::Store);
    let mut upload = s.new_upload().await.unwrap();
    upload.write(&pattern(CHUNK_BYTES + 1)).await.unwrap();
    let record = upload.keep("acme", "in.jsonl", "batch").await.unwrap();
    let other = keep(s, "acme", "other.jsonl", "batch").await;
    assert_eq!(chunks(s, &record.id).await, 2);

    assert_eq!(
        s.delete_file("acme", &record.id).await.unwrap(),
        DeleteOutcome::Deleted
    );
    assert_eq!(chunks(s, &record.id).await, 0);
    let read = content(s, &record).await;
    assert!(read.is_err(), "a deleted file's bytes were read: {read:?}");
    // Another file's chunks stay.
    assert_eq!(content(s, &other).await.unwrap(), b"{}\n");
}

async fn an_unfinished_upload_is_not_a_file_and_is_swept(backend: StoreBackend) {
    let t = TestStore::open(backend).await;
    let s = &t.store.clone().with_files(FileBytes::Store);
    let mut upload = s.new_upload().await.unwrap();
    upload.write(&pattern(CHUNK_BYTES + 10)).await.unwrap();
    let id = upload.id().to_string();
    assert_eq!(chunks(s, &id).await, 1, "a full chunk is written at once");

    // Not a file: not listed, not found, not deletable, no batch made of it.
    let all = FileQuery {
        limit: 10,
        ..FileQuery::default()
    };
    assert_eq!(s.files("acme", &all).await.unwrap(), vec![]);
    assert_eq!(s.file("acme", &id).await.unwrap(), None);
    assert_eq!(
        s.delete_file("acme", &id).await.unwrap(),
        DeleteOutcome::NotFound
    );
    assert!(!s.create_batch("acme", batch(&id)).await.unwrap());
    assert_eq!(
        chunks(s, &id).await,
        1,
        "a refused delete leaves the upload"
    );

    // An upload still being written is not idle; one untouched past the idle time is swept.
    assert_eq!(
        s.sweep_abandoned_uploads(Duration::from_secs(3600))
            .await
            .unwrap(),
        0
    );
    // Past the millisecond of its last chunk, so an idle time of zero has passed.
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(s.sweep_abandoned_uploads(Duration::ZERO).await.unwrap(), 1);
    assert_eq!(chunks(s, &id).await, 0);

    // The swept upload cannot be completed: its next chunk, or keeping it, is refused.
    let swept = upload.write(&pattern(CHUNK_BYTES)).await;
    assert!(
        matches!(swept, Err(StoreError::UploadSwept(ref swept)) if swept == &id),
        "{swept:?}"
    );
    let kept = upload.keep("acme", "late.jsonl", "batch").await;
    assert!(matches!(kept, Err(StoreError::UploadSwept(_))), "{kept:?}");
    assert_eq!(s.files("acme", &all).await.unwrap(), vec![]);
    assert_eq!(chunks(s, &id).await, 0);

    // A kept file is never swept, however old.
    let record = keep(s, "acme", "kept.jsonl", "batch").await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(s.sweep_abandoned_uploads(Duration::ZERO).await.unwrap(), 0);
    assert_eq!(content(s, &record).await.unwrap(), b"{}\n");

    // In a folder, a killed process's temporary upload file is swept the same way.
    let folder = t.dir.path().join("uploads");
    let f = &t
        .store
        .clone()
        .with_files(FileBytes::Folder(folder.clone()));
    let mut unfinished = f.new_upload().await.unwrap();
    unfinished.write(b"half a line").await.unwrap();
    std::mem::forget(unfinished);
    let temporary = || std::fs::read_dir(&folder).unwrap().count();
    assert_eq!(temporary(), 1);
    assert_eq!(
        f.sweep_abandoned_uploads(Duration::from_secs(3600))
            .await
            .unwrap(),
        0
    );
    assert_eq!(f.sweep_abandoned_uploads(Duration::ZERO).await.unwrap(), 1);
    assert_eq!(temporary(), 0);
}

async fn an_upload_dropped_unkept_removes_its_chunks(backend: StoreBackend) {
    let t = TestStore::open(backend).await;
    let s = &t.store.clone().with_files(FileBytes::Store);
    let mut upload = s.new_upload().await.unwrap();
    upload.write(&pattern(2 * CHUNK_BYTES)).await.unwrap();
    let id = upload.id().to_string();
    assert_eq!(chunks(s, &id).await, 2);
    // As when the client goes away mid-upload and the request's handler is dropped.
    drop(upload);
    crate::common::eventually(
        "the dropped upload's chunks to be removed",
        Duration::from_secs(10),
        async || chunks(s, &id).await == 0,
    )
    .await;
    assert_eq!(s.file("acme", &id).await.unwrap(), None);
}
