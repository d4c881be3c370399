//! An upload being written ([`Upload`]): its bytes go where the store keeps files' bytes
//! ([`FileBytes`]) as they arrive, and it becomes a file, listed and readable, only when it is
//! kept whole ([`Upload::keep`]).
//!
//! - In a folder: a temporary file (`.upload-…`) in that folder, renamed to the file's id once
//!   complete, then recorded. A crash leaves at most an unrecorded temporary file, which the
//!   sweep removes ([`Store::sweep_abandoned_uploads`]).
//! - In the store: chunks of [`CHUNK_BYTES`], each written as soon as it is full (see
//!   [`super::chunks`]). An upload dropped before it was kept (its request failed, or the
//!   client went away and the handler with it) removes its chunks in a task of its own; a
//!   killed process leaves them to the sweep.

use super::chunks::{self, CHUNK_BYTES};
use super::{FileRecord, FILE_ID_PREFIX};
use crate::config::FileBytes;
use crate::store::{now_ms, Store, StoreError};
use bytes::BytesMut;
use std::path::PathBuf;
use tokio::io::AsyncWriteExt;
use uuid::Uuid;

/// The name every temporary upload file in a files folder starts with.
pub(super) const TEMPORARY_PREFIX: &str = ".upload-";

/// An upload being written; see the module doc.
pub struct Upload {
    store: Store,
    /// The id the file will have (`file-` and 32 hex digits of a UUIDv7).
    id: String,
    bytes: u64,
    into: Destination,
}

enum Destination {
    Folder {
        folder: PathBuf,
        temporary: tempfile::NamedTempFile,
        out: tokio::fs::File,
    },
    Store {
        /// The chunk being filled.
        buffer: BytesMut,
        /// The sequence number of that chunk.
        seq: i64,
        unkept: Unkept,
    },
}

impl Store {
    /// A new upload, empty, for the bytes of a file to be written into as they arrive.
    pub async fn new_upload(&self) -> Result<Upload, StoreError> {
        let id = format!("{FILE_ID_PREFIX}{}", Uuid::now_v7().simple());
        let into = match &self.files {
            FileBytes::Folder(folder) => {
                std::fs::create_dir_all(folder).map_err(StoreError::Files)?;
                let temporary = tempfile::Builder::new()
                    .prefix(TEMPORARY_PREFIX)
                    .tempfile_in(folder)
                    .map_err(StoreError::Files)?;
                let out = temporary.as_file().try_clone().map_err(StoreError::Files)?;
                Destination::Folder {
                    folder: folder.clone(),
                    temporary,
                    out: tokio::fs::File::from_std(out),
                }
            }
            FileBytes::Store => {
                chunks::begin(self, &id).await?;
                Destination::Store {
                    buffer: BytesMut::with_capacity(CHUNK_BYTES),
                    seq: 0,
                    unkept: Unkept {
                        store: Some(self.clone()),
                        id: id.clone(),
                    },
                }
            }
        };
        Ok(Upload {
            store: self.clone(),
            id,
            bytes: 0,
            into,
        })
    }
}

impl Upload {
    /// The id the file will have once kept.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Bytes written so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Appends `data`; in the store, each chunk is written as soon as it is full.
    pub async fn write(&mut self, mut data: &[u8]) -> Result<(), StoreError> {
        self.bytes += data.len() as u64;
        match &mut self.into {
            Destination::Folder { out, .. } => {
                out.write_all(data).await.map_err(StoreError::Files)?;
            }
            Destination::Store { buffer, seq, .. } => {
                while !data.is_empty() {
                    let room = CHUNK_BYTES - buffer.len();
                    let (now, rest) = data.split_at(room.min(data.len()));
                    buffer.extend_from_slice(now);
                    data = rest;
                    if buffer.len() == CHUNK_BYTES {
                        let full = std::mem::replace(buffer, BytesMut::with_capacity(CHUNK_BYTES));
                        write_chunk(&self.store, &self.id, *seq, full).await?;
                        *seq += 1;
                    }
                }
            }
        }
        Ok(())
    }

    /// Keeps the complete upload as the tenant's file: from now on it is listed and readable.
    pub async fn keep(
        self,
        tenant: &str,
        filename: &str,
        purpose: &str,
    ) -> Result<FileRecord, StoreError> {
        let record = FileRecord {
            id: self.id,
            filename: filename.to_string(),
            purpose: purpose.to_string(),
            bytes: self.bytes,
            created_at: now_ms(),
        };
        match self.into {
            Destination::Folder {
                folder,
                temporary,
                mut out,
            } => {
                out.flush().await.map_err(StoreError::Files)?;
                out.sync_all().await.map_err(StoreError::Files)?;
                temporary
                    .persist(folder.join(&record.id))
                    .map_err(|e| StoreError::Files(e.error))?;
                // Recorded after the rename: a failure here leaves unrecorded bytes, never a
                // record without its bytes.
                let (tenant, row) = (tenant.to_string(), record.clone());
                self.store
                    .write_single(move |conn| {
                        Box::pin(async move { super::insert_file(conn, &tenant, &row).await })
                    })
                    .await?;
            }
            Destination::Store {
                buffer,
                seq,
                mut unkept,
            } => {
                if !buffer.is_empty() {
                    write_chunk(&self.store, &record.id, seq, buffer).await?;
                }
                if !chunks::keep(&self.store, tenant, &record).await? {
                    return Err(StoreError::UploadSwept(record.id));
                }
                unkept.store = None;
            }
        }
        Ok(record)
    }
}

async fn write_chunk(store: &Store, id: &str, seq: i64, chunk: BytesMut) -> Result<(), StoreError> {
    if chunks::write(store, id, seq, chunk.freeze()).await? {
        Ok(())
    } else {
        Err(StoreError::UploadSwept(id.to_string()))
    }
}

/// Removes an upload's chunks when it is dropped before being kept (`store` is taken once
/// it is kept).
struct Unkept {
    store: Option<Store>,
    id: String,
}

impl Drop for Unkept {
    fn drop(&mut self) {
        let Some(store) = self.store.take() else {
            return;
        };
        let id = std::mem::take(&mut self.id);
        // Dropped outside a runtime (the process is ending): the sweep removes them later.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(e) = chunks::abandon(&store, &id).await {
                    tracing::warn!(upload = %id, error = %e, "cannot remove an unfinished upload; the sweep will");
                }
            });
        }
    }
}
