//! Uploaded files' bytes kept in the store itself ([`FileBytes::Store`], the default with
//! PostgreSQL), so every process on every machine reads what any one of them took.
//!
//! A file's bytes are rows of `file_chunks` (its id, a sequence number from 0, at most
//! [`CHUNK_BYTES`] each), written one by one as the upload arrives, so a 200 MB upload never
//! sits whole in memory, and read back one by one. While an upload is being written, a row of
//! `file_uploads` says so; keeping it deletes that row and inserts the file's `files` row in
//! one transaction, so a file is listed and readable only once all its chunks are written.
//!
//! An upload that never finishes (the client went away, the process was killed) leaves its
//! `file_uploads` row and chunks: the process that took it removes them when the upload is
//! dropped ([`super::upload`]), and otherwise [`sweep`] removes every upload untouched for a
//! while (`App::serve` runs it at start and then every hour). The sweep deletes the
//! `file_uploads` row first, in the transaction that deletes the chunks: a chunk written or a
//! keep at the same moment finds that row gone (on PostgreSQL it waits for the sweep's row
//! lock, and a sweep that waited for theirs sees the upload touched again and leaves it), so
//! an upload is either swept whole or kept whole.
//!
//! [`FileBytes::Store`]: crate::config::FileBytes::Store

use super::super::{now_ms, Conn, Store, StoreError};
use super::FileRecord;
use crate::{with_conn, with_pool};
use bytes::Bytes;

/// The largest chunk: big enough that a 200 MB file is 200 rows, small enough that a reader
/// or writer holds one at a time without noticing.
pub const CHUNK_BYTES: usize = 1 << 20;

/// Records that upload `id` has begun: its chunks may be written from now on.
pub(super) async fn begin(store: &Store, id: &str) -> Result<(), StoreError> {
    let id = id.to_string();
    store
        .write_single(move |mut conn| {
            Box::pin(async move {
                with_conn!(conn, c => sqlx::query(
                    "INSERT INTO file_uploads (file_id, started_at, touched_at) VALUES ($1, $2, $2)",
                )
                .bind(&id)
                .bind(now_ms())
                .execute(&mut *c)
                .await
                .map(|_| ()))
            })
        })
        .await
}

/// Writes chunk `seq` of upload `id`; `false` when the upload was swept meanwhile (nothing
/// is written then).
pub(super) async fn write(
    store: &Store,
    id: &str,
    seq: i64,
    bytes: Bytes,
) -> Result<bool, StoreError> {
    let id = id.to_string();
    store
        .write(move |mut conn| {
            Box::pin(async move {
                if !touch(conn.reborrow(), &id).await? {
                    return Ok(false);
                }
                with_conn!(conn, c => sqlx::query(
                    "INSERT INTO file_chunks (file_id, seq, bytes) VALUES ($1, $2, $3)",
                )
                .bind(&id)
                .bind(seq)
                .bind(bytes.as_ref())
                .execute(&mut *c)
                .await?
                .rows_affected());
                Ok(true)
            })
        })
        .await
}

/// Marks upload `id` as written to now; `false` when it is no longer being written.
async fn touch(mut conn: Conn<'_>, id: &str) -> Result<bool, sqlx::Error> {
    let touched = with_conn!(conn, c => sqlx::query(
        "UPDATE file_uploads SET touched_at = $2 WHERE file_id = $1",
    )
    .bind(id)
    .bind(now_ms())
    .execute(&mut *c)
    .await?
    .rows_affected());
    Ok(touched == 1)
}

/// Keeps upload `record.id` as the tenant's file: its `file_uploads` row goes and its `files`
/// row comes, in one transaction. `false` when the upload was swept meanwhile (nothing is
/// recorded then).
pub(super) async fn keep(
    store: &Store,
    tenant: &str,
    record: &FileRecord,
) -> Result<bool, StoreError> {
    let (tenant, record) = (tenant.to_string(), record.clone());
    store
        .write(move |mut conn| {
            Box::pin(async move {
                let ended = with_conn!(conn, c => sqlx::query(
                    "DELETE FROM file_uploads WHERE file_id = $1",
                )
                .bind(&record.id)
                .execute(&mut *c)
                .await?
                .rows_affected());
                if ended == 0 {
                    return Ok(false);
                }
                super::insert_file(conn, &tenant, &record).await?;
                Ok(true)
            })
        })
        .await
}

/// Removes upload `id` and its chunks, unless it was kept (or swept) already.
pub(super) async fn abandon(store: &Store, id: &str) -> Result<(), StoreError> {
    let id = id.to_string();
    store
        .write(move |mut conn| {
            Box::pin(async move {
                let ended = with_conn!(conn, c => sqlx::query(
                    "DELETE FROM file_uploads WHERE file_id = $1",
                )
                .bind(&id)
                .execute(&mut *c)
                .await?
                .rows_affected());
                if ended == 1 {
                    delete(conn, &id).await?;
                }
                Ok(())
            })
        })
        .await
}

/// Removes every upload untouched since `before` (Unix milliseconds) with its chunks; returns
/// how many (see the module doc for why the `file_uploads` row goes first).
pub(super) async fn sweep(store: &Store, before: i64) -> Result<u64, StoreError> {
    store
        .write(move |mut conn| {
            Box::pin(async move {
                let swept: Vec<String> = with_conn!(conn, c => sqlx::query_scalar(
                    "DELETE FROM file_uploads WHERE touched_at < $1 RETURNING file_id",
                )
                .bind(before)
                .fetch_all(&mut *c)
                .await?);
                for id in &swept {
                    delete(conn.reborrow(), id).await?;
                }
                Ok(swept.len() as u64)
            })
        })
        .await
}

/// Deletes file `id`'s chunks, in the caller's transaction.
pub(super) async fn delete(mut conn: Conn<'_>, id: &str) -> Result<(), sqlx::Error> {
    with_conn!(conn, c => sqlx::query("DELETE FROM file_chunks WHERE file_id = $1")
        .bind(id)
        .execute(&mut *c)
        .await
        .map(|_| ()))
}

/// Chunk `seq` of file `id`, if it has one.
pub(super) async fn read(store: &Store, id: &str, seq: i64) -> Result<Option<Bytes>, StoreError> {
    let chunk: Option<Vec<u8>> = with_pool!(store.pool(), p => sqlx::query_scalar(
        "SELECT bytes FROM file_chunks WHERE file_id = $1 AND seq = $2",
    )
    .bind(id)
    .bind(seq)
    .fetch_optional(p)
    .await?);
    Ok(chunk.map(Bytes::from))
}
