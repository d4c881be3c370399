//! The server's side of a bulk submission (`POST /v1/bulk`): the uploaded body is validated
//! as it streams in and copied to an anonymous temporary file (the spool); if every line is
//! good (or bad lines are to be skipped) the spool is read again and its jobs are submitted in
//! chunks through [`Submitter::submit_to_bulk`], several chunks in flight at once.
//!
//! Memory stays flat whatever the size of the body: one line at a time, a few chunks of jobs,
//! and 8 bytes per line for the duplicate check.
//!
//! The spool is a local temporary file, also when the store is shared by processes on many
//! machines: it is written and read back within one request (or one batch's submission task),
//! by the one process that holds it, and gone when that ends. What another process may read
//! later (a batch's input file) is kept by the store instead ([`crate::store::files`]).

use super::lines::{is_blank, Line, LineReader};
use super::validate::{confirm_duplicates, job_of_line, validate, Validation};
use super::wire::{BulkRequest, Submission};
use super::{BulkError, Defaults, LineError, MAX_LINE_BYTES, MAX_LISTED_ERRORS};
use crate::job::{FieldError, JobSpec};
use crate::store::StoreError;
use crate::submit::{SubmitError, Submitted, Submitter};
use futures::stream::FuturesOrdered;
use futures::StreamExt;
use std::io::SeekFrom;
use tokio::io::{AsyncBufRead, AsyncSeekExt, BufReader, BufWriter};
use uuid::Uuid;

/// Jobs recorded and published together.
const CHUNK: usize = 500;
/// Chunks in flight at once: one being recorded while others wait for publisher confirms.
const IN_FLIGHT: usize = 4;

/// The checks a server makes of every line: a single job's.
fn checker(submitter: &Submitter) -> impl Fn(&JobSpec) -> Result<(), FieldError> + '_ {
    move |spec| submitter.check(spec)
}

/// Validates `body` (spooling it), then submits it as (part of) the tenant's bulk.
/// `progress(done, total)` is called as chunks are confirmed.
pub async fn submit_body<R: AsyncBufRead + Unpin>(
    submitter: &Submitter,
    tenant: &str,
    body: R,
    request: &BulkRequest,
    progress: &mut (dyn FnMut(u64, u64) + Send),
) -> Result<Submission, BulkError> {
    prepare(submitter, tenant, body, request)
        .await?
        .submit(submitter, tenant, progress)
        .await
}

/// A body that passed validation, spooled, with its bulk opened: ready for the second pass.
pub struct Prepared {
    spool: tokio::fs::File,
    found: Validation,
    request: BulkRequest,
    name: String,
    opened: crate::store::OpenedBulk,
}

/// The first pass of [`submit_body`]: validates and spools `body`, then opens the bulk.
pub async fn prepare<R: AsyncBufRead + Unpin>(
    submitter: &Submitter,
    tenant: &str,
    body: R,
    request: &BulkRequest,
) -> Result<Prepared, BulkError> {
    let spool_error = |source| BulkError::Write {
        what: "the spool file for the upload".into(),
        source,
    };
    let spool = tokio::fs::File::from_std(tempfile::tempfile().map_err(spool_error)?);
    let check = checker(submitter);
    let mut reader = LineReader::new(body, MAX_LINE_BYTES, Some(BufWriter::new(spool)));
    let mut found = validate(&mut reader, &request.defaults, &check, &mut ())
        .await
        .map_err(|source| BulkError::Read {
            what: "the request body".into(),
            source,
        })?;
    let spool = reader
        .finish()
        .await
        .map_err(spool_error)?
        .expect("the reader was given the spool")
        .into_inner();
    let mut spool = rewind(spool).await?;
    confirm_duplicates(
        &mut spool_reader(&mut spool),
        &mut found,
        &request.defaults,
        &check,
        &mut (),
    )
    .await
    .map_err(spool_read_error)?;
    submitter
        .metrics
        .bulk_lines(tenant, found.valid, found.invalid);
    refuse_invalid(&found, request.skip_invalid, "the request body")?;

    let name = request
        .name
        .clone()
        .unwrap_or_else(|| format!("bulk-{}", Uuid::now_v7()));
    let opened = submitter.store.open_bulk(tenant, &name).await?;
    if opened.cancelled {
        return Err(BulkError::Cancelled(opened.id));
    }
    Ok(Prepared {
        spool,
        found,
        request: request.clone(),
        name,
        opened,
    })
}

impl Prepared {
    /// The bulk being submitted to.
    pub fn bulk_id(&self) -> Uuid {
        self.opened.id
    }

    /// Valid lines, to be submitted.
    pub fn valid_lines(&self) -> u64 {
        self.found.valid
    }

    /// The second pass of [`submit_body`]: submits the valid lines in chunks.
    pub async fn submit(
        self,
        submitter: &Submitter,
        tenant: &str,
        progress: &mut (dyn FnMut(u64, u64) + Send),
    ) -> Result<Submission, BulkError> {
        let Prepared {
            spool,
            found,
            request,
            name,
            opened,
        } = self;
        let spool = rewind(spool).await?;
        let tally = submit_lines(
            submitter,
            tenant,
            opened.id,
            &mut spool_reader(spool),
            &request.defaults,
            found.valid,
            progress,
        )
        .await?;
        submitter.store.finish_bulk_submission(opened.id).await?;
        Ok(Submission {
            id: opened.id,
            name,
            created: opened.created,
            lines: found.lines,
            submitted: tally.submitted,
            duplicates: tally.duplicates,
            conflicts: tally.conflicts,
            conflicting: tally.conflicting,
            rejected: found.invalid,
            rejections: found.errors,
        })
    }
}

/// The error for a file with bad lines, unless they are to be skipped; also refuses a file
/// with no line at all.
pub fn refuse_invalid(found: &Validation, skip_invalid: bool, what: &str) -> Result<(), BulkError> {
    if found.invalid > 0 && !skip_invalid {
        return Err(BulkError::Invalid {
            lines: found.lines,
            invalid: found.invalid,
            errors: found.errors.clone(),
        });
    }
    if found.lines == 0 {
        return Err(BulkError::Empty(what.to_string()));
    }
    Ok(())
}

/// What the second pass did with the valid lines.
#[derive(Debug, Default)]
struct Tally {
    submitted: u64,
    duplicates: u64,
    conflicts: u64,
    conflicting: Vec<LineError>,
}

impl Tally {
    /// Counts a chunk's answers; `lines` are its lines' numbers and `custom_id`s, in order.
    fn count(&mut self, lines: &[(u64, Option<String>)], answers: &[Submitted]) {
        for ((line, custom_id), answer) in lines.iter().zip(answers) {
            if answer.conflict {
                self.conflicts += 1;
                if self.conflicting.len() < MAX_LISTED_ERRORS {
                    self.conflicting.push(conflict(*line, custom_id, answer.id));
                }
            } else if answer.duplicate {
                self.duplicates += 1;
            } else {
                self.submitted += 1;
            }
        }
    }

    /// Lines answered so far.
    fn done(&self) -> u64 {
        self.submitted + self.duplicates + self.conflicts
    }
}

/// The report of a line whose `custom_id` the bulk holds for another request, saying what to
/// do: resubmitting the same line under the same name can never change that job.
fn conflict(line: u64, custom_id: &Option<String>, existing: Uuid) -> LineError {
    LineError {
        line,
        field: "custom_id".into(),
        message: format!(
            "custom_id \"{}\" already names job {existing} of this bulk, whose request is \
             different; this line was not submitted and that job stands (give the line a new \
             custom_id, or submit the file under a new bulk name)",
            custom_id.as_deref().unwrap_or_default()
        ),
    }
}

/// The second pass: reads the validated lines again and submits the valid ones in chunks.
/// Returns how many jobs were created, how many lines the bulk already held and which of
/// those held a different request.
async fn submit_lines<R: AsyncBufRead + Unpin>(
    submitter: &Submitter,
    tenant: &str,
    bulk: Uuid,
    reader: &mut LineReader<R, tokio::io::Sink>,
    defaults: &Defaults,
    total: u64,
    progress: &mut (dyn FnMut(u64, u64) + Send),
) -> Result<Tally, BulkError> {
    let check = checker(submitter);
    let mut tally = Tally::default();
    let mut in_flight = FuturesOrdered::new();
    let mut chunk = Vec::with_capacity(CHUNK);
    let mut end = false;
    while !end || !chunk.is_empty() || !in_flight.is_empty() {
        if !end && chunk.len() < CHUNK {
            match reader.next_line().await.map_err(spool_read_error)? {
                None => end = true,
                Some((number, Line::Text(text))) if !is_blank(text) => {
                    // Lines that failed validation fail again here and are skipped (only
                    // with `skip_invalid` does this pass run when there are any).
                    if let Ok(spec) = job_of_line(number, text, defaults, &check) {
                        chunk.push((number, spec));
                    }
                }
                Some(_) => {}
            }
            if !end && chunk.len() < CHUNK {
                continue;
            }
        }
        if !chunk.is_empty() && in_flight.len() < IN_FLIGHT {
            let lines = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK));
            // Kept to name a conflicting line in the report; the specs go to the store.
            let named: Vec<(u64, Option<String>)> = lines
                .iter()
                .map(|(number, spec)| (*number, spec.custom_id.clone()))
                .collect();
            in_flight.push_back(async move {
                let answers = submitter.submit_to_bulk(tenant, bulk, lines).await;
                (named, answers)
            });
            continue;
        }
        if let Some((named, answers)) = in_flight.next().await {
            // A cancel stops the submission: the store refuses the bulk's next chunk in the
            // transaction that would have recorded it.
            let answers = answers.map_err(|source| match source {
                SubmitError::Store(StoreError::BulkCancelled(id)) => BulkError::Cancelled(id),
                source => BulkError::Interrupted {
                    submitted: tally.submitted,
                    source,
                },
            })?;
            tally.count(&named, &answers);
            progress(tally.done(), total);
        }
    }
    Ok(tally)
}

async fn rewind(mut file: tokio::fs::File) -> Result<tokio::fs::File, BulkError> {
    file.seek(SeekFrom::Start(0))
        .await
        .map_err(spool_read_error)?;
    Ok(file)
}

fn spool_reader<R: tokio::io::AsyncRead + Unpin>(
    file: R,
) -> LineReader<BufReader<R>, tokio::io::Sink> {
    LineReader::new(
        BufReader::with_capacity(256 << 10, file),
        MAX_LINE_BYTES,
        None,
    )
}

fn spool_read_error(source: std::io::Error) -> BulkError {
    BulkError::Read {
        what: "the spool file of the upload".into(),
        source,
    }
}
