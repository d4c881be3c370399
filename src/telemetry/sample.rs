//! The gauges read when `/metrics` is scraped, from where each figure lives: the queue's own
//! counts, the store's oldest queued job and open provider batches, this process's circuits
//! and keys (the router), each budget's running totals. Read on scrape rather than by a
//! sampler task, so an idle process does no work and a scrape is never stale; each read is
//! an index seek or the broker's count (see [`crate::store::gauges`], `Store::open_provider_batches`, [`Queue::depths`]),
//! so a scrape stays cheap however many jobs the store holds.
//!
//! A figure that cannot be read now (a broker down, a store busy) keeps its last value and
//! is logged at debug level: a scrape never fails for one source.

use super::metrics::{
    Metrics, BUDGET_RESERVED, BUDGET_SPENT, CIRCUIT, KEY_REMAINING, KEY_RESTING, OLDEST_QUEUED,
    PROVIDER_BATCHES, QUEUE_DEAD, QUEUE_DELAYED, QUEUE_READY,
};
use crate::budgets::Budgets;
use crate::config::ResolvedConfig;
use crate::queue::Queue;
use crate::router::health::CircuitState;
use crate::router::Router;
use crate::store::{now_ms, Store};
use std::time::Duration;

/// How long one source may take before the scrape goes on without it.
const SOURCE_TIMEOUT: Duration = Duration::from_secs(2);

/// Where the gauges are read from: an app's parts.
pub struct Sources<'a> {
    pub config: &'a ResolvedConfig,
    pub store: &'a Store,
    pub queue: &'a dyn Queue,
    pub router: &'a Router,
    pub budgets: &'a Budgets,
}

/// Reads every gauge from `sources` into `metrics`. Does nothing when metrics are off.
pub async fn refresh(metrics: &Metrics, sources: &Sources<'_>) {
    if !metrics.is_on() {
        return;
    }
    let queue = tokio::time::timeout(SOURCE_TIMEOUT, sources.queue.depths());
    match queue.await {
        Ok(Ok(depths)) => {
            for depth in &depths.urgencies {
                let urgency = [("urgency", depth.urgency.as_str().to_string())];
                metrics.set(QUEUE_READY, &urgency, depth.ready as f64);
                metrics.set(QUEUE_DELAYED, &urgency, depth.delayed as f64);
            }
            metrics.set(QUEUE_DEAD, &[], depths.dead as f64);
        }
        Ok(Err(e)) => tracing::debug!(error = %e, "metrics: cannot count the queue's messages"),
        Err(_) => tracing::debug!("metrics: the queue did not count its messages in time"),
    }
    store_gauges(metrics, sources.store).await;
    router_gauges(metrics, sources.router);
    budget_gauges(metrics, sources).await;
}

async fn store_gauges(metrics: &Metrics, store: &Store) {
    match tokio::time::timeout(SOURCE_TIMEOUT, store.oldest_queued()).await {
        Ok(Ok(oldest)) => {
            let now = now_ms();
            for (urgency, at) in oldest {
                let age = at.map_or(0.0, |at| (now - at).max(0) as f64 / 1000.0);
                metrics.set(
                    OLDEST_QUEUED,
                    &[("urgency", urgency.as_str().to_string())],
                    age,
                );
            }
        }
        Ok(Err(e)) => tracing::debug!(error = %e, "metrics: cannot read the oldest queued jobs"),
        Err(_) => tracing::debug!("metrics: the store did not answer in time"),
    }
    match tokio::time::timeout(SOURCE_TIMEOUT, store.open_provider_batches()).await {
        Ok(Ok(counts)) => {
            // Ended batches stay in the store: only the states before the end are counted,
            // each one every time, so a state that empties reads 0.
            for state in ["collecting", "submitting", "submitted"] {
                let n = counts
                    .iter()
                    .find(|(s, _)| s == state)
                    .map_or(0, |(_, n)| *n);
                metrics.set(PROVIDER_BATCHES, &[("state", state.to_string())], n as f64);
            }
        }
        Ok(Err(e)) => tracing::debug!(error = %e, "metrics: cannot count provider batches"),
        Err(_) => tracing::debug!("metrics: the store did not answer in time"),
    }
}

/// This process's own view of each deployment: its circuit and its keys.
fn router_gauges(metrics: &Metrics, router: &Router) {
    const STATES: [(CircuitState, &str); 3] = [
        (CircuitState::Closed, "closed"),
        (CircuitState::HalfOpen, "half_open"),
        (CircuitState::Open, "open"),
    ];
    for view in router.views() {
        for (state, name) in STATES {
            let labels = [
                ("deployment", view.name.clone()),
                ("state", name.to_string()),
            ];
            let on = if view.health.state == state { 1.0 } else { 0.0 };
            metrics.set(CIRCUIT, &labels, on);
        }
        for key in &view.keys {
            let limits = [
                ("requests_per_minute", key.requests_remaining),
                ("tokens_per_minute", key.tokens_remaining),
                ("requests_per_day", key.requests_today_remaining),
            ];
            for (limit, remaining) in limits {
                if let Some(remaining) = remaining {
                    let labels = [
                        ("deployment", view.name.clone()),
                        ("key", key.id.clone()),
                        ("limit", limit.to_string()),
                    ];
                    metrics.set(KEY_REMAINING, &labels, f64::from(remaining));
                }
            }
            let resting_ms = key.cooldown_ms.max(key.spent_ms).unwrap_or(0);
            let labels = [("deployment", view.name.clone()), ("key", key.id.clone())];
            metrics.set(KEY_RESTING, &labels, resting_ms as f64 / 1000.0);
        }
    }
}

/// Each budget's spend and reservations this period as fractions of its limit, for every
/// tenant it applies to: two reads of one row each per budget and tenant.
async fn budget_gauges(metrics: &Metrics, sources: &Sources<'_>) {
    if sources.budgets.all().is_empty() {
        return;
    }
    let tenants: Vec<&str> = sources
        .config
        .tenants
        .iter()
        .map(|t| t.name.as_str())
        .collect();
    let views = crate::budgets::view::views(sources.store, sources.budgets, &tenants);
    match tokio::time::timeout(SOURCE_TIMEOUT, views).await {
        Ok(Ok(views)) => {
            for view in views {
                if view.limit_pico_usd <= 0 {
                    continue;
                }
                let limit = view.limit_pico_usd as f64;
                let labels = [("budget", view.name), ("tenant", view.tenant)];
                metrics.set(BUDGET_SPENT, &labels, view.spent_pico_usd as f64 / limit);
                metrics.set(
                    BUDGET_RESERVED,
                    &labels,
                    view.reserved_pico_usd as f64 / limit,
                );
            }
        }
        Ok(Err(e)) => tracing::debug!(error = %e, "metrics: cannot read the budgets"),
        Err(_) => tracing::debug!("metrics: the store did not answer in time"),
    }
}
