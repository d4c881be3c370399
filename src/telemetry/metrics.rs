//! Prometheus metrics: every metric's name ([`ALL`], with its type and help text) and one
//! recording helper per event, so a stage that counts something spends one line on it.
//!
//! # One registry per app, not a global recorder
//!
//! The `metrics` crate's macros write to a recorder; usually one installed globally, once
//! per process. Sluice's integration tests run many apps in one process, each with its own
//! store, queue and tenants: with one global recorder their counters would add up, and the
//! gauges each app reads from its own store would overwrite one another. So each
//! [`Metrics`] (one per [`crate::app::App`]) owns a `PrometheusRecorder`, and every helper
//! records through it with [`metrics::with_local_recorder`], a scope of one synchronous
//! call (never held across an `.await`, so it is right on any runtime thread). In
//! production a process runs one app, which is exactly Prometheus' model: the metrics of a
//! cluster are per process, and Prometheus adds them up.
//!
//! # Labels
//!
//! Every label's values come from the configuration or from a fixed list: tenant, route,
//! deployment and key id (never a secret: keys are named by their `id`), urgency, tier,
//! status, failure kind. A model name a client sent that no route or deployment serves is
//! counted as `route="(unknown)"`, so a client cannot mint series. No job id, no tag.
//!
//! # Units
//!
//! Durations in seconds (histograms), money in pico-USD (an integer counter, exact: one
//! USD is 10¹² pico-USD, so `sluice_cost_picousd_total / 1e12` is dollars), as Sluice's
//! cost records keep it; tokens as counts.

use crate::config::ResolvedConfig;
use crate::failure::JobFailure;
use crate::job::{Envelope, Urgency};
use crate::store::{AttemptOutcome, AttemptRecord, CostRecord};
use crate::tier::Tier;
use metrics::{counter, gauge, histogram, Unit};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

pub const JOBS_SUBMITTED: &str = "sluice_jobs_submitted_total";
pub const JOBS_FINISHED: &str = "sluice_jobs_finished_total";
pub const JOBS_PARKED: &str = "sluice_jobs_parked_total";
pub const DEAD_LETTERED: &str = "sluice_dead_lettered_total";
pub const ATTEMPTS: &str = "sluice_attempts_total";
pub const FALLBACKS: &str = "sluice_fallbacks_total";
pub const COST: &str = "sluice_cost_picousd_total";
pub const BATCH_SAVINGS: &str = "sluice_batch_savings_picousd_total";
pub const TOKENS: &str = "sluice_tokens_total";
pub const BULK_LINES: &str = "sluice_bulk_lines_total";
pub const QUEUE_WAIT: &str = "sluice_job_queue_wait_seconds";
pub const PROVIDER_CALL: &str = "sluice_provider_call_seconds";
pub const FIRST_TOKEN: &str = "sluice_time_to_first_token_seconds";
pub const JOB_DURATION: &str = "sluice_job_duration_seconds";
pub const QUEUE_READY: &str = "sluice_queue_ready_messages";
pub const QUEUE_DELAYED: &str = "sluice_queue_delayed_messages";
pub const QUEUE_DEAD: &str = "sluice_queue_dead_letters";
pub const OLDEST_QUEUED: &str = "sluice_queue_oldest_job_age_seconds";
pub const CIRCUIT: &str = "sluice_circuit_state";
pub const KEY_REMAINING: &str = "sluice_key_remaining";
pub const KEY_RESTING: &str = "sluice_key_resting_seconds";
pub const BUDGET_SPENT: &str = "sluice_budget_spent_ratio";
pub const BUDGET_RESERVED: &str = "sluice_budget_reserved_ratio";
pub const PROVIDER_BATCHES: &str = "sluice_provider_batches";

/// A metric's type, as Prometheus names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Every metric: name, type, unit and help text (the `# HELP` line). `docs/observability.md`
/// lists each with its labels; a test checks that it names all of them.
pub const ALL: &[(&str, Kind, Unit, &str)] = &[
    (JOBS_SUBMITTED, Kind::Counter, Unit::Count, "Jobs accepted (recorded and queued), by tenant, urgency and route."),
    (JOBS_FINISHED, Kind::Counter, Unit::Count, "Jobs that reached a final state, by tenant, urgency, route, status and failure kind."),
    (JOBS_PARKED, Kind::Counter, Unit::Count, "Deliveries parked on the delay ladder: no capacity yet (capacity) or a failed attempt's back-off (retry)."),
    (DEAD_LETTERED, Kind::Counter, Unit::Count, "Messages this process dead-lettered or failed for their delivery limit, by reason."),
    (ATTEMPTS, Kind::Counter, Unit::Count, "Provider calls, by deployment, key id, tier and outcome."),
    (FALLBACKS, Kind::Counter, Unit::Count, "Answers given by a deployment other than the route's primary."),
    (COST, Kind::Counter, Unit::Count, "Cost charged, in pico-USD (1e-12 USD), by tenant, route, deployment and tier."),
    (BATCH_SAVINGS, Kind::Counter, Unit::Count, "What the batch and flex tiers saved against the real-time price, in pico-USD."),
    (TOKENS, Kind::Counter, Unit::Count, "Tokens charged, by tenant, route, deployment, tier and type."),
    (BULK_LINES, Kind::Counter, Unit::Count, "Bulk lines validated, by tenant and outcome (accepted, rejected)."),
    (QUEUE_WAIT, Kind::Histogram, Unit::Seconds, "Submission to the start of the first attempt, by urgency and deployment."),
    (PROVIDER_CALL, Kind::Histogram, Unit::Seconds, "One provider call, by deployment, tier and outcome (ok, failed)."),
    (FIRST_TOKEN, Kind::Histogram, Unit::Seconds, "Start of a call to its first token, by deployment."),
    (JOB_DURATION, Kind::Histogram, Unit::Seconds, "Submission to a final state, by urgency, deployment and status."),
    (QUEUE_READY, Kind::Gauge, Unit::Count, "Messages ready for a worker, by urgency."),
    (QUEUE_DELAYED, Kind::Gauge, Unit::Count, "Messages parked on the delay ladder, by urgency."),
    (QUEUE_DEAD, Kind::Gauge, Unit::Count, "Messages held in the dead letters."),
    (OLDEST_QUEUED, Kind::Gauge, Unit::Seconds, "Age of the oldest job still queued (not started), by urgency; 0 when none."),
    (CIRCUIT, Kind::Gauge, Unit::Count, "1 for each deployment's circuit state (closed, half_open, open), 0 for the others."),
    (KEY_REMAINING, Kind::Gauge, Unit::Count, "A key's capacity left, by deployment, key id and limit."),
    (KEY_RESTING, Kind::Gauge, Unit::Seconds, "Seconds a key has left of a 429 cool-down or a spent-credit rest."),
    (BUDGET_SPENT, Kind::Gauge, Unit::Count, "A budget's spend this period as a fraction of its limit, by budget and tenant."),
    (BUDGET_RESERVED, Kind::Gauge, Unit::Count, "A budget's reservations (running jobs' estimates) as a fraction of its limit."),
    (PROVIDER_BATCHES, Kind::Gauge, Unit::Count, "Provider batches, by state."),
];

/// Histogram bucket bounds, in seconds: from a fast call (5 ms) to a batch job's day.
const BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
    3600.0, 14400.0, 86400.0,
];

/// The `route` label of a model name no route or deployment serves.
pub const UNKNOWN_ROUTE: &str = "(unknown)";

/// This app's metrics (see the module's doc); cheap to clone. [`Metrics::off`] records
/// nothing (`[telemetry] metrics = false`).
#[derive(Clone)]
pub struct Metrics {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    /// The model names a job may ask for (routes and deployments): the `route` label's
    /// values.
    models: HashSet<String>,
}

/// The labels a job carries through every metric about it.
#[derive(Debug, Clone)]
pub struct JobLabels {
    pub tenant: String,
    pub urgency: Urgency,
    pub route: String,
}

/// How a job ended, for [`Metrics::job_finished`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    Succeeded,
    Failed(JobFailure),
    Cancelled,
}

/// Why a delivery was parked on the delay ladder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parked {
    /// No deployment or key had room (or a budget's reservations): not an attempt.
    Capacity,
    /// A failed attempt's back-off before the next.
    Retry,
}

impl Metrics {
    /// The metrics of an app running `config`: recording unless `[telemetry] metrics = false`.
    pub fn new(config: &ResolvedConfig) -> Metrics {
        if !config.telemetry.metrics {
            return Metrics::off();
        }
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
            .expect("the bucket list is not empty")
            .build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            for &(name, kind, unit, help) in ALL {
                match kind {
                    Kind::Counter => metrics::describe_counter!(name, unit, help),
                    Kind::Gauge => metrics::describe_gauge!(name, unit, help),
                    Kind::Histogram => metrics::describe_histogram!(name, unit, help),
                }
            }
        });
        let models = config
            .routes
            .keys()
            .chain(config.deployments.keys())
            .cloned()
            .collect();
        Metrics {
            inner: Some(Arc::new(Inner {
                recorder,
                handle,
                models,
            })),
        }
    }

    /// Metrics that record nothing.
    pub fn off() -> Metrics {
        Metrics { inner: None }
    }

    pub fn is_on(&self) -> bool {
        self.inner.is_some()
    }

    /// The Prometheus text exposition of everything recorded, or `None` when off.
    pub fn render(&self) -> Option<String> {
        self.inner.as_ref().map(|inner| inner.handle.render())
    }

    /// Folds the histograms' recent samples into their buckets: [`Metrics::render`] does it
    /// too, and [`Metrics::run_upkeep`] does it every few seconds, so a process nobody scrapes
    /// does not hold every sample.
    fn upkeep(&self) {
        if let Some(inner) = &self.inner {
            inner.handle.run_upkeep();
        }
    }

    /// Runs upkeep every five seconds until `stop`; returns at once when off.
    pub async fn run_upkeep(self, stop: tokio_util::sync::CancellationToken) {
        if !self.is_on() {
            return;
        }
        let mut every = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = every.tick() => self.upkeep(),
            }
        }
    }

    fn record(&self, f: impl FnOnce(&Inner)) {
        if let Some(inner) = &self.inner {
            metrics::with_local_recorder(&inner.recorder, || f(inner));
        }
    }

    /// The labels of `envelope`'s job.
    pub fn job(&self, envelope: &Envelope) -> JobLabels {
        let spec = &envelope.spec;
        self.labels(&envelope.tenant, spec.urgency, &spec.request.model)
    }

    /// The labels of a job of `tenant` asking for `model`.
    pub fn labels(&self, tenant: &str, urgency: Urgency, model: &str) -> JobLabels {
        let known = self
            .inner
            .as_ref()
            .is_some_and(|i| i.models.contains(model));
        JobLabels {
            tenant: tenant.to_string(),
            urgency,
            route: if known { model } else { UNKNOWN_ROUTE }.to_string(),
        }
    }

    /// A job accepted.
    pub fn job_submitted(&self, job: &JobLabels) {
        self.record(|_| {
            counter!(JOBS_SUBMITTED, "tenant" => job.tenant.clone(), "urgency" => job.urgency.as_str(), "route" => job.route.clone()).increment(1);
        });
    }

    /// Job `id` ended `how`, its last attempt (if any) on `deployment`.
    pub fn job_finished(&self, job: &JobLabels, id: Uuid, how: Finished, deployment: Option<&str>) {
        let (status, kind) = match how {
            Finished::Succeeded => ("succeeded", ""),
            Finished::Failed(failure) => ("failed", failure.as_str()),
            Finished::Cancelled => ("cancelled", ""),
        };
        let took = since_submission(id, crate::store::now_ms());
        self.record(|_| {
            counter!(JOBS_FINISHED, "tenant" => job.tenant.clone(), "urgency" => job.urgency.as_str(), "route" => job.route.clone(), "status" => status, "failure_kind" => kind).increment(1);
            if let Some(took) = took {
                histogram!(JOB_DURATION, "urgency" => job.urgency.as_str(), "deployment" => deployment.unwrap_or("").to_string(), "status" => status).record(took);
            }
        });
    }

    /// A provider call made, as its attempt record says; the first attempt of job `id`
    /// also measures its wait in the queue.
    pub fn attempt(&self, job: &JobLabels, id: Uuid, attempt: &AttemptRecord) {
        let outcome = attempt.outcome.as_str().to_string();
        let ok = if attempt.outcome == AttemptOutcome::Ok {
            "ok"
        } else {
            "failed"
        };
        let call = ms_to_seconds(attempt.finished_at - attempt.started_at);
        let waited = (attempt.number == 1)
            .then(|| since_submission(id, attempt.started_at))
            .flatten();
        self.record(|_| {
            let deployment = attempt.deployment.clone();
            let tier = attempt.tier.as_str();
            counter!(ATTEMPTS, "deployment" => deployment.clone(), "key" => attempt.key_id.clone(), "tier" => tier, "outcome" => outcome).increment(1);
            histogram!(PROVIDER_CALL, "deployment" => deployment.clone(), "tier" => tier, "outcome" => ok).record(call);
            if let Some(first) = attempt.first_token_ms {
                histogram!(FIRST_TOKEN, "deployment" => deployment.clone()).record(ms_to_seconds(first));
            }
            if let Some(waited) = waited {
                histogram!(QUEUE_WAIT, "urgency" => job.urgency.as_str(), "deployment" => deployment).record(waited);
            }
        });
    }

    /// An answer charged on `deployment`: its cost, tokens, batch savings and, when the
    /// route's primary did not give it, a fallback.
    pub fn charged(&self, job: &JobLabels, deployment: &str, cost: &CostRecord) {
        let amount = u64::try_from(cost.amount.0).unwrap_or(0);
        let saved = u64::try_from(cost.realtime_amount.0 - cost.amount.0).unwrap_or(0);
        let usage = cost.usage;
        self.record(|_| {
            let labels = [
                ("tenant", job.tenant.clone()),
                ("route", job.route.clone()),
                ("deployment", deployment.to_string()),
                ("tier", cost.tier.as_str().to_string()),
            ];
            counter!(COST, &labels).increment(amount);
            if cost.tier != Tier::Realtime {
                counter!(BATCH_SAVINGS, &labels).increment(saved);
            }
            for (kind, tokens) in [
                ("input", usage.prompt_tokens),
                ("output", usage.completion_tokens),
                ("cached_input", usage.cached_tokens),
                ("cache_write", usage.cache_write_tokens),
            ] {
                if tokens > 0 {
                    let mut labels = labels.to_vec();
                    labels.push(("type", kind.to_string()));
                    counter!(TOKENS, &labels).increment(tokens);
                }
            }
            if let Some((primary, _)) = &cost.fallback_from {
                counter!(FALLBACKS, "route" => job.route.clone(), "from" => primary.clone(), "to" => deployment.to_string()).increment(1);
            }
        });
    }

    /// A delivery of `urgency` parked on the delay ladder.
    pub fn parked(&self, urgency: Urgency, why: Parked) {
        let reason = match why {
            Parked::Capacity => "capacity",
            Parked::Retry => "retry",
        };
        self.record(|_| {
            counter!(JOBS_PARKED, "urgency" => urgency.as_str(), "reason" => reason).increment(1);
        });
    }

    /// A message dead-lettered (`not_a_job`) or a job failed for its delivery limit
    /// (`delivery_limit`).
    pub fn dead_lettered(&self, reason: &'static str) {
        self.record(|_| counter!(DEAD_LETTERED, "reason" => reason).increment(1));
    }

    /// Bulk lines of `tenant` validated: `accepted` good ones, `rejected` bad ones.
    pub fn bulk_lines(&self, tenant: &str, accepted: u64, rejected: u64) {
        self.record(|_| {
            counter!(BULK_LINES, "tenant" => tenant.to_string(), "outcome" => "accepted")
                .increment(accepted);
            counter!(BULK_LINES, "tenant" => tenant.to_string(), "outcome" => "rejected")
                .increment(rejected);
        });
    }

    /// Sets a gauge read at scrape time (see [`super::sample`]).
    pub(super) fn set(&self, name: &'static str, labels: &[(&'static str, String)], value: f64) {
        self.record(|_| gauge!(name, labels).set(value));
    }
}

/// Seconds from job `id`'s submission (its UUIDv7's time) to `at_ms`, when the id tells.
fn since_submission(id: Uuid, at_ms: i64) -> Option<f64> {
    let (secs, nanos) = id.get_timestamp()?.to_unix();
    let submitted_ms = i64::try_from(secs).ok()? * 1000 + i64::from(nanos / 1_000_000);
    Some(ms_to_seconds(at_ms - submitted_ms))
}

fn ms_to_seconds(ms: i64) -> f64 {
    ms.max(0) as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_uuid_v7_tells_its_submission_time() {
        let id = Uuid::now_v7();
        let now = crate::store::now_ms();
        let waited = since_submission(id, now + 1500).unwrap();
        assert!((1.4..=1.6).contains(&waited), "{waited}");
        assert_eq!(since_submission(Uuid::new_v4(), now), None);
    }

    #[test]
    fn every_name_follows_the_conventions() {
        for &(name, kind, unit, _) in ALL {
            assert!(name.starts_with("sluice_"), "{name}");
            assert_eq!(kind == Kind::Counter, name.ends_with("_total"), "{name}");
            assert_eq!(unit == Unit::Seconds, name.ends_with("_seconds"), "{name}");
        }
    }
}
