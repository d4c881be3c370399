//! The budget stage: the job's budgets hold its maximum cost on the picked deployment
//! before the attempt counts, or send it to a cheaper route, or refuse it.
//!
//! [`crate::budgets::reserve`] reserves and returns a decision; this stage acts on it. A
//! downgrade is the router's business, so it is done here: the budget's route is asked for
//! a pick (a wait parks the job, not an attempt) and the budgets reserve again on it, where
//! any refusal is final.

use super::WorkerContext;
use crate::budgets::{BudgetDecision, Pass};
use crate::failure::JobFailure;
use crate::finish::Failure;
use crate::job::Envelope;
use crate::router::{Choice, Pick, Route};
use crate::store::StoreError;
use std::sync::Arc;
use std::time::Duration;

/// What the budget stage decided.
#[derive(Debug)]
pub(super) enum Budgeted {
    /// Make the attempt on this route (another one when a budget downgraded the job) with
    /// this pick: the job's budgets hold its estimate.
    Go(Arc<Route>, Pick),
    /// The downgrade route has no capacity now: park the job, not an attempt.
    Wait(Duration),
    /// A budget has no room: fail the job `budget_exceeded`.
    Refused(Failure),
    /// The job finished or was cancelled meanwhile: ack.
    NotRunnable,
}

/// Reserves the job's estimate for attempt `attempt` with `pick` on `route`.
pub(super) async fn reserve(
    context: &WorkerContext,
    envelope: &Envelope,
    route: Arc<Route>,
    pick: Pick,
    attempt: u32,
) -> Result<Budgeted, StoreError> {
    let (store, budgets) = (&context.store, &context.budgets);
    let downgrade =
        match crate::budgets::reserve(store, budgets, envelope, &route.name, pick, Pass::First)
            .await?
        {
            BudgetDecision::Reserved(pick) => return Ok(Budgeted::Go(route, pick)),
            BudgetDecision::NotRunnable => return Ok(Budgeted::NotRunnable),
            BudgetDecision::Refused(why) => return Ok(refused(envelope, why)),
            BudgetDecision::Downgrade(downgrade) => downgrade,
        };
    let Some(cheaper) = context.router.route(&downgrade.to).cloned() else {
        return Ok(refused(envelope, downgrade.missing_route()));
    };
    let request = &envelope.spec.request;
    let mut pick = match cheaper.choose(attempt, request, envelope.spec.urgency) {
        Choice::Go(pick) => pick,
        Choice::Wait { wait, .. } => return Ok(Budgeted::Wait(wait)),
        Choice::Refuse { message, .. } => {
            return Ok(refused(envelope, downgrade.route_refused(&message)))
        }
    };
    pick.chosen_because.push_str(&downgrade.note(&route.name));
    Ok(
        match crate::budgets::reserve(
            store,
            budgets,
            envelope,
            &cheaper.name,
            pick,
            Pass::Downgraded,
        )
        .await?
        {
            BudgetDecision::Reserved(pick) => Budgeted::Go(cheaper, pick),
            BudgetDecision::NotRunnable => Budgeted::NotRunnable,
            BudgetDecision::Refused(why) => refused(envelope, why),
            // A second pass refuses rather than downgrades again.
            BudgetDecision::Downgrade(again) => refused(envelope, again.exceeded.to_string()),
        },
    )
}

fn refused(envelope: &Envelope, message: String) -> Budgeted {
    tracing::info!(job = %envelope.id, %message, "refused by a budget");
    Budgeted::Refused(Failure::new(JobFailure::BudgetExceeded, message))
}
