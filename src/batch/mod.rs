//! The batch tier: jobs that can wait go through a provider's half-price batch API.
//!
//! The life of a batch-tier job:
//!
//! 1. **Choice** ([`tier`]): the worker asks whether the job's attempt may use the batch tier
//!    of its route's deployment (urgency, deadline, turnaround).
//! 2. **Collection** ([`place`]): the job joins the open provider batch of that deployment
//!    ([`Store::add_to_batch`]); the batch closes when it reaches the provider's limits (or
//!    the deployment's `max_requests`), or `max_wait` after it opened. Only once the store
//!    has committed the placement is the job's queue message acked: from then on the store
//!    alone knows where the job is.
//! 3. **Submission and tracking** ([`tracker`]): a loop in every worker process takes each
//!    batch that needs a step (under a lease, so two processes never submit one batch twice),
//!    submits closed batches, polls submitted ones when the `batch.poll` cron schedule says,
//!    cancels one that would miss its jobs' deadlines, and reads the results of ended ones.
//! 4. **Results**: each answer is matched to its job by `custom_id` (the job id) and stored
//!    like a real-time answer, charged at the batch price with what real-time would have
//!    cost beside it. An item that errored (retryably), expired or was cancelled sends its
//!    job back to the queue for a real-time attempt (the tier choice never picks the batch
//!    tier for a second attempt); a client error fails the job.
//!
//! A job is answered and charged at most once: an item takes a result only while it is
//! `pending`, and a job's outcome is guarded by its status, as on the real-time path.

pub mod tier;
pub mod tracker;

use crate::job::Envelope;
use crate::providers::batch::BatchRequest;
use crate::providers::ProviderError;
use crate::router::Deployment;
use crate::store::provider_batches::{NewBatchItem, Placement};
use crate::store::{Store, StoreError};
use chrono::{DateTime, Utc};

/// What became of a job offered to a deployment's batch tier.
#[derive(Debug)]
pub enum Placed {
    /// It is in a provider batch (or was already): ack its message.
    InBatch,
    /// It finished or was cancelled meanwhile, or had had its `max_attempts` (failed in
    /// placing it): ack its message.
    NotRunnable,
    /// The provider can never take this request (a parameter it has no equivalent for):
    /// fail the job with this error, as a real-time call would.
    Refused(ProviderError),
    /// Larger than one provider batch may be: run it real-time, for this reason.
    TooLarge(String),
}

/// Puts a job into the open provider batch of `deployment` (which has a batch tier).
pub async fn place(
    store: &Store,
    deployment: &Deployment,
    envelope: &Envelope,
    deadline: Option<DateTime<Utc>>,
    because: String,
    max_attempts: u32,
) -> Result<Placed, StoreError> {
    let tier = deployment
        .batch
        .as_ref()
        .expect("the worker offers only deployments with a batch tier");
    let request = BatchRequest {
        custom_id: envelope.id.to_string(),
        request: deployment
            .overrides
            .apply(&envelope.spec.request)
            .into_owned(),
    };
    let bytes = match tier
        .api
        .encoded_len(&deployment.model, deployment.options, &request)
    {
        Ok(bytes) => bytes,
        Err(error) => return Ok(Placed::Refused(error)),
    };
    if bytes > tier.max_bytes {
        return Ok(Placed::TooLarge(format!(
            "realtime tier: the request is {bytes} bytes in the batch format, over the {} bytes one batch may hold",
            tier.max_bytes
        )));
    }
    let placement = store
        .add_to_batch(NewBatchItem {
            job: envelope.id,
            deployment: deployment.name.clone(),
            key_ids: deployment.key_ids(),
            bytes,
            max_requests: tier.max_requests,
            max_bytes: tier.max_bytes,
            max_wait: tier.max_wait,
            max_attempts,
            deadline: deadline.map(|d| d.timestamp_millis()),
            chosen_because: because,
        })
        .await?;
    Ok(match placement {
        Placement::Placed { batch, attempt } => {
            tracing::debug!(job = %envelope.id, %batch, attempt, deployment = %deployment.name, "in a provider batch");
            Placed::InBatch
        }
        Placement::NotRunnable => Placed::NotRunnable,
        Placement::Exhausted { attempts } => {
            tracing::warn!(job = %envelope.id, attempts, "max_attempts used up; the job is failed, not placed");
            Placed::NotRunnable
        }
    })
}
