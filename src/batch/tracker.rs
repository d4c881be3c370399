//! The batch tracker: the loop that moves every provider batch along, from the store.
//!
//! Once a second it takes (under a lease) the batches that need a step now:
//!
//! - **closed** (full, or `max_wait` after it opened): submit it with its pending items
//!   (cancelled ones are simply left out). A retryable failure is tried again with back-off;
//!   after [`MAX_SUBMIT_FAILURES`], or on an error retrying cannot fix, its jobs go real-time.
//! - **submitted**, when the `batch.poll` cron schedule says: poll it. Still running: cancel
//!   it upstream when no item is pending any more (every job cancelled) or when the earliest
//!   deadline among its jobs is within `batch.realtime_reserve` (its jobs go real-time now,
//!   with that reserve left to run); otherwise look again at the next scheduled time. Ended:
//!   read every result and settle each item (see [`crate::batch`]). Failed as a whole: its
//!   jobs go real-time.
//!
//! Everything it knows is in the store, and every step is idempotent (items settle only
//! while `pending`), so a process killed at any point loses nothing: the next tracker, in
//! this process after a restart or in another one, takes the batch up where it was.

use crate::config::ResolvedConfig;
use crate::finish::{charge, Failure, Tier};
use crate::providers::batch::{BatchApi, BatchCall, BatchProgress, BatchRequest, ItemOutcome};
use crate::providers::{ErrorKind, ProviderError};
use crate::router::Router;
use crate::router::{Deployment, Route};
use crate::store::provider_batches::{BatchState, DueBatch, PendingItem};
use crate::store::Store;
use crate::store::{now_ms, AttemptFailure, AttemptOutcome, AttemptRecord, StoreError};
use crate::submit::Submitter;
use crate::telemetry::metrics::Finished;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// How often the tracker looks for batches that need a step.
const TICK: Duration = Duration::from_secs(1);
/// How long a process holds a batch while it works on it; a process that dies holding it
/// only delays the batch by this much.
const LEASE: Duration = Duration::from_secs(120);
/// One HTTP exchange with a batch API (an upload can be 200 MB).
const BATCH_CALL_TIMEOUT: Duration = Duration::from_secs(100);
/// Submission failures after which a batch's jobs go real-time instead.
pub const MAX_SUBMIT_FAILURES: u32 = 5;
/// Results settled concurrently (the store's writer groups them into few commits).
const SETTLE_CONCURRENCY: usize = 64;

/// Runs the tracker until `cancel` fires. Jobs that go back to the real-time tier are
/// published by `submitter`, whose store, router and configuration the tracker works with.
pub async fn run(submitter: Submitter, cancel: CancellationToken) {
    let config = submitter.config.clone();
    let schedule = match crate::crontab::parse_schedule(&config.batch.poll) {
        Ok(schedule) => schedule,
        Err(e) => {
            // Validated with the configuration; kept as a message rather than a panic.
            tracing::error!(poll = %config.batch.poll, error = %e, "batch.poll is not a cron expression; the batch tracker is not running");
            return;
        }
    };
    let tracker = Tracker {
        config,
        store: submitter.store.clone(),
        router: submitter.router.clone(),
        submitter,
        schedule,
    };
    loop {
        if let Err(e) = tracker.tick().await {
            tracing::warn!(error = %e, "batch tracker: the store failed; trying again");
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(TICK) => {}
        }
    }
}

struct Tracker {
    config: Arc<ResolvedConfig>,
    store: Store,
    router: Arc<Router>,
    submitter: Submitter,
    schedule: cron::Schedule,
}

impl Tracker {
    /// One pass: every batch due a step gets it.
    async fn tick(&self) -> Result<(), StoreError> {
        let due = self.store.claim_due_batches(LEASE, 32).await?;
        for batch in due {
            let Some(deployment) = self
                .router
                .deployment(&batch.deployment)
                .filter(|d| d.batch.is_some())
                .cloned()
            else {
                let why = format!(
                    "deployment \"{}\" no longer has a batch tier in the configuration",
                    batch.deployment
                );
                tracing::error!(batch = %batch.id, %why, "sending its jobs real-time");
                self.give_up(&batch, None, &why, BatchState::Failed).await?;
                continue;
            };
            let step = match batch.state {
                BatchState::Submitting => self.submit(&batch, &deployment).await,
                _ => self.track(&batch, &deployment).await,
            };
            step?;
        }
        Ok(())
    }

    /// When the tracker polls next, by the `batch.poll` schedule.
    fn next_poll(&self) -> i64 {
        self.schedule
            .after(&chrono::Utc::now())
            .next()
            .map_or(now_ms() + 60_000, |t| t.timestamp_millis())
    }

    async fn submit(&self, batch: &DueBatch, deployment: &Deployment) -> Result<(), StoreError> {
        let store = &self.store;
        let items = store.pending_items(batch.id).await?;
        if items.is_empty() {
            // Every job in it was cancelled before it was sent.
            return store
                .batch_finished(batch.id, BatchState::Cancelled, None)
                .await;
        }
        let requests: Vec<BatchRequest> = items
            .iter()
            .map(|item| BatchRequest {
                custom_id: item.job.to_string(),
                request: deployment.overrides.apply(&item.request).into_owned(),
            })
            .collect();
        let api = api_of(deployment);
        let submitted = match call_of(deployment, &batch.key_id) {
            Some(call) => api.submit(call, &requests, &batch.id.to_string()).await,
            None => Err(missing_key(deployment, &batch.key_id)),
        };
        match submitted {
            Ok(provider_id) => {
                tracing::info!(batch = %batch.id, provider_batch = %provider_id, requests = items.len(), deployment = %deployment.name, "provider batch submitted");
                store
                    .batch_submitted(batch.id, provider_id, self.next_poll())
                    .await
            }
            Err(error)
                if error.kind.is_retryable() && batch.submit_failures + 1 < MAX_SUBMIT_FAILURES =>
            {
                let delay = error
                    .retry_after
                    .unwrap_or(Duration::from_secs(2u64 << batch.submit_failures.min(8)));
                tracing::warn!(batch = %batch.id, %error, ?delay, "could not submit a provider batch; trying again");
                store
                    .batch_submit_failed(
                        batch.id,
                        error.to_string(),
                        now_ms() + delay.as_millis() as i64,
                    )
                    .await
            }
            Err(error) => {
                let why = format!("the provider batch could not be submitted: {error}");
                tracing::warn!(batch = %batch.id, %why, "sending its jobs real-time");
                self.give_up(batch, Some(&error), &why, BatchState::Failed)
                    .await
            }
        }
    }

    async fn track(&self, batch: &DueBatch, deployment: &Deployment) -> Result<(), StoreError> {
        let store = &self.store;
        let provider_id = batch.provider_batch_id.clone().unwrap_or_default();
        let api = api_of(deployment);
        let Some(call) = call_of(deployment, &batch.key_id) else {
            let error = missing_key(deployment, &batch.key_id);
            let why = error.to_string();
            return self
                .give_up(batch, Some(&error), &why, BatchState::Failed)
                .await;
        };
        if batch.pending == 0 {
            // Every job in it was cancelled (or has gone elsewhere): stop paying for it.
            if let Err(error) = api.cancel(call, &provider_id).await {
                tracing::warn!(batch = %batch.id, %error, "could not cancel a provider batch nobody waits for");
            }
            return store
                .batch_finished(batch.id, BatchState::Cancelled, None)
                .await;
        }
        let reserve = self.config.batch.realtime_reserve.as_millis() as i64;
        if let Some(deadline) = batch.earliest_deadline.filter(|d| now_ms() + reserve >= *d) {
            let why = format!(
                "the provider batch would miss a deadline ({}): cancelled, its jobs run real-time",
                crate::store::ms_to_time(deadline).to_rfc3339()
            );
            tracing::info!(batch = %batch.id, %why);
            if let Err(error) = api.cancel(call, &provider_id).await {
                tracing::warn!(batch = %batch.id, %error, "could not cancel the provider batch");
            }
            return self.give_up(batch, None, &why, BatchState::Cancelled).await;
        }
        match api.poll(call, &provider_id).await {
            Ok(BatchProgress::Running { status }) => {
                store
                    .batch_checked(batch.id, status, self.next_poll())
                    .await
            }
            Ok(BatchProgress::Ended { status }) => match api.results(call, &provider_id).await {
                Ok(results) => {
                    self.settle(batch, deployment, results).await?;
                    store
                        .batch_finished(batch.id, BatchState::Ended, Some(status))
                        .await
                }
                Err(error) => self.poll_failed(batch, error).await,
            },
            Ok(BatchProgress::Failed { status, message }) => {
                let why = format!("the provider batch failed ({status}): {message}");
                tracing::warn!(batch = %batch.id, %why, "sending its jobs real-time");
                self.give_up(batch, None, &why, BatchState::Failed).await
            }
            Err(error) => self.poll_failed(batch, error).await,
        }
    }

    /// A poll or results download failed: a retryable failure waits for the next poll; one
    /// that will not heal (the batch is gone, the key is refused) sends the jobs real-time.
    async fn poll_failed(&self, batch: &DueBatch, error: ProviderError) -> Result<(), StoreError> {
        if error.kind.is_retryable() {
            tracing::warn!(batch = %batch.id, %error, "could not poll a provider batch; trying at the next poll");
            return self
                .store
                .batch_checked(batch.id, format!("poll failed: {error}"), self.next_poll())
                .await;
        }
        let why = format!("the provider batch cannot be read: {error}");
        self.give_up(batch, Some(&error), &why, BatchState::Failed)
            .await
    }

    /// Settles every item of an ended batch from its results; items without a result go
    /// real-time.
    async fn settle(
        &self,
        batch: &DueBatch,
        deployment: &Deployment,
        results: Vec<crate::providers::batch::ItemResult>,
    ) -> Result<(), StoreError> {
        let store = &self.store;
        let mut pending: HashMap<String, PendingItem> = store
            .pending_items(batch.id)
            .await?
            .into_iter()
            .map(|item| (item.job.to_string(), item))
            .collect();
        let mut settles = Vec::with_capacity(results.len());
        for result in results {
            // Unknown or already settled (a result seen before a crash): nothing to do.
            let Some(item) = pending.remove(&result.custom_id) else {
                continue;
            };
            settles.push((item, Some(result.outcome)));
        }
        settles.extend(pending.into_values().map(|item| (item, None)));
        let mut back_to_realtime = Vec::new();
        let mut answered = 0usize;
        for chunk in settles.chunks(SETTLE_CONCURRENCY) {
            let outcomes =
                futures::future::join_all(chunk.iter().map(|(item, outcome)| {
                    self.settle_item(batch, deployment, item, outcome.clone())
                }))
                .await;
            for (outcome, (item, _)) in outcomes.into_iter().zip(chunk) {
                match outcome? {
                    Settled::Answered => answered += 1,
                    Settled::Returned => back_to_realtime.push(item.job),
                    Settled::Failed | Settled::Stale => {}
                }
            }
        }
        tracing::info!(batch = %batch.id, answered, realtime = back_to_realtime.len(), "provider batch results recorded");
        self.republish(&back_to_realtime).await;
        Ok(())
    }

    async fn settle_item(
        &self,
        batch: &DueBatch,
        deployment: &Deployment,
        item: &PendingItem,
        outcome: Option<ItemOutcome>,
    ) -> Result<Settled, StoreError> {
        let store = &self.store;
        let attempt = |outcome: AttemptOutcome, status: Option<u16>, error: Option<String>| {
            attempt_record(batch, Some(deployment), item, outcome, status, error)
        };
        match outcome {
            Some(ItemOutcome::Succeeded(completion)) => {
                // The job's route; should it have left the configuration, the deployment's
                // own route of one (which every configured deployment has).
                let router = &self.router;
                let Some(route) = router
                    .route(&item.request.model)
                    .or_else(|| router.route(&deployment.name))
                else {
                    return Ok(Settled::Stale);
                };
                self.answer(batch, deployment, item, completion, route)
                    .await
            }
            Some(ItemOutcome::Failed(error))
                if !error.kind.is_retryable() && error.kind != ErrorKind::QuotaExhausted =>
            {
                let record = attempt(
                    AttemptOutcome::Failed(error.kind.into()),
                    error.status,
                    Some(error.message.clone()),
                );
                let failure = Failure::provider(&error, error.to_string());
                let metrics = &self.submitter.metrics;
                let job = metrics.labels(&item.tenant, item.urgency, &item.request.model);
                metrics.attempt(&job, item.job, &record);
                if crate::finish::fail(store, item.job, Some(record), failure).await? {
                    let failed = Finished::Failed(error.kind.into());
                    metrics.job_finished(&job, item.job, failed, Some(&deployment.name));
                }
                store.item_done(item.job).await?;
                Ok(Settled::Failed)
            }
            other => {
                let (failure, status, error) = match &other {
                    Some(ItemOutcome::Failed(error)) => {
                        (error.kind.into(), error.status, error.to_string())
                    }
                    Some(ItemOutcome::Expired) => (
                        AttemptFailure::Expired,
                        None,
                        "the provider batch's window closed before this request ran".into(),
                    ),
                    Some(ItemOutcome::Cancelled) => (
                        AttemptFailure::Cancelled,
                        None,
                        "the provider batch was cancelled before this request ran".into(),
                    ),
                    _ => (
                        AttemptFailure::Missing,
                        None,
                        "the provider batch ended without a result for this request".into(),
                    ),
                };
                let returned = store
                    .return_item(
                        item.job,
                        attempt(AttemptOutcome::Failed(failure), status, Some(error)),
                    )
                    .await?;
                Ok(if returned {
                    Settled::Returned
                } else {
                    Settled::Stale
                })
            }
        }
    }

    /// Records an item's answer, charged at the batch price.
    async fn answer(
        &self,
        batch: &DueBatch,
        deployment: &Deployment,
        item: &PendingItem,
        completion: crate::providers::Completion,
        route: &Route,
    ) -> Result<Settled, StoreError> {
        let store = &self.store;
        let cost = charge(completion.usage, deployment, route, Tier::Batch);
        let record = attempt_record(
            batch,
            Some(deployment),
            item,
            AttemptOutcome::Ok,
            Some(completion.status),
            None,
        );
        let metrics = &self.submitter.metrics;
        let job = metrics.labels(&item.tenant, item.urgency, &item.request.model);
        metrics.attempt(&job, item.job, &record);
        let charged = metrics.is_on().then(|| cost.clone());
        let stored = crate::finish::succeed(
            store,
            &self.submitter.budgets,
            item.job,
            record,
            completion.response,
            cost,
        )
        .await?;
        if let (true, Some(cost)) = (stored, &charged) {
            metrics.charged(&job, &deployment.name, cost);
            metrics.job_finished(&job, item.job, Finished::Succeeded, Some(&deployment.name));
        }
        store.item_done(item.job).await?;
        Ok(if stored {
            Settled::Answered
        } else {
            Settled::Stale
        })
    }

    /// Sends every pending item of the batch real-time (recording `why` on their batch
    /// attempt) and closes the batch in `state`.
    async fn give_up(
        &self,
        batch: &DueBatch,
        error: Option<&ProviderError>,
        why: &str,
        state: BatchState,
    ) -> Result<(), StoreError> {
        let store = &self.store;
        let deployment = self.router.deployment(&batch.deployment).cloned();
        let mut returned = Vec::new();
        for item in store.pending_items(batch.id).await? {
            let failure = error.map_or(AttemptFailure::Abandoned, |e| e.kind.into());
            let record = attempt_record(
                batch,
                deployment.as_deref(),
                &item,
                AttemptOutcome::Failed(failure),
                error.and_then(|e| e.status),
                Some(why.into()),
            );
            if store.return_item(item.job, record).await? {
                returned.push(item.job);
            }
        }
        self.republish(&returned).await;
        store.batch_finished(batch.id, state, None).await
    }

    /// Publishes jobs sent back to the real-time tier. A failure is not lost work: they stay
    /// unpublished in the store, and the relay publishes them.
    async fn republish(&self, jobs: &[Uuid]) {
        if let Err(e) = self.submitter.republish(jobs).await {
            tracing::warn!(error = %e, jobs = jobs.len(), "could not publish jobs going real-time; the relay will");
        }
    }
}

/// How one item came out.
enum Settled {
    Answered,
    Failed,
    /// Back to the queue for a real-time attempt.
    Returned,
    /// Settled before (a result seen again after a crash, a cancelled job): nothing done.
    Stale,
}

fn api_of(deployment: &Deployment) -> &dyn BatchApi {
    deployment
        .batch
        .as_ref()
        .expect("the tracker works only on deployments with a batch tier")
        .api
        .as_ref()
}

fn call_of<'a>(deployment: &'a Deployment, key_id: &str) -> Option<BatchCall<'a>> {
    let key = deployment.key_by_id(key_id)?;
    Some(BatchCall {
        model: &deployment.model,
        api_key: key.secret(),
        timeout: BATCH_CALL_TIMEOUT,
        options: deployment.options,
    })
}

fn missing_key(deployment: &Deployment, key_id: &str) -> ProviderError {
    ProviderError::new(
        deployment.kind.as_str(),
        ErrorKind::Unauthorized,
        None,
        format!(
            "key \"{key_id}\" of deployment \"{}\" is no longer configured",
            deployment.name
        ),
    )
}

/// The attempt row of a batch item. `deployment` is `None` when it has left the
/// configuration (its provider and model are then unknown).
fn attempt_record(
    batch: &DueBatch,
    deployment: Option<&Deployment>,
    item: &PendingItem,
    outcome: AttemptOutcome,
    http_status: Option<u16>,
    error: Option<String>,
) -> AttemptRecord {
    AttemptRecord {
        number: item.attempt,
        deployment: batch.deployment.clone(),
        provider: deployment.map_or_else(String::new, |d| d.provider_name.clone()),
        model: deployment.map_or_else(String::new, |d| d.model.clone()),
        key_id: batch.key_id.clone(),
        tier: Tier::Batch,
        outcome,
        http_status,
        error,
        retry_after_ms: None,
        started_at: batch.submitted_at.unwrap_or_else(now_ms),
        finished_at: now_ms(),
        chosen_because: Some(format!(
            "{}; provider batch {}",
            item.chosen_because, batch.id
        )),
        first_token_ms: None,
    }
}
