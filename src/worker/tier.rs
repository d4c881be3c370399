//! The tier stage: whether this attempt goes to a provider batch (half the price, answered
//! within the provider's window) or runs real-time, and whether a real-time call uses
//! OpenAI's flex service tier.
//!
//! The rules are [`crate::batch::tier`]'s pure choices. A job the batch tier takes has its
//! budgets hold its cost at the batch price, then is placed in a provider batch
//! ([`crate::batch::place`]) and its message acked: the store tracks it from there. Budgets
//! and placement return decisions; this stage turns them into its own decision, [`Tiered`].

use super::WorkerContext;
use crate::batch::tier::{TierChoice, TierQuestion};
use crate::batch::Placed;
use crate::budgets::BatchHold;
use crate::finish::Failure;
use crate::job::Envelope;
use crate::router::{Deployment, FlexTier, Route};
use crate::store::StoreError;
use chrono::{DateTime, Utc};
use std::sync::Arc;

/// The tier of an attempt, for a job on a route.
#[derive(Debug)]
pub(super) enum TierDecision<'r> {
    /// Offer the job to `deployment`'s batch tier.
    Batch {
        deployment: &'r Arc<Deployment>,
        because: String,
    },
    /// Run it real-time; `because` says why when the batch tier was an option it could not
    /// take (the attempt records it).
    Realtime { because: Option<String> },
}

/// Where attempt `attempt` of `envelope`'s job goes. Pure.
pub(super) fn decide<'r>(
    route: &'r Route,
    envelope: &Envelope,
    attempt: u32,
    deadline: Option<DateTime<Utc>>,
    safety_margin: std::time::Duration,
) -> TierDecision<'r> {
    let Some(deployment) = route.batch_deployment(attempt) else {
        return TierDecision::Realtime { because: None };
    };
    let choice = crate::batch::tier::choose(TierQuestion {
        urgency: envelope.spec.urgency,
        attempt,
        deadline,
        now: Utc::now(),
        wait: deployment.batch.as_ref().map(|b| b.turnaround),
        safety_margin,
    });
    match choice {
        TierChoice::Batch { because } => TierDecision::Batch {
            deployment,
            because,
        },
        TierChoice::Realtime { because } => TierDecision::Realtime { because },
    }
}

/// What became of the tier stage.
#[derive(Debug)]
pub(super) enum Tiered {
    /// In a provider batch now (the store tracks it), or no longer runnable: ack.
    Done,
    /// The batch tier can never take the request (a parameter the provider has no
    /// equivalent for): fail the job, as a real-time call would.
    Fail(Failure),
    /// Run it real-time; `note` (why not the batch tier) goes on the attempt.
    Realtime { note: Option<String> },
}

/// The tier stage: decides, and offers the job to the batch tier when that is the choice.
pub(super) async fn tier(
    context: &WorkerContext,
    envelope: &Envelope,
    route: &Route,
    attempt: u32,
    deadline: Option<DateTime<Utc>>,
) -> Result<Tiered, StoreError> {
    let safety_margin = context.config.batch.safety_margin;
    match decide(route, envelope, attempt, deadline, safety_margin) {
        TierDecision::Realtime { because } => Ok(Tiered::Realtime { note: because }),
        TierDecision::Batch {
            deployment,
            because,
        } => {
            let max_attempts = super::max_attempts(&context.config, route);
            offer_batch(
                context,
                envelope,
                deployment,
                deadline,
                because,
                max_attempts,
            )
            .await
        }
    }
}

/// The job's budgets hold its cost before it joins a batch; a budget without room sends it
/// down the real-time path, which applies the budget's policy.
async fn offer_batch(
    context: &WorkerContext,
    envelope: &Envelope,
    deployment: &Deployment,
    deadline: Option<DateTime<Utc>>,
    because: String,
    max_attempts: u32,
) -> Result<Tiered, StoreError> {
    let store = &context.store;
    match crate::budgets::reserve_for_batch(store, &context.budgets, envelope, deployment).await? {
        BatchHold::Held => {}
        BatchHold::NotRunnable => return Ok(Tiered::Done),
        BatchHold::Refused(why) => {
            return Ok(Tiered::Realtime {
                note: Some(format!("realtime tier: {why}")),
            })
        }
    }
    let because = format!("{because}; deployment \"{}\"", deployment.name);
    Ok(
        match crate::batch::place(store, deployment, envelope, deadline, because, max_attempts)
            .await?
        {
            Placed::InBatch | Placed::NotRunnable => Tiered::Done,
            Placed::Refused(error) => {
                tracing::info!(job = %envelope.id, %error, "the batch tier cannot take this request");
                Tiered::Fail(Failure::provider(&error, error.to_string()))
            }
            Placed::TooLarge(why) => Tiered::Realtime { note: Some(why) },
        },
    )
}

/// Whether a real-time attempt on `deployment` uses its flex tier, and why (see
/// [`crate::batch::tier::flex`]). Pure.
pub(super) fn flex(
    deployment: &Deployment,
    envelope: &Envelope,
    attempt: u32,
    deadline: Option<DateTime<Utc>>,
    safety_margin: std::time::Duration,
) -> Option<(FlexTier, String)> {
    let flex = deployment.flex?;
    let why = crate::batch::tier::flex(TierQuestion {
        urgency: envelope.spec.urgency,
        attempt,
        deadline,
        now: Utc::now(),
        wait: Some(flex.timeout),
        safety_margin,
    })?;
    Some((flex, why))
}
