//! The validation pass: every line of a file checked, every bad line reported, in constant
//! memory but for 8 bytes per line to find repeated `custom_id`s.
//!
//! A repeated `custom_id` is first noticed by its 64-bit hash repeating; since two different
//! ids can share a hash, [`confirm_duplicates`] then reads the file once more, keeping only
//! the ids whose hash repeated, and reports the real repeats. A file without repeats is read
//! once.

use super::lines::{is_blank, locate, parse_line, too_long, Line, LineReader};
use super::{Defaults, LineError, MAX_LINE_BYTES, MAX_LISTED_ERRORS};
use crate::job::{FieldError, JobSpec};
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use tokio::io::{AsyncBufRead, AsyncWrite};

/// What a validation pass found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Validation {
    /// Lines holding something (blank lines are skipped).
    pub lines: u64,
    pub valid: u64,
    pub invalid: u64,
    /// The first [`MAX_LISTED_ERRORS`] bad lines, in line order.
    pub errors: Vec<LineError>,
    /// Hashes of `custom_id`s seen more than once, to confirm with [`confirm_duplicates`].
    #[serde(skip)]
    pub suspects: HashSet<u64>,
}

/// Told about what a pass finds, as it finds it.
pub trait Observer {
    /// A bad line: the error and the line's text (truncated when the line was too long).
    fn rejected(&mut self, _error: &LineError, _text: &[u8]) -> std::io::Result<()> {
        Ok(())
    }
    /// Called every few hundred lines with the lines and bytes read so far.
    fn progress(&mut self, _lines: u64, _bytes: u64) {}
}

impl Observer for () {}

/// The checks a line's job must pass besides its form (see [`crate::submit::check_spec`]).
pub type Check<'a> = dyn Fn(&JobSpec) -> Result<(), FieldError> + Sync + 'a;

/// How often [`Observer::progress`] is called, in lines.
const PROGRESS_EVERY: u64 = 64;

/// A line's job if it is valid: parsed from its form, then checked by `check` (the same
/// checks as a single job: see [`crate::submit::check_spec`]).
pub fn job_of_line(
    number: u64,
    text: &[u8],
    defaults: &Defaults,
    check: &Check<'_>,
) -> Result<JobSpec, LineError> {
    let spec = parse_line(number, text, defaults)?;
    check(&spec).map_err(|e| locate(number, text, e))?;
    Ok(spec)
}

/// Reads every line of `reader`, checking each; see the module doc.
pub async fn validate<R, W>(
    reader: &mut LineReader<R, W>,
    defaults: &Defaults,
    check: &Check<'_>,
    observer: &mut (dyn Observer + Send),
) -> std::io::Result<Validation>
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut found = Validation::default();
    let mut seen: HashSet<u64> = HashSet::new();
    loop {
        let bytes = reader.bytes_read();
        let Some((number, line)) = reader.next_line().await? else {
            break;
        };
        let (outcome, text) = match line {
            Line::TooLong { len, prefix } => (Err(too_long(number, len)), prefix),
            Line::Text(text) if is_blank(text) => continue,
            Line::Text(text) => (job_of_line(number, text, defaults, check), text),
        };
        found.lines += 1;
        match outcome {
            Ok(spec) => {
                found.valid += 1;
                let hash = id_hash(spec.custom_id.as_deref().unwrap_or_default());
                if !seen.insert(hash) {
                    found.suspects.insert(hash);
                }
            }
            Err(error) => {
                found.invalid += 1;
                observer.rejected(&error, text)?;
                if found.errors.len() < MAX_LISTED_ERRORS {
                    found.errors.push(error);
                }
            }
        }
        if found.lines % PROGRESS_EVERY == 0 {
            observer.progress(found.lines, bytes);
        }
    }
    observer.progress(found.lines, reader.bytes_read());
    Ok(found)
}

/// Reads the same input again when [`validate`] saw a `custom_id` hash repeat, and turns every
/// real repeat into a bad line ("custom_id … is already used by line N").
pub async fn confirm_duplicates<R, W>(
    reader: &mut LineReader<R, W>,
    found: &mut Validation,
    defaults: &Defaults,
    check: &Check<'_>,
    observer: &mut (dyn Observer + Send),
) -> std::io::Result<()>
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    if found.suspects.is_empty() {
        return Ok(());
    }
    let mut first_line: HashMap<String, u64> = HashMap::new();
    while let Some((number, line)) = reader.next_line().await? {
        let Line::Text(text) = line else { continue };
        if is_blank(text) {
            continue;
        }
        let Ok(spec) = job_of_line(number, text, defaults, check) else {
            continue;
        };
        let id = spec.custom_id.unwrap_or_default();
        if !found.suspects.contains(&id_hash(&id)) {
            continue;
        }
        match first_line.get(&id) {
            None => {
                first_line.insert(id, number);
            }
            Some(first) => {
                let error = LineError {
                    line: number,
                    field: "custom_id".into(),
                    message: format!(
                        "\"{id}\" is already used by line {first}; custom_id must be unique within a file"
                    ),
                };
                observer.rejected(&error, text)?;
                found.valid -= 1;
                found.invalid += 1;
                found.errors.push(error);
            }
        }
    }
    found.errors.sort_by_key(|e| e.line);
    found.errors.truncate(MAX_LISTED_ERRORS);
    found.suspects.clear();
    Ok(())
}

/// A fixed 64-bit hash of a `custom_id` (the same in both passes of one process).
fn id_hash(id: &str) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    id.hash(&mut hasher);
    hasher.finish()
}

/// A [`LineReader`] over `input` with the bulk line limit and no copy.
pub fn reader<R: AsyncBufRead + Unpin>(input: R) -> LineReader<R, tokio::io::Sink> {
    LineReader::new(input, MAX_LINE_BYTES, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(spec: &JobSpec) -> Result<(), FieldError> {
        crate::submit::check_spec(spec, |m| {
            (m != "fast").then(|| format!("unknown model \"{m}\""))
        })
    }

    async fn run(text: &str) -> Validation {
        let defaults = Defaults::default();
        let mut found = validate(&mut reader(text.as_bytes()), &defaults, &check, &mut ())
            .await
            .unwrap();
        confirm_duplicates(
            &mut reader(text.as_bytes()),
            &mut found,
            &defaults,
            &check,
            &mut (),
        )
        .await
        .unwrap();
        found
    }

    #[tokio::test]
    async fn every_bad_line_is_reported_with_its_number() {
        let good = r#"{"custom_id":"a","body":{"model":"fast","messages":[{"role":"user","content":"x"}]}}"#;
        let text = [
            good,
            "",
            r#"{"custom_id":"b","body":{"model":"gpt-9","messages":[{"role":"user","content":"x"}]}}"#,
            "{not json",
            good,
            r#"{"model":"fast","messages":[{"role":"user","content":"x"}]}"#,
            r#"{"model":"fast","messages":[{"role":"user","content":"x"}]}"#,
        ]
        .join("\n");
        let found = run(&text).await;
        assert_eq!((found.lines, found.valid, found.invalid), (6, 3, 3));
        let summary: Vec<(u64, &str)> = found
            .errors
            .iter()
            .map(|e| (e.line, e.field.as_str()))
            .collect();
        assert_eq!(summary, vec![(3, "body.model"), (4, ""), (5, "custom_id")]);
        assert!(found.errors[0].message.contains("unknown model \"gpt-9\""));
        assert!(found.errors[2].message.contains("already used by line 1"));
    }

    #[tokio::test]
    async fn an_oversized_request_is_rejected() {
        let big = "x".repeat(crate::submit::MAX_REQUEST_BYTES);
        let text = format!(
            "{{\"model\":\"fast\",\"messages\":[{{\"role\":\"user\",\"content\":\"{big}\"}}]}}\n{{\"pad\":\"{}\"}}\n",
            "y".repeat(MAX_LINE_BYTES)
        );
        let found = run(&text).await;
        assert_eq!(found.invalid, 2);
        assert_eq!(found.errors[0].field, "");
        assert!(
            found.errors[0].message.contains("the limit is"),
            "{:?}",
            found.errors
        );
        assert!(found.errors[1].message.contains("a line may be at most"));
    }
}
