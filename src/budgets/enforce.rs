//! Enforcing budgets: the estimate a job reserves, the worker's step between the router's
//! pick and the attempt, and the check that refuses new jobs at the API when a budget is
//! spent for them (what it has spent leaves no room for their smallest estimate).
//!
//! The worker's step reserves and returns a [`BudgetDecision`]; the worker acts on it
//! (fails the job, or finds a pick on the downgrade route and reserves again), so budgets
//! neither choose deployments nor write a job's transitions.

use super::{Budget, Budgets, Exceeded, OnExceed};
use crate::job::{ChatRequest, Envelope};
use crate::pricing::{PicoUsd, Price};
use crate::providers::Usage;
use crate::router::{Deployment, Pick, Router};
use crate::store::budgets::{Hold, Reserved};
use crate::store::{Store, StoreError};
use chrono::{DateTime, Utc};

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

/// Which reservation of an attempt this is: on the job's own route, or on the route a
/// budget downgraded it to (where any refusal is final).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// On the job's own route.
    First,
    /// On the cheaper route a budget sent it to.
    Downgraded,
}

/// What the job's budgets say about an attempt, for the worker to act on ([`reserve`]).
#[derive(Debug)]
pub enum BudgetDecision {
    /// Every budget the job counts against holds its estimate (or none does): make the
    /// attempt with this pick.
    Reserved(Pick),
    /// The job finished or was cancelled meanwhile: the pick is handed back; ack.
    NotRunnable,
    /// A `downgrade` budget has no room: the pick is handed back, and the job may try the
    /// budget's cheaper route, reserving again there ([`Pass::Downgraded`]).
    Downgrade(Downgrade),
    /// A budget has no room and the job cannot go elsewhere: the pick is handed back; fail
    /// the job `budget_exceeded` with this message.
    Refused(String),
}

/// A budget sending a job to its cheaper route, with the words for each way that can go.
#[derive(Debug, Clone)]
pub struct Downgrade {
    /// The budget that had no room.
    pub budget: String,
    /// The route it sends jobs to.
    pub to: String,
    pub exceeded: Exceeded,
}

impl Downgrade {
    /// The refusal when the downgrade route is not configured (validation names an unknown
    /// route; a router built otherwise may lack it).
    pub fn missing_route(&self) -> String {
        format!(
            "{} (its downgrade route \"{}\" does not exist)",
            self.exceeded, self.to
        )
    }

    /// The refusal when the downgrade route cannot take the job (`message`, the router's).
    pub fn route_refused(&self, message: &str) -> String {
        format!(
            "{} (its downgrade route \"{}\" cannot take it: {message})",
            self.exceeded, self.to
        )
    }

    /// What the downgraded attempt's `chosen_because` adds, from route `from`.
    pub fn note(&self, from: &str) -> String {
        format!(
            "; downgraded from route \"{from}\" to \"{}\" by budget \"{}\"",
            self.to, self.budget
        )
    }
}

/// The worker's budget step, between the router's `pick` for an attempt on `route` and the
/// attempt itself: reserves the job's estimate on every budget it counts against, all or
/// none, and says what follows. A pick not used is handed back.
pub async fn reserve(
    store: &Store,
    budgets: &Budgets,
    envelope: &Envelope,
    route: &str,
    mut pick: Pick,
    pass: Pass,
) -> Result<BudgetDecision, StoreError> {
    let matching: Vec<&Budget> = budgets
        .matching(&envelope.tenant, &envelope.spec.tags)
        .collect();
    if matching.is_empty() {
        return Ok(BudgetDecision::Reserved(pick));
    }
    let estimate = estimate(&pick.deployment, &envelope.spec.request);
    if estimate.is_none() {
        pick.chosen_because
            .push_str("; budgets: price unknown, so the estimate reserved is 0");
    }
    let amount = estimate.unwrap_or_default();
    let now = budgets.now();
    let reserved = store
        .reserve(envelope.id, holds(&matching, envelope, now, amount))
        .await;
    match reserved {
        Ok(Reserved::Held) => Ok(BudgetDecision::Reserved(pick)),
        Ok(Reserved::NotRunnable) => {
            pick.abandon();
            Ok(BudgetDecision::NotRunnable)
        }
        Ok(Reserved::Refused {
            index,
            spent,
            reserved,
        }) => {
            pick.abandon();
            let budget = matching[index];
            let exceeded = exceeded(budget, &envelope.tenant, now, spent, reserved, Some(amount));
            Ok(on_exceeded(budget, exceeded, route, pass))
        }
        Err(e) => {
            pick.abandon();
            Err(e)
        }
    }
}

/// What a budget without room means for a job on `route`: its policy (`reject`, or
/// `downgrade` to a route the job is not on yet), unless the job was downgraded already.
pub fn on_exceeded(budget: &Budget, exceeded: Exceeded, route: &str, pass: Pass) -> BudgetDecision {
    match (&budget.on_exceed, pass) {
        (_, Pass::Downgraded) => BudgetDecision::Refused(format!(
            "{exceeded} (even after downgrading to route \"{route}\")"
        )),
        (OnExceed::Reject, Pass::First) => BudgetDecision::Refused(exceeded.to_string()),
        (OnExceed::Downgrade(to), Pass::First) if to == route => BudgetDecision::Refused(format!(
            "{exceeded} (the job is already on its downgrade route \"{to}\")"
        )),
        (OnExceed::Downgrade(to), Pass::First) => BudgetDecision::Downgrade(Downgrade {
            budget: budget.name.clone(),
            to: to.clone(),
            exceeded,
        }),
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
    /// A budget has no room: the job takes the real-time path instead, where [`reserve`]
    /// applies that budget's `reject` or `downgrade`. The text says which budget.
    Refused(String),
}

/// The batch tier's budget step, before a job joins a provider batch: reserves its maximum
/// cost at `deployment`'s batch price (its real-time price when the batch price is
/// unknown) on every budget it counts against, as [`reserve`] does for a real-time attempt.
pub async fn reserve_for_batch(
    store: &Store,
    budgets: &Budgets,
    envelope: &Envelope,
    deployment: &Deployment,
) -> Result<BatchHold, StoreError> {
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

/// The first budget that has no room left for any of `envelopes` that count against it, so
/// the API refuses them (402) before recording jobs that could only fail.
///
/// A budget is spent for a job when what it has *spent* plus the smallest estimate the job
/// could reserve ([`smallest_estimate`]) is over its limit: no attempt of that job can fit,
/// whichever deployment serves it, until the period resets. What running jobs hold is left
/// out: they release their reservations (usually for less) within one call, and a job
/// refused now for them would fit a moment later; the worker refuses it then if it still
/// does not fit. Spend only grows within a period, so a refusal here is never premature.
/// Jobs of several submitted at once are refused only when even the smallest does not fit.
pub async fn refuse_exhausted(
    store: &Store,
    budgets: &Budgets,
    router: &Router,
    envelopes: &[crate::job::Envelope],
) -> Result<Option<Exceeded>, StoreError> {
    let now = budgets.now();
    // Per budget and tenant, the smallest estimate of the jobs counting against it: one read
    // per pair, however many jobs (a bulk chunk is 500), in the order they are first met.
    let mut smallest: Vec<(&Budget, &str, PicoUsd)> = Vec::new();
    for envelope in envelopes {
        for budget in budgets.matching(&envelope.tenant, &envelope.spec.tags) {
            let Some(estimate) = smallest_estimate(router, budget, envelope) else {
                continue;
            };
            let tenant = envelope.tenant.as_str();
            let known = smallest
                .iter()
                .position(|entry| entry.0.name == budget.name && entry.1 == tenant);
            match known {
                Some(i) => smallest[i].2 = smallest[i].2.min(estimate),
                None => smallest.push((budget, tenant, estimate)),
            }
        }
    }
    for (budget, tenant, estimate) in smallest {
        let start = budget.period.start(now);
        let totals = store
            .budget_totals(&budget.name, tenant, start.timestamp_millis())
            .await?;
        if i128::from(totals.spent.0) + i128::from(estimate.0) > i128::from(budget.limit.0) {
            return Ok(Some(exceeded(
                budget,
                tenant,
                now,
                totals.spent,
                totals.reserved,
                Some(estimate),
            )));
        }
    }
    Ok(None)
}

/// The least `envelope`'s job could reserve against `budget`: its estimate on each deployment
/// that may serve it (its route's chain; at the batch price too, where a deployment has a
/// batch tier and the job may wait for it; and the downgrade route's chain when `budget`
/// downgrades), the smallest of them. `None` when no route serves its model: such a job
/// fails `unknown_model` without reserving anything.
fn smallest_estimate(router: &Router, budget: &Budget, envelope: &Envelope) -> Option<PicoUsd> {
    let request = &envelope.spec.request;
    let mut routes = vec![router.route(&request.model)?];
    if let OnExceed::Downgrade(to) = &budget.on_exceed {
        routes.extend(router.route(to));
    }
    let may_batch = envelope.spec.urgency != crate::job::Urgency::Realtime;
    routes
        .iter()
        .flat_map(|route| route.chain.iter())
        .flat_map(|deployment| {
            let batch = deployment
                .batch
                .as_ref()
                .filter(|_| may_batch)
                .and_then(|b| b.price);
            [deployment.price, batch.or(deployment.price)]
                .map(|price| estimate_at(deployment, request, price).unwrap_or_default())
        })
        .min()
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
        let config = Config::builtin().resolve().unwrap();
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
        let router = Router::new(&config.resolve().unwrap(), reqwest::Client::new(), None);
        let mini = &router.route("fast").unwrap().chain[0];
        let any = request(serde_json::json!({
            "model": "fast", "messages": [{"role": "user", "content": "hi"}]
        }));
        assert_eq!(estimate(mini, &any), None);
    }

    fn budget(on_exceed: OnExceed) -> (Budget, Exceeded) {
        let budget = Budget {
            name: "daily".into(),
            tenant: Some("acme".into()),
            tag: None,
            period: crate::budgets::Period::Day,
            limit: PicoUsd(100),
            on_exceed,
            warn_at: Vec::new(),
        };
        let exceeded = exceeded(
            &budget,
            "acme",
            Utc::now(),
            PicoUsd(90),
            PicoUsd(5),
            Some(PicoUsd(10)),
        );
        (budget, exceeded)
    }

    #[test]
    fn a_reject_budget_refuses_with_what_it_has_spent() {
        let (budget, exceeded) = budget(OnExceed::Reject);
        let BudgetDecision::Refused(why) =
            on_exceeded(&budget, exceeded.clone(), "fast", Pass::First)
        else {
            panic!("a reject budget refuses");
        };
        assert_eq!(why, exceeded.to_string());
    }

    #[test]
    fn a_downgrade_budget_sends_the_job_on_once_and_only_from_another_route() {
        let (budget, exceeded) = budget(OnExceed::Downgrade("cheap".into()));
        let BudgetDecision::Downgrade(downgrade) =
            on_exceeded(&budget, exceeded.clone(), "fast", Pass::First)
        else {
            panic!("a downgrade budget sends the job to its route");
        };
        assert_eq!(
            (downgrade.budget.as_str(), downgrade.to.as_str()),
            ("daily", "cheap")
        );
        assert!(downgrade
            .note("fast")
            .contains("from route \"fast\" to \"cheap\""));
        let BudgetDecision::Refused(why) =
            on_exceeded(&budget, exceeded.clone(), "cheap", Pass::First)
        else {
            panic!("a job already on the downgrade route is refused");
        };
        assert!(
            why.ends_with("(the job is already on its downgrade route \"cheap\")"),
            "{why}"
        );
        let BudgetDecision::Refused(why) =
            on_exceeded(&budget, exceeded, "cheap", Pass::Downgraded)
        else {
            panic!("a downgraded job is never downgraded again");
        };
        assert!(
            why.ends_with("(even after downgrading to route \"cheap\")"),
            "{why}"
        );
    }
}
