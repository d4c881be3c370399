//! Why a job failed: one type for every way a job ends `failed`, and one answer for each.
//!
//! A failure is stored as its stable name in `jobs.error_kind` (`budget_exceeded`,
//! `rate_limited`, …) and read back as a [`JobFailure`], so the worker, the budgets and the
//! batch tier write the same names and every reader classifies them the same way. Its
//! [`JobFailure::answer`] is the HTTP status and OpenAI error `type` and `code` a client
//! hears, wherever it hears about the job: `/v1/chat/completions` (plain and streamed), the
//! job view, and the bulk and batch output files. The status decides what OpenAI's SDKs do
//! next: they retry 408, 409, 429 and 5xx on their own, so a failure the client must fix
//! (a spent budget, a request too large for any key) is a 4xx, and only upstream trouble
//! that may pass is a 429 or 5xx.
//!
//! A provider call's failure is classified as an [`ErrorKind`], defined here (and re-exported
//! as `providers::ErrorKind`) so that reading a stored failure needs nothing of the adapters.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a provider call failed, in the terms the worker acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// 429 rate limit: retry later, honouring `retry_after`.
    RateLimited,
    /// The key's quota or spend cap is exhausted (OpenAI `insufficient_quota`): not retried
    /// on this key.
    QuotaExhausted,
    /// 5xx, 529 overloaded: retry.
    ServerError,
    /// No answer within the timeout: retry.
    Timeout,
    /// Connection refused, reset, DNS: retry.
    Connection,
    /// 400 and other 4xx the request itself caused: fail at once with the provider's message.
    BadRequest,
    /// 401 / 403: the key is wrong. Not retried on this key; another deployment may serve.
    Unauthorized,
    /// 404: unknown model or endpoint. Not retried here; another deployment may serve.
    NotFound,
    /// A 2xx whose body is not what the provider documents. Retried: usually a proxy hiccup.
    InvalidResponse,
}

impl ErrorKind {
    /// Whether another attempt (later, or elsewhere) may succeed.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorKind::RateLimited
                | ErrorKind::ServerError
                | ErrorKind::Timeout
                | ErrorKind::Connection
                | ErrorKind::InvalidResponse
        )
    }

    /// Whether the failure lies with the deployment (its key spent or refused, its model
    /// unknown to the provider) rather than with the request: the same call will fail there
    /// again, but the route's next deployment may serve it.
    pub fn is_deployment_fault(self) -> bool {
        matches!(
            self,
            ErrorKind::QuotaExhausted | ErrorKind::Unauthorized | ErrorKind::NotFound
        )
    }

    /// The kind a stable name stands for (`None` for a name that is not a provider's).
    pub fn from_name(name: &str) -> Option<ErrorKind> {
        PROVIDER_KINDS
            .iter()
            .find(|kind| kind.as_str() == name)
            .copied()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::QuotaExhausted => "quota_exhausted",
            ErrorKind::ServerError => "server_error",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Connection => "connection",
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::NotFound => "not_found",
            ErrorKind::InvalidResponse => "invalid_response",
        }
    }
}

/// Why a job ended `failed` (or, for [`JobFailure::Cancelled`], never ran).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobFailure {
    /// The provider's error on the job's last attempt ended it.
    Provider(ErrorKind),
    /// The job names a model no route serves (it left the configuration, or the job was
    /// published straight onto the queue without being checked).
    UnknownModel,
    /// The job's deadline passed, or would pass while it waited for capacity.
    DeadlineExceeded,
    /// The request's token estimate is over every key's tokens/min burst: no key can ever
    /// take it.
    OverLimit,
    /// A budget the job counts against has no room for its estimate.
    BudgetExceeded,
    /// Cancelled before it ran.
    Cancelled,
    /// Its attempts were interrupted (its workers stopped mid-call) until `max_attempts` or
    /// the queue's delivery limit ran out.
    Interrupted,
    /// A name this build does not know (written by another version of Sluice).
    Unrecognised,
}

/// How a client hears about a failure: an HTTP status and OpenAI's error `type` and `code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    /// OpenAI's `error.type` where OpenAI has one for the case (`invalid_request_error`),
    /// else Sluice's (`budget_exceeded`, `upstream_error`).
    pub error_type: &'static str,
    /// OpenAI's machine-readable `error.code`: OpenAI's own where it has one for the case
    /// (`model_not_found`, `rate_limit_exceeded`, `insufficient_quota`), else the failure's
    /// stable name.
    pub code: &'static str,
    /// Whether a client's own retry of the request could end otherwise, where Sluice knows
    /// better than the status says: sent as `x-should-retry`, which OpenAI's SDKs obey over
    /// their rule of retrying 409, 429 and 5xx. `None` leaves the rule to the status.
    pub should_retry: Option<bool>,
}

/// Every failure that is not a provider's, with its stable name (provider failures are named
/// by [`ErrorKind::as_str`]).
const OWN: [(JobFailure, &str); 7] = [
    (JobFailure::UnknownModel, "unknown_model"),
    (JobFailure::DeadlineExceeded, "deadline_exceeded"),
    (JobFailure::OverLimit, "over_limit"),
    (JobFailure::BudgetExceeded, "budget_exceeded"),
    (JobFailure::Cancelled, "cancelled"),
    (JobFailure::Interrupted, "interrupted"),
    (JobFailure::Unrecognised, "unrecognised"),
];

/// Every provider error kind, for reading names back.
const PROVIDER_KINDS: [ErrorKind; 9] = [
    ErrorKind::RateLimited,
    ErrorKind::QuotaExhausted,
    ErrorKind::ServerError,
    ErrorKind::Timeout,
    ErrorKind::Connection,
    ErrorKind::BadRequest,
    ErrorKind::Unauthorized,
    ErrorKind::NotFound,
    ErrorKind::InvalidResponse,
];

impl JobFailure {
    /// The stable name stored in `jobs.error_kind` and shown as the job's `error.kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            JobFailure::Provider(kind) => kind.as_str(),
            own => OWN
                .iter()
                .find(|(failure, _)| *failure == own)
                .map_or("unrecognised", |(_, name)| *name),
        }
    }

    /// The failure a stored name stands for; a name this build does not know is
    /// [`JobFailure::Unrecognised`] rather than an error, so a row written by a newer version
    /// still reads.
    pub fn from_name(name: &str) -> JobFailure {
        ErrorKind::from_name(name)
            .map(JobFailure::Provider)
            .or_else(|| {
                OWN.iter()
                    .find(|(_, own)| *own == name)
                    .map(|(failure, _)| *failure)
            })
            .unwrap_or(JobFailure::Unrecognised)
    }

    /// Whether Sluice itself refused the job (no provider answer ended it): its answer is
    /// Sluice's status, not a provider's.
    pub fn is_refusal(self) -> bool {
        !matches!(
            self,
            JobFailure::Provider(_) | JobFailure::Unrecognised | JobFailure::Interrupted
        )
    }

    /// The one mapping from a failure to what a client hears.
    ///
    /// - `budget_exceeded` is **402**, as the refusal at submission: every retry is refused
    ///   until the budget's period resets, and nobody retries a 402.
    /// - `over_limit` is **400**, not 413: the body is not too large for the server (413's
    ///   meaning, which axum answers for oversized bodies); the request's token estimate
    ///   (mostly its `max_tokens`) is over every key's tokens/min, a property of a parameter
    ///   the client can lower, like a tenant's `too_large` (also 400). OpenAI itself answers
    ///   "request too large" for tokens/min with a 429, which its SDKs retry in vain.
    /// - `unknown_model` is **404** `model_not_found`, OpenAI's answer for a model it does
    ///   not serve.
    /// - `deadline_exceeded` is **504**: the job ran out of time, as a gateway's call would.
    /// - a provider's failure keeps the class of the provider's status: its refusal of the
    ///   request 400, an unknown model or endpoint 404, a rate limit or spent quota 429, a
    ///   timeout 504, anything else upstream (5xx, a refused connection, a refused key,
    ///   which is Sluice's to fix, not the client's) 502.
    /// - a job cancelled before it ran is **409**, a conflict with the job's state.
    pub fn answer(self) -> Answer {
        let answer = |status, error_type, code| Answer {
            status,
            error_type,
            code,
            should_retry: None,
        };
        // A retry would be refused the same way: a job cancelled (409) stays cancelled, and
        // a key out of credit (429 insufficient_quota) stays out of credit for hours.
        let final_ = |answer: Answer| Answer {
            should_retry: Some(false),
            ..answer
        };
        let invalid = "invalid_request_error";
        match self {
            JobFailure::BudgetExceeded => answer(402, "budget_exceeded", "budget_exceeded"),
            JobFailure::OverLimit => answer(400, invalid, "over_limit"),
            JobFailure::UnknownModel => answer(404, invalid, "model_not_found"),
            JobFailure::DeadlineExceeded => answer(504, "timeout", "deadline_exceeded"),
            JobFailure::Cancelled => final_(answer(409, "cancelled", "cancelled")),
            JobFailure::Unrecognised => answer(502, "upstream_error", "unrecognised"),
            // Sluice's workers stopping is Sluice's trouble, which may pass.
            JobFailure::Interrupted => answer(502, "upstream_error", "interrupted"),
            JobFailure::Provider(kind) => match kind {
                ErrorKind::BadRequest => answer(400, invalid, kind.as_str()),
                ErrorKind::NotFound => answer(404, invalid, kind.as_str()),
                ErrorKind::RateLimited => answer(429, "upstream_error", "rate_limit_exceeded"),
                ErrorKind::QuotaExhausted => {
                    final_(answer(429, "upstream_error", "insufficient_quota"))
                }
                ErrorKind::Timeout => answer(504, "upstream_error", kind.as_str()),
                ErrorKind::ServerError
                | ErrorKind::Connection
                | ErrorKind::Unauthorized
                | ErrorKind::InvalidResponse => answer(502, "upstream_error", kind.as_str()),
            },
        }
    }
}

impl From<ErrorKind> for JobFailure {
    fn from(kind: ErrorKind) -> Self {
        JobFailure::Provider(kind)
    }
}

impl std::fmt::Display for JobFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for JobFailure {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for JobFailure {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        Ok(JobFailure::from_name(&name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every() -> Vec<JobFailure> {
        PROVIDER_KINDS
            .iter()
            .map(|kind| JobFailure::Provider(*kind))
            .chain(OWN.iter().map(|(failure, _)| *failure))
            .collect()
    }

    #[test]
    fn every_failure_reads_back_from_its_stable_name() {
        for failure in every() {
            assert_eq!(JobFailure::from_name(failure.as_str()), failure);
            let json = serde_json::to_value(failure).unwrap();
            assert_eq!(json, failure.as_str());
            assert_eq!(serde_json::from_value::<JobFailure>(json).unwrap(), failure);
        }
        // The names stored before the type existed.
        for name in [
            "unknown_model",
            "deadline_exceeded",
            "over_limit",
            "budget_exceeded",
        ] {
            assert_eq!(JobFailure::from_name(name).as_str(), name);
        }
        assert_eq!(
            JobFailure::from_name("something_newer"),
            JobFailure::Unrecognised
        );
    }

    #[test]
    fn what_the_client_must_fix_is_4xx_and_upstream_trouble_is_retryable() {
        let status = |failure: JobFailure| failure.answer().status;
        assert_eq!(status(JobFailure::BudgetExceeded), 402);
        assert_eq!(status(JobFailure::OverLimit), 400);
        assert_eq!(status(JobFailure::UnknownModel), 404);
        assert_eq!(JobFailure::UnknownModel.answer().code, "model_not_found");
        assert_eq!(status(JobFailure::DeadlineExceeded), 504);
        assert_eq!(status(ErrorKind::BadRequest.into()), 400);
        assert_eq!(status(ErrorKind::NotFound.into()), 404);
        assert_eq!(status(ErrorKind::RateLimited.into()), 429);
        assert_eq!(status(ErrorKind::QuotaExhausted.into()), 429);
        assert_eq!(status(ErrorKind::Timeout.into()), 504);
        assert_eq!(status(ErrorKind::ServerError.into()), 502);
        // A key Sluice holds being refused is Sluice's problem, not the client's 401.
        assert_eq!(status(ErrorKind::Unauthorized.into()), 502);
        // What OpenAI's SDKs retry by themselves: never what only the client can fix.
        let retried = |s: u16| matches!(s, 408 | 409 | 429) || s >= 500;
        for failure in [
            JobFailure::BudgetExceeded,
            JobFailure::OverLimit,
            JobFailure::UnknownModel,
            ErrorKind::BadRequest.into(),
        ] {
            assert!(!retried(status(failure)), "{failure} is retried");
        }
    }

    #[test]
    fn only_sluices_own_refusals_are_refusals() {
        assert!(JobFailure::BudgetExceeded.is_refusal());
        assert!(JobFailure::OverLimit.is_refusal());
        assert!(!JobFailure::Provider(ErrorKind::ServerError).is_refusal());
        assert!(!JobFailure::Unrecognised.is_refusal());
    }
}
