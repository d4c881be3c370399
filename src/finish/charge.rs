//! What an answer costs: the tier a call was priced at, and its cost record.

use crate::pricing::PicoUsd;
use crate::providers::Usage;
use crate::router::{Deployment, Route};
use crate::store::CostRecord;
pub use crate::tier::Tier;

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
        tier,
        usage,
        price,
        amount,
        realtime_amount,
        route: route.name.clone(),
        fallback_from,
    }
}
