//! `sluice bulk submit|status|results|cancel`: the options, and what each prints (the work
//! itself is the library's `sluice bulk` client).

use super::connect::ServerArgs;
use super::urgency;
use clap::{Args, Subcommand};
use sluice::job::Urgency;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Subcommand)]
pub enum BulkCommand {
    /// Check every line of a JSONL file, then submit it as a bulk and print the bulk id.
    ///
    /// A line is an OpenAI batch request ({"custom_id", "method", "url", "body"}), the short
    /// form {"custom_id", "body"}, or a bare chat body (custom_id "line-N" when it has none).
    /// Submitting again under the same name adds only the lines whose custom_id the bulk
    /// does not hold yet: the same file twice creates no duplicate jobs. A line whose
    /// custom_id the bulk holds with a different request is not submitted but listed as a
    /// conflict.
    Submit(BulkSubmitArgs),
    /// Show a bulk's jobs by status and its cost so far.
    Status {
        #[arg(value_name = "BULK")]
        /// The bulk: its id, its batch id (`batch_…`) or its name.
        id: String,
        /// Follow it with a progress bar until every job is final.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Write a bulk's results as JSONL in OpenAI's batch output format (finished jobs only).
    Results(BulkResultsArgs),
    /// Cancel every job of a bulk that is still queued.
    Cancel {
        /// The bulk: its id, its batch id (`batch_…`) or its name.
        #[arg(value_name = "BULK")]
        id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
}

#[derive(Args)]
pub struct BulkSubmitArgs {
    /// The JSONL file, or `-` for standard input.
    file: PathBuf,
    /// The bulk's name, unique per tenant (default: the file's name; required for stdin).
    #[arg(long)]
    name: Option<String>,
    /// The model (a route or deployment name) for lines whose request names none.
    #[arg(long)]
    model: Option<String>,
    /// How soon the answers are needed: realtime, standard, or batch (the cheapest: a
    /// provider's batch tier where the route has one).
    #[arg(long, default_value = "batch", value_parser = urgency())]
    urgency: Urgency,
    /// When the answers are needed: a time from now (`6h`) or an RFC 3339 time.
    #[arg(long, value_parser = parse_deadline)]
    deadline: Option<chrono::DateTime<chrono::Utc>>,
    /// A cost attribution tag, `user=…`, `team=…` or `feature=…` (repeatable).
    #[arg(long = "tag", value_parser = parse_tag)]
    tags: Vec<(String, String)>,
    /// Submit the valid lines and write the bad ones to the rejects file.
    #[arg(long)]
    skip_invalid: bool,
    /// Where --skip-invalid writes the bad lines (default: FILE.rejects.jsonl).
    #[arg(long)]
    rejects: Option<PathBuf>,
    /// Then wait for every job to finish (with a progress bar).
    #[arg(long)]
    wait: bool,
    /// With --wait: write the results here.
    #[arg(long, short, requires = "wait")]
    output: Option<PathBuf>,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Args)]
pub struct BulkResultsArgs {
    /// The bulk: its id, its batch id (`batch_…`) or its name.
    #[arg(value_name = "BULK")]
    id: String,
    /// Where to write them (default: standard output).
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// In input order (by line number); otherwise in no particular order (join on custom_id).
    #[arg(long)]
    ordered: bool,
    /// Failed and cancelled jobs only.
    #[arg(long)]
    errors: bool,
    /// Wait until every job is final first.
    #[arg(long)]
    wait: bool,
    #[command(flatten)]
    server: ServerArgs,
}

/// A `--deadline`: an RFC 3339 time, or a span from now.
fn parse_deadline(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    if let Ok(at) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&chrono::Utc));
    }
    let after = humantime::parse_duration(text).map_err(|_| {
        format!("\"{text}\" is neither a duration like 6h nor an RFC 3339 time like 2026-01-31T12:00:00Z")
    })?;
    Ok(chrono::Utc::now() + chrono::Duration::from_std(after).map_err(|e| e.to_string())?)
}

/// A `--tag`: `user=…`, `team=…` or `feature=…`.
fn parse_tag(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key @ ("user" | "team" | "feature"), value)) if !value.is_empty() => {
            Ok((key.to_string(), value.to_string()))
        }
        _ => Err(format!(
            "\"{text}\" is not a tag; write user=NAME, team=NAME or feature=NAME"
        )),
    }
}

/// `sluice bulk submit|status|results|cancel`.
pub async fn run(command: BulkCommand, config: Option<&Path>) -> anyhow::Result<()> {
    use sluice::client::bulk::{self, BulkCommandError};
    const WAIT_AT_MOST: Duration = Duration::from_secs(7 * 24 * 3600);
    const MAX_PRINTED_ERRORS: usize = 100;
    match command {
        BulkCommand::Submit(args) => {
            let client = args.server.client(config)?;
            let mut defaults = sluice::bulk::Defaults {
                model: args.model,
                urgency: args.urgency,
                deadline: args.deadline,
                ..Default::default()
            };
            for (key, value) in args.tags {
                let slot = match key.as_str() {
                    "user" => &mut defaults.tags.user,
                    "team" => &mut defaults.tags.team,
                    _ => &mut defaults.tags.feature,
                };
                *slot = Some(value);
            }
            let request = sluice::bulk::wire::BulkRequest {
                name: args.name,
                defaults,
                skip_invalid: args.skip_invalid,
            };
            let report = match bulk::submit(&client, &args.file, request, args.rejects, true).await
            {
                Err(BulkCommandError::Bulk(sluice::bulk::BulkError::Invalid {
                    lines,
                    invalid,
                    errors,
                })) => {
                    eprintln!(
                        "{}: {invalid} of {} {} invalid:",
                        args.file.display(),
                        bulk::count(lines, "line", "lines"),
                        if invalid == 1 { "is" } else { "are" }
                    );
                    bulk::print_lines(&errors, invalid, MAX_PRINTED_ERRORS, "bad lines");
                    anyhow::bail!("nothing was submitted; fix the lines above, or pass --skip-invalid to submit the valid ones and write the others to a rejects file");
                }
                Err(BulkCommandError::Client(sluice::client::ClientError::Api {
                    status: 400,
                    message,
                    error,
                })) if error["lines"].is_array() => {
                    let errors: Vec<sluice::bulk::LineError> =
                        serde_json::from_value(error["lines"].clone()).unwrap_or_default();
                    eprintln!("the server refused {}: {message}", args.file.display());
                    bulk::print_lines(
                        &errors,
                        error["invalid_lines"].as_u64().unwrap_or(0),
                        MAX_PRINTED_ERRORS,
                        "bad lines",
                    );
                    anyhow::bail!("nothing was submitted");
                }
                other => other?,
            };
            let s = &report.submission;
            if let Some(rejects) = &report.rejects {
                eprintln!(
                    "{} skipped, written to {}",
                    bulk::count(report.validation.invalid, "bad line", "bad lines"),
                    rejects.display()
                );
            }
            eprintln!(
                "bulk \"{}\": {} submitted, {} already in the bulk (same name and custom_id: not submitted again), {} (same custom_id, another request: not submitted)",
                s.name,
                bulk::count(s.submitted, "job", "jobs"),
                bulk::count(s.duplicates, "line", "lines"),
                bulk::count(s.conflicts, "conflicting line", "conflicting lines"),
            );
            if s.conflicts > 0 {
                eprintln!(
                    "{} NOT submitted: the bulk already holds their custom_id with a different request, and that job stands (give each a new custom_id, or submit under a new --name):",
                    bulk::count(s.conflicts, "line was", "lines were"),
                );
                bulk::print_lines(
                    &s.conflicting,
                    s.conflicts,
                    MAX_PRINTED_ERRORS,
                    "conflicting lines",
                );
            }
            outln!("{}", s.id);
            if args.wait {
                let status = bulk::wait(&client, s.id, WAIT_AT_MOST, true).await?;
                eprintln!("{}", bulk::describe_status(&status));
                if let Some(output) = &args.output {
                    let (lines, _) =
                        bulk::download_results(&client, s.id, Default::default(), Some(output))
                            .await?;
                    eprintln!(
                        "{} written to {}",
                        bulk::count(lines, "result", "results"),
                        output.display()
                    );
                }
            }
        }
        BulkCommand::Status { id, wait, server } => {
            let client = server.client(config)?;
            let status = if wait {
                bulk::wait(&client, &id, WAIT_AT_MOST, true).await?
            } else {
                client.bulk(&id).await?
            };
            eprintln!("{}", bulk::describe_status(&status));
            outln!("{}", serde_json::to_string_pretty(&status)?);
        }
        BulkCommand::Results(args) => {
            let client = args.server.client(config)?;
            if args.wait {
                bulk::wait(&client, &args.id, WAIT_AT_MOST, true).await?;
            }
            let query = sluice::bulk::wire::ResultsQuery {
                ordered: args.ordered,
                errors: args.errors,
            };
            let (lines, pending) =
                bulk::download_results(&client, &args.id, query, args.output.as_deref()).await?;
            if let Some(output) = &args.output {
                eprintln!(
                    "{} written to {}",
                    bulk::count(lines, "result", "results"),
                    output.display()
                );
            }
            if pending > 0 {
                eprintln!(
                    "{} not finished yet, so not in the results; run again later, or with --wait",
                    bulk::count(pending, "job is", "jobs are")
                );
            }
        }
        BulkCommand::Cancel { id, server } => {
            let answer = server.client(config)?.bulk_cancel(&id).await?;
            eprintln!(
                "bulk {id}: {} cancelled; running jobs finish",
                bulk::count(
                    answer["cancelled"].as_u64().unwrap_or(0),
                    "queued job",
                    "queued jobs"
                )
            );
            outln!("{}", serde_json::to_string_pretty(&answer)?);
        }
    }
    Ok(())
}
