//! What an answer costs: the tier a call was priced at, and its cost record.

use crate::pricing::PicoUsd;
use crate::providers::Usage;
use crate::router::{Deployment, Route};
use crate::store::CostRecord;

/// The tier a call was made on, and priced at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    Realtime,
    Batch,
    /// OpenAI's flex service tier: the real-time endpoint with `service_tier: "flex"`.
    Flex,
}

impl Tier {
    /// As stored on cost records (and shown by reports grouped by tier).
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Realtime => "realtime",
            Tier::Batch => "batch",
            Tier::Flex => "flex",
        }
    }

    /// The kind of endpoint the call used, as attempts record it: a flex call is a call of
    /// the real-time endpoint (its `chosen_because` says it was flex).
    pub fn endpoint(self) -> &'static str {
        match self {
            Tier::Batch => "batch",
            Tier::Realtime | Tier::Flex => "realtime",
        }
    }
}

/// The cost record of a call of `deployment` on `tier` for a job on `route`: the amount at
/// the tier's price (0, flagged, when unknown), what the real-time price would have charged
/// (reports call the difference "batch saved") and, for a fallback, what the route's primary
/// would have charged on the same tier.
pub fn charge(usage: Usage, deployment: &Deployment, route: &Route, tier: Tier) -> CostRecord {
    let price_on = |d: &Deployment| match tier {
        Tier::Realtime => d.price,
        // A primary without the tier would have run on the default one.
        Tier::Batch => d.batch.as_ref().map_or(d.price, |b| b.price),
        Tier::Flex => d.flex.map_or(d.price, |f| f.price),
    };
    let price = price_on(deployment);
    let amount = price.map_or(PicoUsd(0), |p| p.cost(&usage));
    let realtime_amount = deployment.price.map_or(PicoUsd(0), |p| p.cost(&usage));
    let fallback_from = route
        .primary()
        .filter(|primary| primary.name != deployment.name)
        .map(|primary| {
            (
                primary.name.clone(),
                price_on(primary).map(|p| p.cost(&usage)),
            )
        });
    CostRecord {
        tier: tier.as_str(),
        usage,
        price,
        amount,
        realtime_amount,
        route: route.name.clone(),
        fallback_from,
    }
}
