//! `/v1/files`: OpenAI's Files API, as far as batches need it: upload a batch input file,
//! read its file object and its content.
//!
//! - `POST /v1/files` (multipart: `purpose=batch`, `file`): the file part is streamed where the
//!   store keeps files' bytes (a folder, or the store itself in 1 MiB chunks; never held whole
//!   in memory), cut off with a 413 past [`MAX_FILE_BYTES`] (OpenAI's batch input limit); it
//!   is a file only once it arrived whole. See [`crate::store::files`].
//! - `GET /v1/files/{id}` and `GET /v1/files/{id}/content` (streamed back the same way).
//! - `GET /v1/files?purpose=&limit=&after=&order=`: OpenAI's cursor page of the tenant's
//!   uploads (`limit` 1 to 10,000, default 10,000; `order` `desc`, the default, or `asc`;
//!   `after` a file id). Output and error files are not listed: they are views of batches,
//!   reached from the batch object.
//! - `DELETE /v1/files/{id}`: removes an upload's record and bytes. The input file of a batch
//!   whose submission has not finished is refused with a 409 (`code: "file_in_use"`, naming
//!   the batch): a server that crashed mid-submission resumes from that file (see
//!   [`super::batches`]). Once the batch is `in_progress` with all its lines submitted (or
//!   failed, or cancelled) the file may go; its jobs carry their own requests. Output and
//!   error files cannot be deleted (a 400): they are not stored, and they stay as long as the
//!   batch's jobs do.
//!
//! A batch's output and error files are not stored copies: their ids
//! (`file-output-<batch hex>`, `file-errors-<batch hex>`) name the batch, and their content is
//! streamed from its jobs on demand (succeeded jobs, and failed or cancelled ones, as OpenAI
//! batch output lines), so they cost no disk and cannot disagree with the jobs. They exist
//! once the batch is final, as on OpenAI; before that they are a 404. Their file object's
//! `bytes` is counted by streaming the content once.
//!
//! Every file belongs to the tenant that uploaded it (or owns the batch); another tenant's
//! id is a 404.

use super::auth::Tenant;
use super::batches::{batch_view, BatchView};
use super::error::ApiError;
use super::ApiState;
use crate::store::files::{ABANDONED_AFTER, FILE_ID_PREFIX};
use crate::store::{DeleteOutcome, FileQuery, FileRecord, ResultsFilter, StoreError};
use axum::body::Body;
use axum::extract::{Multipart, Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

/// The largest upload: OpenAI's limit on a batch input file (200 MB).
pub const MAX_FILE_BYTES: u64 = 200 * 1024 * 1024;

/// The only purpose Sluice stores files for.
pub const PURPOSE_BATCH: &str = "batch";

const OUTPUT_PREFIX: &str = "file-output-";
const ERRORS_PREFIX: &str = "file-errors-";

/// The id of a batch's output file (its succeeded jobs).
pub fn output_file_id(bulk: Uuid) -> String {
    format!("{OUTPUT_PREFIX}{}", bulk.simple())
}

/// The id of a batch's error file (its failed and cancelled jobs).
pub fn error_file_id(bulk: Uuid) -> String {
    format!("{ERRORS_PREFIX}{}", bulk.simple())
}

/// `POST /v1/files`.
pub async fn upload(
    State(state): State<ApiState>,
    Tenant(tenant): Tenant,
    mut form: Multipart,
) -> Result<Json<Value>, ApiError> {
    let mut purpose = None;
    let mut file = None;
    while let Some(mut field) = form.next_field().await.map_err(multipart_error)? {
        match field.name() {
            Some("purpose") => {
                purpose = Some(field.text().await.map_err(multipart_error)?);
            }
            Some("file") => {
                let filename = field.file_name().unwrap_or("upload.jsonl").to_string();
                // Dropped unkept (an error below, or the client gone and this handler with
                // it), an upload removes what it wrote.
                let mut upload = state.store.new_upload().await.map_err(upload_error)?;
                while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
                    if upload.bytes() + chunk.len() as u64 > MAX_FILE_BYTES {
                        return Err(ApiError::new(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            "invalid_request",
                            format!(
                                "file: the file is over {} MB, the largest batch input file; \
                                 split it into several batches",
                                MAX_FILE_BYTES >> 20
                            ),
                        ));
                    }
                    upload.write(&chunk).await.map_err(upload_error)?;
                }
                file = Some((upload, filename));
            }
            // Fields OpenAI added later (e.g. expires_after) do not change what is stored.
            _ => {}
        }
    }
    let purpose = purpose.ok_or_else(|| {
        ApiError::invalid("purpose", "missing; send the form field purpose=batch")
    })?;
    if purpose != PURPOSE_BATCH {
        return Err(ApiError::invalid(
            "purpose",
            format!(
                "\"{purpose}\" is not supported; Sluice stores files for purpose \"batch\" only"
            ),
        ));
    }
    let (upload, filename) = file.ok_or_else(|| {
        ApiError::invalid(
            "file",
            "missing; send the JSONL file as the form field \"file\"",
        )
    })?;
    let record = upload
        .keep(&tenant, &filename, &purpose)
        .await
        .map_err(upload_error)?;
    Ok(Json(file_object(&record)))
}

/// Removes what unfinished uploads left (see [`crate::store::Store::sweep_abandoned_uploads`]):
/// now, then every hour, for as long as it runs. `App::serve` runs it beside the API, so every
/// API process sweeps the store it shares with the others.
pub async fn sweep_abandoned_uploads(store: crate::store::Store) -> std::convert::Infallible {
    let mut every = tokio::time::interval(SWEEP_EVERY);
    loop {
        every.tick().await;
        match store.sweep_abandoned_uploads(ABANDONED_AFTER).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(uploads = n, "removed unfinished uploads"),
            Err(e) => {
                tracing::warn!(error = %e, "cannot remove unfinished uploads; trying again later")
            }
        }
    }
}

/// How often [`sweep_abandoned_uploads`] looks.
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// `GET /v1/files/{id}`.
pub async fn get(
    State(state): State<ApiState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(match find(&state, &tenant, &id).await? {
        Found::Upload(record) => file_object(&record),
        Found::Results { batch, filter } => {
            // A view has no stored size: count the bytes of its content.
            let mut body = super::bulk::results_stream(&state, batch.bulk.id, filter);
            let mut bytes = 0u64;
            while let Some(chunk) = body.next().await {
                bytes += chunk?.len() as u64;
            }
            let finished = batch
                .finished_at()
                .unwrap_or(batch.bulk.created_at.timestamp());
            json!({
                "id": id,
                "object": "file",
                "bytes": bytes,
                "created_at": finished,
                "filename": format!("{}_{}.jsonl", batch.id(), if filter.errors_only { "error" } else { "output" }),
                "purpose": "batch_output",
                "status": "processed",
            })
        }
    }))
}

/// `GET /v1/files/{id}/content`: the bytes as uploaded, or a batch's results as JSONL.
pub async fn content(
    State(state): State<ApiState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    match find(&state, &tenant, &id).await? {
        Found::Upload(record) => Ok((
            [(header::CONTENT_TYPE, "application/octet-stream")],
            Body::from_stream(state.store.file_content(&record)),
        )
            .into_response()),
        Found::Results { batch, filter } => Ok((
            [(header::CONTENT_TYPE, crate::bulk::wire::NDJSON)],
            Body::from_stream(super::bulk::results_stream(&state, batch.bulk.id, filter)),
        )
            .into_response()),
    }
}

/// The query of `GET /v1/files`.
#[derive(Debug, Deserialize)]
pub struct ListParams {
    purpose: Option<String>,
    limit: Option<u32>,
    after: Option<String>,
    order: Option<String>,
}

/// OpenAI's largest (and default) page of files.
const MAX_LIST: u32 = 10_000;

/// `GET /v1/files`: the tenant's uploads, newest first unless `order=asc`.
pub async fn list(
    State(state): State<ApiState>,
    Tenant(tenant): Tenant,
    Query(params): Query<ListParams>,
) -> Result<Json<Value>, ApiError> {
    let limit = params.limit.unwrap_or(MAX_LIST);
    if !(1..=MAX_LIST).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be from 1 to 10000"));
    }
    let ascending = match params.order.as_deref() {
        None | Some("desc") => false,
        Some("asc") => true,
        Some(other) => {
            return Err(ApiError::invalid(
                "order",
                format!("\"{other}\" is not an order; use \"asc\" or \"desc\""),
            ))
        }
    };
    if let Some(after) = &params.after {
        let is_upload_id = after
            .strip_prefix(FILE_ID_PREFIX)
            .is_some_and(|hex| Uuid::try_parse(hex).is_ok());
        if !is_upload_id {
            return Err(ApiError::invalid(
                "after",
                format!("\"{after}\" is not the id of an uploaded file"),
            ));
        }
    }
    let query = FileQuery {
        purpose: params.purpose,
        after: params.after,
        ascending,
        limit: limit + 1,
    };
    let mut files = state.store.files(&tenant, &query).await?;
    let has_more = files.len() > limit as usize;
    files.truncate(limit as usize);
    Ok(Json(super::cursor_page(
        files.iter().map(file_object).collect(),
        has_more,
    )))
}

/// `DELETE /v1/files/{id}`.
pub async fn delete(
    State(state): State<ApiState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if !id.starts_with(FILE_ID_PREFIX) {
        return Err(ApiError::not_found(format!("no file {id}")));
    }
    if id.starts_with(OUTPUT_PREFIX) || id.starts_with(ERRORS_PREFIX) {
        // Answered for the tenant's own batch files only; another's stay a 404.
        find(&state, &tenant, &id).await?;
        return Err(ApiError::invalid(
            "",
            format!(
                "file {id} is a batch's output or error file: a view of the batch's jobs, not \
                 stored, so it cannot be deleted"
            ),
        ));
    }
    match state.store.delete_file(&tenant, &id).await? {
        DeleteOutcome::Deleted => Ok(Json(json!({ "id": id, "object": "file", "deleted": true }))),
        DeleteOutcome::NotFound => Err(ApiError::not_found(format!("no file {id}"))),
        DeleteOutcome::InUse(batch) => {
            let batch = super::batches::batch_id(batch);
            Err(ApiError::new(
                StatusCode::CONFLICT,
                "invalid_request",
                format!(
                    "file {id} is the input file of batch {batch}, whose requests are still \
                     being submitted; delete it once the batch is in progress with every \
                     request submitted, or cancel the batch"
                ),
            )
            .with("code", json!("file_in_use"))
            .with("batch_id", json!(batch)))
        }
    }
}

enum Found {
    Upload(FileRecord),
    /// A final batch's output or error file.
    Results {
        batch: Box<BatchView>,
        filter: ResultsFilter,
    },
}

/// The tenant's file `id`: an upload, or a final batch's output or error file.
async fn find(state: &ApiState, tenant: &str, id: &str) -> Result<Found, ApiError> {
    let not_found = || ApiError::not_found(format!("no file {id}"));
    let view = |prefix: &str| {
        id.strip_prefix(prefix)
            .and_then(|hex| Uuid::try_parse(hex).ok())
    };
    let (bulk, filter) = if let Some(bulk) = view(OUTPUT_PREFIX) {
        let filter = ResultsFilter {
            ordered: true,
            successes_only: true,
            ..ResultsFilter::default()
        };
        (bulk, filter)
    } else if let Some(bulk) = view(ERRORS_PREFIX) {
        let filter = ResultsFilter {
            ordered: true,
            errors_only: true,
            ..ResultsFilter::default()
        };
        (bulk, filter)
    } else if id.starts_with(FILE_ID_PREFIX) {
        return state
            .store
            .file(tenant, id)
            .await?
            .map(Found::Upload)
            .ok_or_else(not_found);
    } else {
        return Err(not_found());
    };
    let batch = batch_view(state, tenant, bulk)
        .await?
        .ok_or_else(not_found)?;
    // Only ids the batch object hands out exist.
    let listed = if filter.errors_only {
        batch.error_file_id()
    } else {
        batch.output_file_id()
    };
    if listed.as_deref() != Some(id) {
        return Err(not_found());
    }
    Ok(Found::Results {
        batch: Box::new(batch),
        filter,
    })
}

/// OpenAI's file object.
fn file_object(record: &FileRecord) -> Value {
    json!({
        "id": record.id,
        "object": "file",
        "bytes": record.bytes,
        "created_at": record.created_at / 1000,
        "filename": record.filename,
        "purpose": record.purpose,
        "status": "processed",
        "expires_at": null,
    })
}

/// A store error while an upload is written: an upload idle so long that it was swept is the
/// client's to send again (a 408); anything else as any store error.
fn upload_error(e: StoreError) -> ApiError {
    match e {
        StoreError::UploadSwept(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "invalid_request",
            e.to_string(),
        ),
        e => e.into(),
    }
}

fn multipart_error(e: axum::extract::multipart::MultipartError) -> ApiError {
    ApiError::new(
        e.status(),
        "invalid_request",
        format!(
            "the body is not a readable multipart form (fields purpose and file): {}",
            e.body_text()
        ),
    )
}
