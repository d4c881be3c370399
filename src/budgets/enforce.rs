//! Enforcing budgets: the estimate a job reserves, the worker's hook between the router's
//! pick and the attempt, and the check that refuses new jobs at the API while a `reject`
//! budget is spent.

use super::{Budget, Budgets, Exceeded, OnExceed};
use crate::job::{ChatRequest, Envelope};
use crate::pricing::{PicoUsd, Price};
use crate::providers::Usage;
use crate::router::{Choice, Deployment, Pick, Route, Router};
use crate::store::budgets::{Hold, Reserved};
use crate::store::{Store, StoreError};
use chrono::{DateTime, Utc};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

/// The most a call of `request` can cost on `deployment`: the prompt estimate at the input
/// price plus the answer's bound (`max_completion_tokens`, `max_tokens`, else the
/// deployment's default) at the output price, both counted as the router counts them for
/// the keys' buckets ([`Deployment::estimate_split`]), on the request as the deployment's
/// overrides reshape it. `None` when the deployment's price is unknown: such a job reserves
/// nothing (its cost is recorded as unpriced, 0), and its attempt says so.
pub fn estimate(deployment: &Deployment, request: &ChatRequest) -> Option<PicoUsd> {
    estimate_at(deployment, request, deployment.price)
}

/// [`estimate`] at `price` (the batch tier's, say) instead of the deployment's real-time one.
fn estimate_at(
    deployment: &Deployment,
    request: &ChatRequest,
    price: Option<Price>,
) -> Option<PicoUsd> {
    let tokens = deployment.estimate_split(&deployment.overrides.apply(request));
    price.map(|price| cost_of(price, tokens.prompt, tokens.completion))
}

/// `prompt` tokens at the input price and `completion` at the output price. Cache reads
/// and writes are not foreseen: the reservation is reconciled with the actual cost anyway.
fn cost_of(price: Price, prompt: u32, completion: u32) -> PicoUsd {
    price.cost(&Usage {
        prompt_tokens: u64::from(prompt),
        completion_tokens: u64::from(completion),
        cached_tokens: 0,
        cache_write_tokens: 0,
    })
}

/// What the worker does after [`admit`].
#[derive(Debug)]
pub enum Verdict {
    /// Make the attempt on this route with this pick: the job's budgets hold its estimate
    /// (the route is another one when a budget downgraded the job).
    Go(Arc<Route>, Pick),
    /// The job is settled (failed with `budget_exceeded`, or no longer runnable): ack.
    Ack,
    /// The downgrade route has no capacity now: come back later, not an attempt.
    Wait(Duration),
}

/// The worker's budget step, between the router's `pick` for attempt `attempt` and the
/// attempt itself: reserves the job's estimate on every budget it counts against. A budget
/// without room fails the job (`reject`) or sends it to its cheaper route (`downgrade`),
/// which must then fit every budget in turn; a pick not used is handed back.
pub async fn admit(
    store: &Store,
    router: &Router,
    envelope: &Envelope,
    route: Arc<Route>,
    pick: Pick,
    attempt: u32,
) -> Result<Verdict, StoreError> {
    let budgets = store.budgets().clone();
    let matching: Vec<&Budget> = budgets
        .matching(&envelope.tenant, &envelope.spec.tags)
        .collect();
    if matching.is_empty() {
        return Ok(Verdict::Go(route, pick));
    }
    let exceeded = match reserve(store, &budgets, &matching, envelope, pick).await? {
        Reservation::Held(pick) => return Ok(Verdict::Go(route, pick)),
        Reservation::NotRunnable => return Ok(Verdict::Ack),
        Reservation::Refused(budget, exceeded) => match &budget.on_exceed {
            OnExceed::Reject => return fail(store, envelope, exceeded.to_string()).await,
            OnExceed::Downgrade(to) if *to == route.name => {
                let why =
                    format!("{exceeded} (the job is already on its downgrade route \"{to}\")");
                return fail(store, envelope, why).await;
            }
            OnExceed::Downgrade(to) => (budget.name.clone(), to.clone(), exceeded),
        },
    };
    let (budget, to, exceeded) = exceeded;
    let Some(cheaper) = router.route(&to).cloned() else {
        // Validation names an unknown downgrade route; a router built otherwise may lack it.
        let why = format!("{exceeded} (its downgrade route \"{to}\" does not exist)");
        return fail(store, envelope, why).await;
    };
    let request = &envelope.spec.request;
    let mut pick = match cheaper.choose(attempt, request, envelope.spec.urgency) {
        Choice::Go(pick) => pick,
        Choice::Wait { wait, .. } => return Ok(Verdict::Wait(wait)),
        Choice::Refuse { message, .. } => {
            let why =
                format!("{exceeded} (its downgrade route \"{to}\" cannot take it: {message})");
            return fail(store, envelope, why).await;
        }
    };
    pick.chosen_because = format!(
        "{}; downgraded from route \"{}\" to \"{to}\" by budget \"{budget}\"",
        pick.chosen_because, route.name
    );
    match reserve(store, &budgets, &matching, envelope, pick).await? {
        Reservation::Held(pick) => Ok(Verdict::Go(cheaper, pick)),
        Reservation::NotRunnable => Ok(Verdict::Ack),
        Reservation::Refused(_, exceeded) => {
            let why = format!("{exceeded} (even after downgrading to route \"{to}\")");
            fail(store, envelope, why).await
        }
    }
}

enum Reservation<'a> {
    Held(Pick),
    Refused(&'a Budget, Exceeded),
    NotRunnable,
}

/// Reserves the estimate of `pick` on `matching`; hands the pick back unless it is held.
async fn reserve<'a>(
    store: &Store,
    budgets: &Budgets,
    matching: &[&'a Budget],
    envelope: &Envelope,
    mut pick: Pick,
) -> Result<Reservation<'a>, StoreError> {
    let estimate = estimate(&pick.deployment, &envelope.spec.request);
    if estimate.is_none() {
        pick.chosen_because
            .push_str("; budgets: price unknown, so the estimate reserved is 0");
    }
    let amount = estimate.unwrap_or_default();
    let now = budgets.now();
    match store
        .reserve(envelope.id, holds(matching, envelope, now, amount))
        .await
    {
        Ok(Reserved::Held) => Ok(Reservation::Held(pick)),
        Ok(Reserved::NotRunnable) => {
            pick.abandon();
            Ok(Reservation::NotRunnable)
        }
        Ok(Reserved::Refused {
            index,
            spent,
            reserved,
        }) => {
            pick.abandon();
            let budget = matching[index];
            let exceeded = exceeded(budget, &envelope.tenant, now, spent, reserved, Some(amount));
            Ok(Reservation::Refused(budget, exceeded))
        }
        Err(e) => {
            pick.abandon();
            Err(e)
        }
    }
}

/// One hold of `amount` on each of `matching`, in the period `now` falls in.
fn holds(
    matching: &[&Budget],
    envelope: &Envelope,
    now: DateTime<Utc>,
    amount: PicoUsd,
) -> Vec<Hold> {
    matching
        .iter()
        .map(|budget| Hold {
            budget: budget.name.clone(),
            tenant: envelope.tenant.clone(),
            period_start: budget.period.start(now).timestamp_millis(),
            limit: budget.limit,
            amount,
        })
        .collect()
}

/// What [`reserve_for_batch`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchHold {
    /// The job's budgets hold its estimate at the batch price: it may join a provider batch.
    Held,
    /// The job is finished or cancelled: ack.
    NotRunnable,
    /// A budget has no room: the job takes the real-time path instead, where [`admit`]
    /// applies that budget's `reject` or `downgrade`. The text says which budget.
    Refused(String),
}

/// The batch tier's budget step, before a job joins a provider batch: reserves its maximum
/// cost at `deployment`'s batch price (its real-time price when the batch price is
/// unknown) on every budget it counts against, as [`admit`] does for a real-time attempt.
pub async fn reserve_for_batch(
    store: &Store,
    envelope: &Envelope,
    deployment: &Deployment,
) -> Result<BatchHold, StoreError> {
    let budgets = store.budgets().clone();
    let matching: Vec<&Budget> = budgets
        .matching(&envelope.tenant, &envelope.spec.tags)
        .collect();
    if matching.is_empty() {
        return Ok(BatchHold::Held);
    }
    let price = deployment
        .batch
        .as_ref()
        .and_then(|b| b.price)
        .or(deployment.price);
    let amount = estimate_at(deployment, &envelope.spec.request, price).unwrap_or_default();
    let now = budgets.now();
    Ok(
        match store
            .reserve(envelope.id, holds(&matching, envelope, now, amount))
            .await?
        {
            Reserved::Held => BatchHold::Held,
            Reserved::NotRunnable => BatchHold::NotRunnable,
            Reserved::Refused {
                index,
                spent,
                reserved,
            } => {
                let budget = matching[index];
                let exceeded =
                    exceeded(budget, &envelope.tenant, now, spent, reserved, Some(amount));
                BatchHold::Refused(exceeded.to_string())
            }
        },
    )
}

async fn fail(store: &Store, envelope: &Envelope, message: String) -> Result<Verdict, StoreError> {
    tracing::info!(job = %envelope.id, %message, "refused by a budget");
    store
        .finish_failed(envelope.id, None, "budget_exceeded".into(), message, None)
        .await?;
    Ok(Verdict::Ack)
}

fn exceeded(
    budget: &Budget,
    tenant: &str,
    now: DateTime<Utc>,
    spent: PicoUsd,
    reserved: PicoUsd,
    needed: Option<PicoUsd>,
) -> Exceeded {
    let scope = match &budget.tenant {
        Some(_) => budget.scope(),
        // A tag budget without a tenant keeps each tenant's total apart: say whose this is.
        None => format!("{} in tenant {tenant}", budget.scope()),
    };
    Exceeded {
        budget: budget.name.clone(),
        scope,
        period: budget.period,
        limit: budget.limit,
        spent,
        reserved,
        needed,
        resets_at: budget.period.next_start(budget.period.start(now)),
    }
}

/// The first `reject` budget that one of `envelopes` counts against and that is already
/// spent (`spent + reserved >= limit`), so the API can refuse the jobs before recording them
/// instead of queueing jobs that would only fail. Budgets that downgrade never refuse here:
/// their jobs may still fit on the cheaper route.
pub async fn refuse_exhausted(
    store: &Store,
    envelopes: &[crate::job::Envelope],
) -> Result<Option<Exceeded>, StoreError> {
    let budgets = store.budgets();
    let now = budgets.now();
    // One read per budget and tenant, however many jobs (a bulk chunk is 500).
    let mut seen: HashSet<(&str, &str)> = HashSet::new();
    for envelope in envelopes {
        for budget in budgets.matching(&envelope.tenant, &envelope.spec.tags) {
            if budget.on_exceed != OnExceed::Reject
                || !seen.insert((budget.name.as_str(), envelope.tenant.as_str()))
            {
                continue;
            }
            let start = budget.period.start(now);
            let totals = store
                .budget_totals(&budget.name, &envelope.tenant, start.timestamp_millis())
                .await?;
            let spend = i128::from(totals.spent.0) + i128::from(totals.reserved.0);
            if spend >= i128::from(budget.limit.0) {
                return Ok(Some(exceeded(
                    budget,
                    &envelope.tenant,
                    now,
                    totals.spent,
                    totals.reserved,
                    None,
                )));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn request(body: serde_json::Value) -> ChatRequest {
        serde_json::from_value(body).unwrap()
    }

    #[test]
    fn the_estimate_prices_the_prompt_estimate_and_the_answers_bound() {
        let config = Config::builtin();
        let router = Router::new(&config, reqwest::Client::new(), None);
        // gpt-4o-mini: $0.15 in, $0.60 out per million tokens.
        let mini = &router.route("fast").unwrap().chain[0];
        // "tide " × 10 = 50 bytes → 13 tokens, + 4 for the message + 3 for the request.
        let text = "tide ".repeat(10);
        let bounded = request(serde_json::json!({
            "model": "fast", "max_tokens": 100,
            "messages": [{"role": "user", "content": text}]
        }));
        let tokens = mini.estimate_split(&bounded);
        assert_eq!((tokens.prompt, tokens.completion), (20, 100));
        assert_eq!(
            estimate(mini, &bounded),
            Some(PicoUsd(20 * 150_000 + 100 * 600_000))
        );
        // No bound in the request: the default completion estimate (1,024 tokens).
        let open = request(serde_json::json!({
            "model": "fast", "messages": [{"role": "user", "content": text}]
        }));
        assert_eq!(
            estimate(mini, &open),
            Some(PicoUsd(20 * 150_000 + 1024 * 600_000))
        );
        // Claude Sonnet's default_max_tokens (4,096) bounds an open request.
        let sonnet = &router.route("writer").unwrap().chain[0];
        assert_eq!(
            estimate(sonnet, &open),
            Some(PicoUsd(20 * 3_000_000 + 4096 * 15_000_000))
        );
    }

    #[test]
    fn an_unknown_price_estimates_nothing() {
        let mut config = Config::builtin();
        config.deployments.get_mut("gpt-4o-mini").unwrap().price =
            Some(crate::config::PriceSetting::Unknown);
        let router = Router::new(&config, reqwest::Client::new(), None);
        let mini = &router.route("fast").unwrap().chain[0];
        let any = request(serde_json::json!({
            "model": "fast", "messages": [{"role": "user", "content": "hi"}]
        }));
        assert_eq!(estimate(mini, &any), None);
    }
}
