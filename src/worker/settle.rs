//! The settle step: how a delivery's run ended is written to the store, *then* its message
//! is settled to match, so a crash between the two at worst repeats a step.
//!
//! Every stage before this one returns a decision and writes no outcome; this is the one
//! place the worker writes how a run ended: a failed job through [`crate::finish::fail`], an
//! answer through [`crate::finish::succeed`], a failed attempt to retry with
//! [`crate::store::Store::record_retry`].

use super::WorkerContext;
use crate::finish::Failure;
use crate::job::Envelope;
use crate::queue::{Delivery, QueueError};
use crate::store::{AttemptRecord, CostRecord, StoreError};
use crate::telemetry::metrics::{Finished, Parked};
use serde_json::Value;
use std::time::Duration;

/// What becomes of a delivery's message.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Settlement {
    Ack,
    /// Parked on the delay ladder, delivered again after this long.
    RetryAfter(Duration),
    /// Not a job to run (see [`crate::store::Orphan`]): kept in the dead letters, with why.
    DeadLetter(String),
}

/// How a delivery's run ends, before anything about it is written.
#[derive(Debug)]
pub(super) enum Ending {
    /// Nothing (more) to write: settle the message so.
    Settle(Settlement),
    /// Fail the job, with its attempt when it made one; then ack.
    Fail(Option<AttemptRecord>, Failure),
    /// Store the answer and its cost (the job `succeeded`); then ack.
    Succeed {
        attempt: AttemptRecord,
        response: Value,
        cost: CostRecord,
    },
    /// Store the failed attempt (the job `queued` again); then deliver it after `delay`.
    Retry {
        attempt: AttemptRecord,
        delay: Duration,
    },
}

impl Ending {
    pub(super) fn ack() -> Ending {
        Ending::Settle(Settlement::Ack)
    }

    /// Fails a job that made no attempt this time.
    pub(super) fn fail(failure: Failure) -> Ending {
        Ending::Fail(None, failure)
    }
}

/// Writes `ending` for `envelope`'s job and says how to settle its message; once written,
/// counts it (see [`crate::telemetry::metrics`]).
pub(super) async fn write(
    context: &WorkerContext,
    envelope: &Envelope,
    ending: Ending,
) -> Result<Settlement, StoreError> {
    let store = &context.store;
    let metrics = &context.metrics;
    let id = envelope.id;
    let job = metrics.job(envelope);
    match ending {
        Ending::Settle(settlement) => {
            if let Settlement::RetryAfter(_) = settlement {
                metrics.parked(job.urgency, Parked::Capacity);
            }
            Ok(settlement)
        }
        Ending::Fail(attempt, failure) => {
            let kind = failure.kind;
            let deployment = attempt.as_ref().map(|a| a.deployment.clone());
            if let Some(attempt) = &attempt {
                metrics.attempt(&job, id, attempt);
            }
            if crate::finish::fail(store, id, attempt, failure).await? {
                metrics.job_finished(&job, id, Finished::Failed(kind), deployment.as_deref());
            }
            Ok(Settlement::Ack)
        }
        Ending::Succeed {
            attempt,
            response,
            cost,
        } => {
            metrics.attempt(&job, id, &attempt);
            let deployment = attempt.deployment.clone();
            let charged = (metrics.is_on()).then(|| cost.clone());
            if crate::finish::succeed(store, &context.budgets, id, attempt, response, cost).await? {
                if let Some(cost) = &charged {
                    metrics.charged(&job, &deployment, cost);
                }
                metrics.job_finished(&job, id, Finished::Succeeded, Some(&deployment));
            } else {
                tracing::info!(job = %id, "finished elsewhere meanwhile; this answer is discarded, not charged");
            }
            Ok(Settlement::Ack)
        }
        Ending::Retry { attempt, delay } => {
            metrics.attempt(&job, id, &attempt);
            store.record_retry(id, attempt).await?;
            metrics.parked(job.urgency, Parked::Retry);
            Ok(Settlement::RetryAfter(delay))
        }
    }
}

/// Settles `delivery` as `settlement` says.
pub(super) async fn settle(delivery: Delivery, settlement: Settlement) {
    let settled = match settlement {
        Settlement::Ack => delivery.ack().await,
        Settlement::RetryAfter(delay) => delivery.retry_after(delay).await,
        Settlement::DeadLetter(reason) => delivery.dead_letter(&reason).await,
    };
    report(settled);
}

fn report(result: Result<(), QueueError>) {
    if let Err(e) = result {
        // The message will be delivered again and recognised by its state in the store.
        tracing::warn!(error = %e, "could not settle a delivery; it will be redelivered");
    }
}
