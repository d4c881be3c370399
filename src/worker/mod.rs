//! Worker pools: take jobs off the queue, call the provider, record the outcome, settle.
//!
//! One pool per urgency, each with its own concurrency (and a prefetch to match, so no message
//! waits in a local buffer long enough to trip the broker's consumer timeout). For every
//! delivery, in this order:
//!
//! 1. Parse the envelope; a message that is not a job goes to the dead-letter queue.
//! 2. `start_attempt` in the store: a job that is already final (a redelivery after a crash,
//!    a cancel) is acked without calling anyone. A job the store has never seen (published
//!    straight onto the exchange) is recorded first.
//! 3. Call the deployment chosen by the [router](crate::router) with one of its keys.
//! 4. Record the outcome durably (result + cost, or the failed attempt), *then* settle the
//!    message: ack, or park it on the retry ladder (`retry_after`), so a worker never sleeps
//!    through a back-off and a crash between the two steps at worst repeats step 2.

mod backoff;
mod watcher;

use crate::config::{Config, RetryConfig};
use crate::job::{Envelope, Urgency};
use crate::providers::{Call, ErrorKind, ProviderError};
use crate::queue::{Delivery, Queue};
use crate::router::{Deployment, Router};
use crate::store::{now_ms, AttemptRecord, CostRecord, InsertOutcome, StartOutcome, Store};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use watcher::Watcher;

/// Delay before a delivery is looked at again when the store could not record its outcome.
const STORE_TROUBLE_DELAY: Duration = Duration::from_secs(5);

/// What a worker needs, shared by every job it runs.
#[derive(Clone)]
pub struct WorkerContext {
    pub config: Arc<Config>,
    pub store: Store,
    pub queue: Arc<dyn Queue>,
    pub router: Arc<Router>,
}

/// Running worker pools; [`WorkerPools::shutdown`] stops them gracefully.
pub struct WorkerPools {
    cancel: CancellationToken,
    tasks: TaskTracker,
}

impl WorkerPools {
    /// Starts one pool for each of `urgencies`, sized from the configuration.
    pub fn start(context: WorkerContext, urgencies: &[Urgency]) -> WorkerPools {
        let cancel = CancellationToken::new();
        let tasks = TaskTracker::new();
        for &urgency in urgencies {
            let concurrency = context.config.pools.get(urgency).concurrency;
            tasks.spawn(run_pool(
                context.clone(),
                urgency,
                concurrency,
                cancel.clone(),
                tasks.clone(),
            ));
        }
        WorkerPools { cancel, tasks }
    }

    /// Stops taking deliveries and waits for the jobs in flight to be recorded and settled.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

async fn run_pool(
    context: WorkerContext,
    urgency: Urgency,
    concurrency: u16,
    cancel: CancellationToken,
    tasks: TaskTracker,
) {
    let mut consumer = loop {
        match context.queue.consume(urgency, concurrency).await {
            Ok(consumer) => break consumer,
            Err(e) => {
                tracing::warn!(%urgency, error = %e, "cannot start consuming; retrying in 2s");
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                }
            }
        }
    };
    tracing::info!(%urgency, concurrency, backend = context.queue.name(), "worker pool started");
    let slots = Arc::new(Semaphore::new(usize::from(concurrency)));
    loop {
        let permit = tokio::select! {
            _ = cancel.cancelled() => break,
            permit = slots.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
        };
        let delivery = tokio::select! {
            _ = cancel.cancelled() => break,
            delivery = consumer.next() => delivery,
        };
        let Some(delivery) = delivery else { break };
        let context = context.clone();
        tasks.spawn(async move {
            handle(&context, delivery).await;
            drop(permit);
        });
    }
    tracing::info!(%urgency, "worker pool stopping");
}

/// Runs one delivery to a settled state. Never panics on bad input.
pub async fn handle(context: &WorkerContext, delivery: Delivery) {
    let envelope = match Envelope::from_bytes(&delivery.payload) {
        Ok(envelope) => envelope,
        Err(reason) => {
            tracing::warn!(%reason, "dead-lettering a message that is not a job");
            settle(delivery.dead_letter(&reason).await);
            return;
        }
    };
    if context.config.tenant(&envelope.tenant).is_none() {
        let reason = format!("unknown tenant \"{}\"", envelope.tenant);
        tracing::warn!(job = %envelope.id, %reason, "dead-lettering");
        settle(delivery.dead_letter(&reason).await);
        return;
    }
    let watcher = Watcher::of(&context.queue, &envelope);
    let outcome = run_job(context, &envelope, watcher.as_ref()).await;
    // The outcome is committed (or could not be): now, and only now, the client watching a
    // streamed job may hear about it.
    if let Some(watcher) = &watcher {
        watcher
            .report_outcome(&context.store, &envelope.tenant)
            .await;
    }
    match outcome {
        Ok(Settlement::Ack) => settle(delivery.ack().await),
        Ok(Settlement::RetryAfter(delay)) => settle(delivery.retry_after(delay).await),
        Err(e) => {
            tracing::error!(job = %envelope.id, error = %e, "cannot record the outcome; the job will be looked at again");
            settle(delivery.retry_after(STORE_TROUBLE_DELAY).await);
        }
    }
}

fn settle(result: Result<(), crate::queue::QueueError>) {
    if let Err(e) = result {
        // The message will be delivered again and recognised by its state in the store.
        tracing::warn!(error = %e, "could not settle a delivery; it will be redelivered");
    }
}

enum Settlement {
    Ack,
    RetryAfter(Duration),
}

/// Runs one attempt of a job and records its outcome; `watcher` gets the answer's chunks live
/// when a client is waiting on a stream.
async fn run_job(
    context: &WorkerContext,
    envelope: &Envelope,
    watcher: Option<&Watcher>,
) -> Result<Settlement, crate::store::StoreError> {
    let store = &context.store;
    let id = envelope.id;
    let number = match store.start_attempt(id).await? {
        StartOutcome::Started(n) => n,
        StartOutcome::AlreadyFinal(status) => {
            tracing::debug!(job = %id, %status, "already final; not calling again");
            return Ok(Settlement::Ack);
        }
        StartOutcome::Missing => {
            // Published straight onto the exchange: record it on first consume.
            if let InsertOutcome::Existing(other) = store.insert_job(envelope, true).await? {
                if other != id {
                    tracing::info!(job = %id, existing = %other, "duplicate custom_id; dropping");
                    return Ok(Settlement::Ack);
                }
            }
            match store.start_attempt(id).await? {
                StartOutcome::Started(n) => n,
                _ => return Ok(Settlement::Ack),
            }
        }
    };

    let model = &envelope.spec.request.model;
    let Some(deployment) = context.router.for_attempt(model, number) else {
        store
            .finish_failed(
                id,
                None,
                "unknown_model".into(),
                context.config.unknown_model(model),
            )
            .await?;
        return Ok(Settlement::Ack);
    };
    if let Some(deadline) = envelope.spec.deadline {
        if deadline < chrono::Utc::now() {
            store
                .finish_failed(
                    id,
                    None,
                    "deadline_exceeded".into(),
                    format!("the job's deadline {deadline} passed before it could run"),
                )
                .await?;
            return Ok(Settlement::Ack);
        }
    }

    let key = deployment.pick_key();
    let started_at = now_ms();
    let call = Call {
        model: &deployment.model,
        api_key: key.secret(),
        request: &envelope.spec.request,
        timeout: deployment.timeout,
        options: deployment.options,
    };
    let result = match watcher {
        Some(watcher) => {
            watcher
                .relay(&*deployment.adapter, deployment.kind.as_str(), call)
                .await
        }
        None => deployment.adapter.chat(call).await,
    };
    let attempt = |outcome: String,
                   status: Option<u16>,
                   error: Option<String>,
                   retry_after: Option<Duration>| AttemptRecord {
        number,
        deployment: deployment.name.clone(),
        provider: deployment.provider_name.clone(),
        model: deployment.model.clone(),
        key_id: key.id.clone(),
        tier: "realtime",
        outcome,
        http_status: status,
        error,
        retry_after_ms: retry_after.map(|d| d.as_millis() as i64),
        started_at,
        finished_at: now_ms(),
    };

    match result {
        Ok(completion) => {
            let cost = CostRecord {
                usage: completion.usage,
                amount: deployment.price.cost(&completion.usage),
                price: deployment.price,
            };
            let record = attempt("ok".into(), Some(completion.status), None, None);
            if !store
                .finish_succeeded(id, record, completion.response, cost)
                .await?
            {
                tracing::info!(job = %id, "finished elsewhere meanwhile; this answer is discarded, not charged");
            }
            Ok(Settlement::Ack)
        }
        Err(error) => {
            let record = attempt(
                error.kind.as_str().into(),
                error.status,
                Some(error.message.clone()),
                error.retry_after,
            );
            decide_after_failure(context, envelope, &deployment, number, error, record).await
        }
    }
}

async fn decide_after_failure(
    context: &WorkerContext,
    envelope: &Envelope,
    deployment: &Deployment,
    number: u32,
    error: ProviderError,
    record: AttemptRecord,
) -> Result<Settlement, crate::store::StoreError> {
    let id = envelope.id;
    let retry: &RetryConfig = &context.config.retry;
    let has_fallback = context
        .router
        .chain(&envelope.spec.request.model)
        .is_some_and(|chain| chain.len() > 1);
    // A spent quota will not come back soon on this key, but another deployment may serve.
    let retryable =
        error.kind.is_retryable() || (error.kind == ErrorKind::QuotaExhausted && has_fallback);
    if retryable && number < retry.max_attempts {
        let delay = backoff::delay(retry, number, error.retry_after);
        let past_deadline = envelope
            .spec
            .deadline
            .is_some_and(|d| chrono::Utc::now() + delay > d);
        if !past_deadline {
            tracing::info!(job = %id, attempt = number, deployment = %deployment.name, error = %error, ?delay, "retrying later");
            context.store.record_retry(id, record).await?;
            return Ok(Settlement::RetryAfter(delay));
        }
    }
    let message = if retryable && number >= retry.max_attempts {
        format!("gave up after {number} attempts; last error: {error}")
    } else {
        error.to_string()
    };
    tracing::info!(job = %id, attempt = number, %message, "job failed");
    context
        .store
        .finish_failed(id, Some(record), error.kind.as_str().into(), message)
        .await?;
    Ok(Settlement::Ack)
}
