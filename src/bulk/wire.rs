//! What travels over HTTP for a bulk, read and written by both sides: the API's handlers
//! (`crate::api`) and the client (`crate::client`), so neither side depends on the other.
//!
//! - `POST /v1/bulk`: its query ([`SubmitQuery`], from and into a [`BulkRequest`]), its JSONL
//!   body ([`NDJSON`]), and its answer: one [`Submission`], or with `Accept:` [`NDJSON`] a
//!   stream of [`ProgressEvent`]s ending with the submission or an error.
//! - `GET /v1/bulk/{id}/results`: its query ([`ResultsQuery`]) and the header counting the
//!   jobs not in it yet ([`PENDING_HEADER`]).

use super::{Defaults, LineError};
use crate::job::Tags;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// The media type of JSONL bodies and of the progress stream.
pub const NDJSON: &str = "application/x-ndjson";

/// The header of a results download saying how many jobs were not finished yet (and so are
/// not in it).
pub const PENDING_HEADER: &str = "x-sluice-pending";

/// What a submission asks for besides its lines.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BulkRequest {
    /// The bulk's name, unique per tenant: submitting again under a name adds to that bulk.
    /// Without one, the bulk gets a fresh name (and the submission is not idempotent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(flatten)]
    pub defaults: Defaults,
    /// Submit the valid lines and report the others, instead of submitting nothing.
    #[serde(default)]
    pub skip_invalid: bool,
}

/// The query of `POST /v1/bulk`: a [`BulkRequest`] as text, each field optional.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct SubmitQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    urgency: Option<String>,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    deadline: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    team: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    feature: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    skip_invalid: bool,
}

/// A field of a [`SubmitQuery`] that does not read as its type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct QueryError {
    pub field: &'static str,
    pub message: String,
}

impl From<&BulkRequest> for SubmitQuery {
    fn from(request: &BulkRequest) -> SubmitQuery {
        let d = &request.defaults;
        SubmitQuery {
            name: request.name.clone(),
            model: d.model.clone(),
            urgency: Some(d.urgency.to_string()),
            deadline: d.deadline.map(|t| t.to_rfc3339()),
            user: d.tags.user.clone(),
            team: d.tags.team.clone(),
            feature: d.tags.feature.clone(),
            skip_invalid: request.skip_invalid,
        }
    }
}

impl SubmitQuery {
    /// The request the query says (what it leaves out takes [`Defaults`]' values).
    pub fn into_request(self) -> Result<BulkRequest, QueryError> {
        let invalid = |field, message| QueryError { field, message };
        let urgency = match self.urgency.as_deref() {
            None => Defaults::default().urgency,
            Some(text) => text.parse().map_err(|e: String| invalid("urgency", e))?,
        };
        let deadline = self
            .deadline
            .as_deref()
            .map(|text| {
                chrono::DateTime::parse_from_rfc3339(text)
                    .map(|d| d.with_timezone(&chrono::Utc))
                    .map_err(|e| {
                        invalid(
                            "deadline",
                            format!(
                                "\"{text}\" is not an RFC 3339 time like 2026-01-31T12:00:00Z: {e}"
                            ),
                        )
                    })
            })
            .transpose()?;
        if let Some(name) = &self.name {
            if name.trim().is_empty() || name.len() > 256 {
                return Err(invalid("name", "must be 1 to 256 characters long".into()));
            }
        }
        Ok(BulkRequest {
            name: self.name,
            defaults: Defaults {
                model: self.model,
                urgency,
                deadline,
                tags: Tags {
                    user: self.user,
                    team: self.team,
                    feature: self.feature,
                },
            },
            skip_invalid: self.skip_invalid,
        })
    }
}

/// The outcome of a submission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submission {
    pub id: Uuid,
    pub name: String,
    /// False when the name already belonged to a bulk, which this submission added to.
    pub created: bool,
    /// Non-blank lines in the body.
    pub lines: u64,
    /// Jobs this submission created.
    pub submitted: u64,
    /// Valid lines whose `custom_id` the bulk already held with the same request: not
    /// submitted again.
    pub duplicates: u64,
    /// Valid lines whose `custom_id` the bulk already held with a different request: not
    /// submitted (the bulk's job stands), and reported so that a changed line is never taken
    /// for submitted. Defaults to 0 for answers of servers that did not count them.
    #[serde(default)]
    pub conflicts: u64,
    /// The first [`MAX_LISTED_ERRORS`](super::MAX_LISTED_ERRORS) conflicting lines, each
    /// naming the job that holds its `custom_id`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conflicting: Vec<LineError>,
    /// Invalid lines skipped (with `skip_invalid`).
    pub rejected: u64,
    /// The first of the rejected lines.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rejections: Vec<LineError>,
}

/// One line of the progress stream of `POST /v1/bulk`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ProgressEvent {
    /// `done` of `total` valid lines are published.
    Progress {
        #[serde(default)]
        done: u64,
        #[serde(default)]
        total: u64,
    },
    /// The last event of a submission that ended.
    Submitted { bulk: Submission },
    /// The last event of a submission that failed: the HTTP status and error object it would
    /// have been answered with.
    Error {
        #[serde(default = "internal_error")]
        status: u16,
        #[serde(default)]
        error: Value,
    },
    /// An event of a kind this side does not know (from a newer server): skipped.
    #[serde(other)]
    Unknown,
}

fn internal_error() -> u16 {
    500
}

/// The query of `GET /v1/bulk/{id}/results`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultsQuery {
    /// In input order (by line number); otherwise in no particular order.
    #[serde(default)]
    pub ordered: bool,
    /// Failed and cancelled jobs only.
    #[serde(default)]
    pub errors: bool,
}
