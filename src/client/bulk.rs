//! The `sluice bulk` command's side, as library functions (the CLI prints what they return;
//! the tests call them directly).
//!
//! `submit` validates the file locally, against the server's model list, and reports every bad
//! line itself; with `--skip-invalid` it writes the bad lines to the rejects file. At the same
//! time it streams the file to `POST /v1/bulk` (which checks every line again: the server
//! decides) and follows the server's progress events; a bad line found locally cuts the upload
//! before the server has recorded anything. Standard input is copied to an anonymous temporary
//! file during the local pass, and uploaded from it afterwards.
//! Progress bars go to stderr, and only when it is a terminal.

use super::{Client, ClientError};
use crate::bulk::lines::LineReader;
use crate::bulk::submit::refuse_invalid;
use crate::bulk::validate::{confirm_duplicates, validate, Observer, Validation};
use crate::bulk::wire::{BulkRequest, ResultsQuery, Submission};
use crate::bulk::{BulkError, LineError, MAX_LINE_BYTES};
use crate::config::unknown_model_message;
use crate::job::{FieldError, JobSpec};
use futures::StreamExt;
use indicatif::{HumanCount, MultiProgress, ProgressBar, ProgressState, ProgressStyle};
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncSeekExt, AsyncWriteExt, BufReader, BufWriter};

/// Why a `sluice bulk` command failed: the file (unreadable, unwritable, bad lines) or the
/// server (unreachable, or refusing).
#[derive(Debug, thiserror::Error)]
pub enum BulkCommandError {
    #[error(transparent)]
    Bulk(#[from] BulkError),
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// What `sluice bulk submit` did.
#[derive(Debug, Clone)]
pub struct SubmitReport {
    pub submission: Submission,
    /// The local validation pass.
    pub validation: Validation,
    /// Where the rejected lines were written, if any were.
    pub rejects: Option<PathBuf>,
}

/// Validates `path` (`-` for standard input) locally, then submits it to the server.
/// `request.name` defaults to the file's name; standard input needs one. With
/// `request.skip_invalid`, bad lines go to `rejects` (default: `FILE.rejects.jsonl`).
pub async fn submit(
    client: &Client,
    path: &Path,
    mut request: BulkRequest,
    rejects: Option<PathBuf>,
    show_progress: bool,
) -> Result<SubmitReport, BulkCommandError> {
    let stdin = path.as_os_str() == "-";
    if request.name.is_none() {
        if stdin {
            return Err(BulkError::Usage(
                "reading from standard input: give the bulk a name with --name (submitting \
                 again under the same name is what makes a resubmission create no duplicates)"
                    .into(),
            )
            .into());
        }
        request.name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    }
    let shown = path.display().to_string();
    let names = client.models().await?;
    let known: Vec<&str> = names.iter().map(String::as_str).collect();
    let check = |spec: &JobSpec| -> Result<(), FieldError> {
        crate::submit::check_spec(spec, |model| {
            (!known.contains(&model)).then(|| unknown_model_message(model, &known))
        })
    };
    let rejects_path = request.skip_invalid.then(|| {
        rejects.unwrap_or_else(|| {
            if stdin {
                PathBuf::from("rejects.jsonl")
            } else {
                PathBuf::from(format!("{}.rejects.jsonl", path.display()))
            }
        })
    });
    let mut observer = LocalObserver {
        rejects: None,
        rejects_path: rejects_path.clone(),
        bar: bar(
            show_progress,
            "checking",
            if stdin { None } else { file_len(path) },
            Unit::Bytes,
        ),
    };

    // Pass 1, local: every line checked. A file is uploaded at the same time (the server checks
    // every line again and enqueues nothing unless its own pass is clean, so a bad line found
    // here drops the upload before anything is recorded); standard input is copied to a spool
    // during the check and uploaded from it afterwards.
    let read_error = |source| BulkError::Read {
        what: shown.clone(),
        source,
    };
    let local = async {
        let (mut found, spool) = if stdin {
            let spool = tokio::fs::File::from_std(tempfile::tempfile().map_err(|source| {
                BulkError::Write {
                    what: "a temporary copy of standard input".into(),
                    source,
                }
            })?);
            let mut reader = LineReader::new(
                BufReader::new(tokio::io::stdin()),
                MAX_LINE_BYTES,
                Some(BufWriter::new(spool)),
            );
            let found = validate(&mut reader, &request.defaults, &check, &mut observer)
                .await
                .map_err(read_error)?;
            let spool = reader.finish().await.map_err(read_error)?;
            (found, spool.map(BufWriter::into_inner))
        } else {
            let file = open(path).await.map_err(read_error)?;
            let found = validate(
                &mut crate::bulk::validate::reader(BufReader::new(file)),
                &request.defaults,
                &check,
                &mut observer,
            )
            .await
            .map_err(read_error)?;
            (found, None)
        };
        if !found.suspects.is_empty() {
            let mut file = match &spool {
                Some(spool) => spool.try_clone().await.map_err(read_error)?,
                None => open(path).await.map_err(read_error)?,
            };
            file.seek(std::io::SeekFrom::Start(0))
                .await
                .map_err(read_error)?;
            confirm_duplicates(
                &mut crate::bulk::validate::reader(BufReader::new(&mut file)),
                &mut found,
                &request.defaults,
                &check,
                &mut observer,
            )
            .await
            .map_err(read_error)?;
        }
        observer.bar.finish_and_clear();
        if let Some(mut rejects) = observer.rejects.take() {
            rejects.flush().map_err(|source| BulkError::Write {
                what: rejects_path
                    .clone()
                    .unwrap_or_default()
                    .display()
                    .to_string(),
                source,
            })?;
        }
        refuse_invalid(&found, request.skip_invalid, &shown)?;
        Ok::<_, BulkCommandError>((found, spool))
    };

    let (validation, submission) = if stdin {
        let (found, spool) = local.await?;
        let spool = spool.expect("standard input is spooled");
        (
            found,
            upload(client, &request, spool, &shown, show_progress).await?,
        )
    } else {
        let file = open(path).await.map_err(read_error)?;
        let local = async { local.await.map(|(found, _)| found) };
        check_while_uploading(local, upload(client, &request, file, &shown, show_progress)).await?
    };
    Ok(SubmitReport {
        submission,
        rejects: rejects_path.filter(|_| validation.invalid > 0),
        validation,
    })
}

/// Runs the local check of a file and its upload side by side. A failed check drops the
/// upload, which cuts the request: the server, which enqueues only after reading the whole
/// file, records nothing. A finished upload still waits for the check, whose report (every bad
/// line, the rejects file) is what the user reads; the server runs the same checks, so it
/// never accepts a file the local check refuses.
async fn check_while_uploading(
    check: impl std::future::Future<Output = Result<Validation, BulkCommandError>>,
    upload: impl std::future::Future<Output = Result<Submission, BulkCommandError>>,
) -> Result<(Validation, Submission), BulkCommandError> {
    use futures::future::{select, Either};
    futures::pin_mut!(check, upload);
    match select(check, upload).await {
        Either::Left((checked, upload)) => {
            let found = checked?;
            Ok((found, upload.await?))
        }
        Either::Right((uploaded, check)) => {
            let found = check.await?;
            Ok((found, uploaded?))
        }
    }
}

/// Streams `file` to `POST /v1/bulk` (the server skips the same bad lines, keeping line
/// numbers) and follows the server's progress events.
async fn upload(
    client: &Client,
    request: &BulkRequest,
    mut file: tokio::fs::File,
    shown: &str,
    show_progress: bool,
) -> Result<Submission, BulkCommandError> {
    let read_error = |source| BulkError::Read {
        what: shown.to_string(),
        source,
    };
    let size = file
        .seek(std::io::SeekFrom::End(0))
        .await
        .map_err(read_error)?;
    file.seek(std::io::SeekFrom::Start(0))
        .await
        .map_err(read_error)?;
    let upload = bar(show_progress, "uploading", Some(size), Unit::Bytes);
    let counter = upload.clone();
    // Chunks small enough for the bar to move on a file of a few hundred KiB.
    let body = tokio_util::io::ReaderStream::with_capacity(file, 32 << 10).inspect(move |chunk| {
        if let Ok(chunk) = chunk {
            counter.inc(chunk.len() as u64);
        }
    });
    // The publishing bar appears with the server's first progress event, when the upload's
    // bar goes.
    let mut publish: Option<ProgressBar> = None;
    let submission = client
        .bulk_submit(
            request,
            reqwest::Body::wrap_stream(body),
            &mut |done, total| {
                let publish = publish.get_or_insert_with(|| {
                    upload.finish_and_clear();
                    bar(show_progress, "publishing", None, Unit::Jobs)
                });
                publish.set_length(total);
                publish.set_position(done);
            },
        )
        .await;
    if let Some(publish) = publish {
        publish.finish_and_clear();
    }
    Ok(submission?)
}

/// Writes the rejected lines and moves the progress bar during the local pass.
struct LocalObserver {
    rejects: Option<std::io::BufWriter<std::fs::File>>,
    rejects_path: Option<PathBuf>,
    bar: ProgressBar,
}

impl Observer for LocalObserver {
    fn rejected(&mut self, error: &LineError, text: &[u8]) -> std::io::Result<()> {
        let Some(path) = &self.rejects_path else {
            return Ok(());
        };
        if self.rejects.is_none() {
            let file = std::fs::File::create(path).map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot create {}: {e}", path.display()))
            })?;
            self.rejects = Some(std::io::BufWriter::new(file));
        }
        let line = json!({
            "line": error.line,
            "field": error.field,
            "message": error.message,
            "input": String::from_utf8_lossy(text),
        });
        let rejects = self.rejects.as_mut().expect("just opened");
        serde_json::to_writer(&mut *rejects, &line)?;
        rejects.write_all(b"\n")
    }

    fn progress(&mut self, _lines: u64, bytes: u64) {
        self.bar.set_position(bytes);
    }
}

/// Polls the bulk until every job is final (or `timeout` passes), with a progress bar of done
/// jobs, their rate and the time left. Returns the last status.
pub async fn wait(
    client: &Client,
    id: impl std::fmt::Display,
    timeout: Duration,
    show_progress: bool,
) -> Result<Value, BulkCommandError> {
    let give_up = tokio::time::Instant::now() + timeout;
    let progress = bar(show_progress, "jobs done", None, Unit::Jobs);
    loop {
        let status = client.bulk(&id).await?;
        progress.set_length(status["total"].as_u64().unwrap_or(0));
        progress.set_position(status["done"].as_u64().unwrap_or(0));
        let finished = matches!(status["status"].as_str(), Some("completed" | "cancelled"));
        if finished || tokio::time::Instant::now() >= give_up {
            progress.finish_and_clear();
            return Ok(status);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Streams the bulk's results to `out` (standard output when `None`). Returns how many lines
/// were written and how many jobs were not finished yet (left out).
pub async fn download_results(
    client: &Client,
    id: impl std::fmt::Display,
    query: ResultsQuery,
    out: Option<&Path>,
) -> Result<(u64, u64), BulkCommandError> {
    let (response, pending) = client.bulk_results(id, query).await?;
    let what = out.map_or("standard output".to_string(), |p| p.display().to_string());
    let write_error = |source| BulkError::Write {
        what: what.clone(),
        source,
    };
    let mut sink: Box<dyn tokio::io::AsyncWrite + Unpin + Send> = match out {
        Some(path) => Box::new(BufWriter::new(
            tokio::fs::File::create(path).await.map_err(write_error)?,
        )),
        None => Box::new(BufWriter::new(tokio::io::stdout())),
    };
    let mut lines = 0u64;
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| ClientError::Stream(e.to_string()))?;
        lines += chunk.iter().filter(|&&b| b == b'\n').count() as u64;
        sink.write_all(&chunk).await.map_err(write_error)?;
    }
    sink.flush().await.map_err(write_error)?;
    Ok((lines, pending))
}

/// A one-line summary of a bulk's status for people.
pub fn describe_status(status: &Value) -> String {
    let c = &status["counts"];
    format!(
        "bulk {} \"{}\": {} — {} of {} done (succeeded {}, failed {}, cancelled {}; queued {}, running {}); cost so far {}",
        status["id"].as_str().unwrap_or_default(),
        status["name"].as_str().unwrap_or_default(),
        status["status"].as_str().unwrap_or_default(),
        status["done"],
        status["total"],
        c["succeeded"],
        c["failed"],
        c["cancelled"],
        c["queued"],
        c["running"],
        status["cost"]["amount_usd"]
            .as_str()
            .and_then(|usd| crate::pricing::PicoUsd::parse_usd(usd).ok())
            .unwrap_or_default()
            .for_people(),
    )
}

async fn open(path: &Path) -> std::io::Result<tokio::fs::File> {
    tokio::fs::File::open(path).await
}

fn file_len(path: &Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.len())
}

/// Every bar of the command, drawn together on stderr: a file's local check and its upload
/// run at the same time, and two bars drawn alone would overwrite each other's line.
static BARS: std::sync::LazyLock<MultiProgress> = std::sync::LazyLock::new(MultiProgress::new);

/// What a bar counts.
#[derive(Clone, Copy)]
enum Unit {
    Bytes,
    Jobs,
}

/// A progress bar on stderr (hidden when not wanted; indicatif also hides it when stderr is
/// not a terminal): position, length, rate and time left, in `unit` from its first drawing.
fn bar(show: bool, what: &str, length: Option<u64>, unit: Unit) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = match length {
        Some(len) => ProgressBar::new(len),
        None => ProgressBar::no_length(),
    };
    let template = match unit {
        Unit::Bytes => "{msg:>10} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
        Unit::Jobs => "{msg:>10} [{bar:40}] {human_pos}/{human_len} {rate} ETA {eta}",
    };
    bar.set_style(
        ProgressStyle::with_template(template)
            .expect("a valid template")
            // A rate in whole jobs a second: "2,237,932/s", not "2,237,932.5944/s".
            .with_key(
                "rate",
                |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = write!(w, "{}/s", HumanCount(state.per_sec().round() as u64));
                },
            )
            .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    let bar = BARS.add(bar);
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// `1 line`, `2 lines`: a count with its noun.
pub fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Prints listed lines to stderr (a refused file's bad lines, a submission's conflicting
/// ones), at most `max`, then how many more of the `total` there are, called `what`.
pub fn print_lines(errors: &[LineError], total: u64, max: usize, what: &str) {
    for error in errors.iter().take(max) {
        eprintln!("  {error}");
    }
    let listed = errors.len().min(max) as u64;
    if total > listed {
        eprintln!("  … and {} more {what}", total - listed);
    }
}
