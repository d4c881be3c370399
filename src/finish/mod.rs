//! Finishing a job: the one module that writes a job's terminal transitions.
//!
//! A job ends `succeeded` or `failed` from two places: the worker's settle step (a real-time
//! attempt's outcome, or a stage that refused the job before it ran) and the batch tracker
//! (a provider batch item's result). Both go through here, so there is one place to read to
//! know how a job can end, and a stage that decides a job's fate returns that decision
//! rather than writing it. The store's own guarded transitions are the exceptions: a job
//! failed because its attempts ran out ([`Store::start_attempt`]), a job whose message the
//! embedded queue dead-lettered (in that transaction) and a tenant's cancel.
//!
//! [`charge`] (the cost record of an answer, on the tier it was priced at) lives here too:
//! the worker and the tracker both charge answers, and neither may import the other.

mod charge;

pub use charge::{charge, Tier};

use crate::budgets::Budgets;
use crate::failure::JobFailure;
use crate::providers::ProviderError;
use crate::store::jobs::succeed_job;
use crate::store::{AttemptRecord, CostRecord, Store, StoreError};
use serde_json::Value;
use std::sync::Arc;
use uuid::Uuid;

/// Why a job is to be failed: the failure it is recorded with, the message, and the request
/// parameter the provider blamed, when it named one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: JobFailure,
    pub message: String,
    pub param: Option<String>,
}

impl Failure {
    pub fn new(kind: JobFailure, message: impl Into<String>) -> Failure {
        Failure {
            kind,
            message: message.into(),
            param: None,
        }
    }

    /// A provider's error that ends the job, with `message` (the error itself, or with how
    /// many attempts were made).
    pub fn provider(error: &ProviderError, message: String) -> Failure {
        Failure {
            kind: error.kind.into(),
            message,
            param: error.param.clone(),
        }
    }
}

/// Fails the job `id` (`queued` or `running`) with `failure`, storing its last attempt if it
/// made one. False when the job was final already (nothing written).
pub async fn fail(
    store: &Store,
    id: Uuid,
    attempt: Option<AttemptRecord>,
    failure: Failure,
) -> Result<bool, StoreError> {
    store
        .finish_failed(id, attempt, failure.kind, failure.message, failure.param)
        .await
}

/// Stores the job's answer and its cost, marks it `succeeded`, releases its reservations
/// and adds the cost to the `budgets` it counts against, all in one transaction; then logs
/// each warning threshold that crossed. False when it was no longer running (finished or
/// cancelled meanwhile): the answer is discarded, not charged.
pub async fn succeed(
    store: &Store,
    budgets: &Arc<Budgets>,
    id: Uuid,
    attempt: AttemptRecord,
    response: Value,
    cost: CostRecord,
) -> Result<bool, StoreError> {
    let budgets = budgets.clone();
    let warnings = store
        .write(move |conn| {
            Box::pin(async move {
                let mut conn = conn;
                let Some(owner) = succeed_job(&mut conn, id, &attempt, &response, &cost).await?
                else {
                    return Ok(None);
                };
                crate::budgets::spend::charge(&mut conn, &budgets, &owner, cost.amount)
                    .await
                    .map(Some)
            })
        })
        .await?;
    let Some(warnings) = warnings else {
        return Ok(false);
    };
    for warning in &warnings {
        warning.log();
    }
    Ok(true)
}

/// Fails the job of a message the queue gave up delivering, with the queue's `reason`
/// (see [`Store::fail_undelivered`]). False when it was final already, or unknown.
pub async fn fail_undelivered(store: &Store, id: Uuid, reason: String) -> Result<bool, StoreError> {
    store.fail_undelivered(id, reason).await
}
