//! Bulk JSONL in and out: a file of requests becomes a named bulk of jobs, and the bulk's
//! results come back as JSONL in OpenAI's batch output format.
//!
//! Files can be far larger than memory, so nothing here holds a whole file:
//!
//! 1. [`validate`]: one streaming pass reads every line ([`lines::LineReader`], which caps a
//!    line's length), parses it ([`lines::parse_line`]: OpenAI's batch input line, the short
//!    `{"custom_id", "body"}` form, or a bare chat body), checks it exactly as a single job is
//!    checked ([`crate::submit::check_spec`]) and reports every bad line with its number. A
//!    duplicate `custom_id` is found by remembering 8 bytes per line (a hash), confirmed
//!    exactly by a second read only when a hash repeats.
//! 2. [`submit`]: a second streaming pass over the same bytes (the caller's file, or the spool
//!    the server wrote while validating) submits the good lines in chunks through
//!    [`crate::submit::Submitter::submit_to_bulk`]: recorded, published with confirms, marked.
//!
//! Idempotency: a bulk is identified by its tenant and name, and a job's `custom_id` is unique
//! within its bulk (a bare body's is `line-N`). Submitting a file again under the same name
//! adds only the lines whose `custom_id` the bulk does not hold yet, so the same file twice
//! gives the same bulk id and no new job. A line whose `custom_id` the bulk holds for a
//! different request is not submitted either, but counted and listed as a conflict: the
//! user changed it, and must not believe the change runs.
//!
//! [`output`] formats a finished job as an OpenAI batch output line; [`wire`] holds what the
//! API and its client exchange about a bulk. The `sluice bulk` commands' side (validate
//! locally, upload, show progress, fetch status and results) is `crate::client::bulk`: this
//! module is the server's, and knows nothing of the client.

pub mod lines;
pub mod output;
pub mod submit;
pub mod validate;
pub mod wire;

use crate::job::{Tags, Urgency};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Most bad lines a report lists (every bad line is counted).
pub const MAX_LISTED_ERRORS: usize = 1000;

/// Longest line read whole: the largest request plus room for the line's own fields. A longer
/// line is rejected without being held in memory.
pub const MAX_LINE_BYTES: usize = crate::submit::MAX_REQUEST_BYTES + (64 << 10);

/// The endpoint every line must name (when it names one).
pub const CHAT_COMPLETIONS_URL: &str = "/v1/chat/completions";

/// What every job of a submission gets unless its line says otherwise (only `model` can be
/// said by a line).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Defaults {
    /// The model for lines whose body has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default = "batch")]
    pub urgency: Urgency,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<DateTime<Utc>>,
    #[serde(default, flatten)]
    pub tags: Tags,
}

fn batch() -> Urgency {
    Urgency::Batch
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            model: None,
            urgency: Urgency::Batch,
            deadline: None,
            tags: Tags::default(),
        }
    }
}

/// One bad line: its number (1-based), the field to blame (a JSON path within the line, empty
/// for the line as a whole) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineError {
    pub line: u64,
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            write!(f, "line {}: {}", self.line, self.message)
        } else {
            write!(f, "line {}: {}: {}", self.line, self.field, self.message)
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BulkError {
    #[error("cannot read {what}: {source}")]
    Read {
        what: String,
        source: std::io::Error,
    },
    #[error("cannot write {what}: {source}")]
    Write {
        what: String,
        source: std::io::Error,
    },
    #[error("{invalid} of {lines} lines are invalid; nothing was submitted (fix them, or pass --skip-invalid to submit the valid lines and write the others to a rejects file)")]
    Invalid {
        lines: u64,
        invalid: u64,
        /// The first [`MAX_LISTED_ERRORS`] bad lines, in line order.
        errors: Vec<LineError>,
    },
    #[error("{0}")]
    Usage(String),
    #[error("{0} holds no request (every line is empty)")]
    Empty(String),
    #[error("bulk {0} was cancelled; nothing more can be submitted to it (use another --name)")]
    Cancelled(uuid::Uuid),
    #[error("{submitted} jobs were submitted before the queue failed; submit the same file under the same name again to submit the rest (lines already in the bulk are not submitted twice): {source}")]
    Interrupted {
        submitted: u64,
        source: crate::submit::SubmitError,
    },
    #[error(transparent)]
    Submit(#[from] crate::submit::SubmitError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}
