//! Worker pools: take jobs off the queue, call the provider, record the outcome, settle.
//!
//! One pool per urgency, each with its own concurrency (and a prefetch to match, so no message
//! waits in a local buffer long enough to trip the broker's consumer timeout). For every
//! delivery, in this order:
//!
//! 1. Parse the envelope; a message that is not a job goes to the dead-letter queue.
//! 2. Look the job up in the store: a job that is already final (a redelivery after a crash,
//!    a cancel) is acked without calling anyone. A job the store has never seen (published
//!    straight onto the exchange) is recorded first.
//! 3. Ask the [router](crate::router) for a healthy deployment and a key with capacity. None
//!    now: park the message on the delay ladder until capacity returns — *not* an attempt
//!    (the job stays `queued`, `max_attempts` is untouched, no slot is held).
//! 4. The job's [budgets](crate::budgets) reserve its maximum cost on that deployment (or a
//!    budget sends it to a cheaper route, or fails it with `budget_exceeded`).
//! 5. `start_attempt` counts the attempt and records it `running` (an attempt a crash cuts
//!    short is then `interrupted` when the job is picked up again), or fails the job that
//!    has had its `max_attempts`, counted across crashes; call the deployment with that
//!    key, feeding the outcome to its health and a 429 to the key's cooldown.
//! 6. Record the outcome durably (result + cost, or the failed attempt), *then* settle the
//!    message: ack, or park it on the retry ladder (`retry_after`), so a worker never sleeps
//!    through a back-off and a crash between the two steps at worst repeats the attempt.

mod backoff;
mod dead_letters;
mod watcher;

use crate::batch::tier::{Tier, TierChoice, TierQuestion};
use crate::batch::Placed;
use crate::budgets::BatchHold;
use crate::config::{Config, RetryConfig};
use crate::failure::JobFailure;
use crate::finish::charge;
use crate::job::{Envelope, Urgency};
use crate::providers::{http, stream};
use crate::providers::{Call, Completion, ErrorKind, ProviderError};
use crate::queue::{Delivery, Queue};
use crate::router::health::Verdict;
use crate::router::{Choice, Deployment, Route, Router};
use crate::store::{
    now_ms, Adopted, AttemptOutcome, AttemptRecord, AttemptStart, StartOutcome, Store,
};
use futures::StreamExt;
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

impl WorkerContext {
    /// A submitter over the same store, queue and router: the batch tracker publishes the
    /// jobs it sends back to the real-time tier with it.
    fn submitter(&self) -> crate::submit::Submitter {
        crate::submit::Submitter {
            config: self.config.clone(),
            store: self.store.clone(),
            queue: self.queue.clone(),
            router: self.router.clone(),
        }
    }
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
        // The batch tier's tracker runs beside the pools of every worker process: its
        // batches are leased one process at a time, so several trackers share the work.
        if context.router.has_batch_tier() {
            tasks.spawn(crate::batch::tracker::run(
                context.submitter(),
                cancel.clone(),
            ));
        }
        // A job whose message the queue gave up on (its delivery limit) is failed, not left
        // running: every worker process reads the dead letters.
        tasks.spawn(dead_letters::run(context.clone(), cancel.clone()));
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
            handle(&context, urgency, delivery).await;
            drop(permit);
        });
    }
    tracing::info!(%urgency, "worker pool stopping");
}

/// Runs one delivery from the queue of `urgency` to a settled state. Never panics on bad
/// input.
pub async fn handle(context: &WorkerContext, urgency: Urgency, delivery: Delivery) {
    let envelope = match Envelope::from_queue(&delivery.payload, urgency) {
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
        Ok(Settlement::DeadLetter(reason)) => settle(delivery.dead_letter(&reason).await),
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
    /// Not a job to run (see [`crate::store::Orphan`]): kept in the dead letters, with why.
    DeadLetter(String),
}

/// How long a key rests after a 429 that did not say how long.
const DEFAULT_RATE_LIMIT_COOLDOWN: Duration = Duration::from_secs(1);
/// How long a key rests after the provider refused it: long enough that the deployment's
/// other keys (or the next deployment) carry the traffic, short enough that a key put right
/// is back within a minute. (A key out of credit rests longer: `limits::SPENT_KEY_REST`.)
const KEY_FAULT_COOLDOWN: Duration = Duration::from_secs(60);

/// Runs one attempt of a job and records its outcome; `watcher` gets the answer's chunks live
/// when a client is waiting on a stream.
///
/// Admission comes before the attempt is counted: the router finds a deployment and a key
/// with capacity first, and only then does `start_attempt` count attempt *n*. A job that finds
/// no capacity is parked on the queue's delay ladder (`RetryAfter`), still `queued`, with no
/// attempt recorded: waiting for a rate limit is pacing, not failure, so it never uses up
/// `max_attempts`, and it holds no worker slot while it waits.
async fn run_job(
    context: &WorkerContext,
    envelope: &Envelope,
    watcher: Option<&Watcher>,
) -> Result<Settlement, crate::store::StoreError> {
    let store = &context.store;
    let id = envelope.id;
    let attempts_so_far = match store.progress(id).await? {
        Some((status, _)) if status.is_final() => {
            tracing::debug!(job = %id, %status, "already final; not calling again");
            return Ok(Settlement::Ack);
        }
        Some((_, attempts)) => attempts,
        None => match store.adopt(envelope).await? {
            // Published straight onto the exchange: recorded on first consume.
            Adopted::Recorded => 0,
            Adopted::Existing(other) if other == id => 0,
            Adopted::Existing(other) => {
                tracing::info!(job = %id, existing = %other, "duplicate custom_id; dropping");
                return Ok(Settlement::Ack);
            }
            Adopted::Orphan(orphan) => {
                tracing::warn!(job = %id, %orphan, "dead-lettering");
                return Ok(Settlement::DeadLetter(orphan.to_string()));
            }
        },
    };

    let model = &envelope.spec.request.model;
    let Some(route) = context.router.route(model).cloned() else {
        store
            .finish_failed(
                id,
                None,
                JobFailure::UnknownModel,
                context.config.unknown_model(model),
                None,
            )
            .await?;
        return Ok(Settlement::Ack);
    };
    let deadline = deadline_of(envelope, &route);
    if let Some(deadline) = deadline {
        if deadline < chrono::Utc::now() {
            store
                .finish_failed(
                    id,
                    None,
                    JobFailure::DeadlineExceeded,
                    format!("the job's deadline {deadline} passed before it could run"),
                    None,
                )
                .await?;
            return Ok(Settlement::Ack);
        }
    }

    let urgency = envelope.spec.urgency;
    let attempt = attempts_so_far + 1;
    // The batch tier first: a job that can wait for a provider batch is placed in one and
    // its message acked; the store tracks it from here (see `crate::batch`).
    let mut tier_note = None;
    if let Some(deployment) = route.batch_deployment(attempt) {
        let choice = crate::batch::tier::choose(TierQuestion {
            urgency,
            attempt,
            deadline,
            now: chrono::Utc::now(),
            wait: deployment.batch.as_ref().map(|b| b.turnaround),
            safety_margin: context.config.batch.safety_margin,
        });
        match choice {
            TierChoice::Batch { because } => 'batch: {
                // The job's budgets hold its cost before it joins a batch; a budget without
                // room sends it down the real-time path, which applies the budget's policy.
                match crate::budgets::reserve_for_batch(store, envelope, deployment).await? {
                    BatchHold::Held => {}
                    BatchHold::NotRunnable => return Ok(Settlement::Ack),
                    BatchHold::Refused(why) => {
                        tier_note = Some(format!("realtime tier: {why}"));
                        break 'batch;
                    }
                }
                let because = format!("{because}; deployment \"{}\"", deployment.name);
                match crate::batch::place(store, deployment, envelope, deadline, because).await? {
                    Placed::InBatch | Placed::NotRunnable => return Ok(Settlement::Ack),
                    Placed::Refused(error) => {
                        tracing::info!(job = %id, %error, "the batch tier cannot take this request");
                        store
                            .finish_failed(
                                id,
                                None,
                                error.kind.into(),
                                error.to_string(),
                                error.param.clone(),
                            )
                            .await?;
                        return Ok(Settlement::Ack);
                    }
                    Placed::TooLarge(why) => tier_note = Some(why),
                }
            }
            TierChoice::Realtime { because } => tier_note = because,
        }
    }
    let mut waited = Duration::ZERO;
    let pick = loop {
        match route.choose(attempt, &envelope.spec.request, urgency) {
            Choice::Go(pick) => break pick,
            Choice::Refuse { reason, message } => {
                tracing::info!(job = %id, %message, "no deployment can take this job");
                store
                    .finish_failed(id, None, reason.failure(), message, None)
                    .await?;
                return Ok(Settlement::Ack);
            }
            Choice::Wait { wait, why } => {
                if let Some(deadline) = deadline {
                    if chrono::Utc::now() + wait > deadline {
                        store
                            .finish_failed(
                                id,
                                None,
                                JobFailure::DeadlineExceeded,
                                format!("{why}; waiting would pass the job's deadline {deadline}"),
                                None,
                            )
                            .await?;
                        return Ok(Settlement::Ack);
                    }
                }
                // A realtime job waits in its slot for a moment (the delay ladder's shortest
                // rung is longer than the wait the route allows); anything longer is parked.
                if urgency == Urgency::Realtime && waited + wait <= route.realtime_max_wait {
                    tokio::time::sleep(wait).await;
                    waited += wait;
                    continue;
                }
                tracing::debug!(job = %id, %why, ?wait, "paced: parked until capacity returns, not an attempt");
                return Ok(Settlement::RetryAfter(pace_delay(wait)));
            }
        }
    };

    // Budgets: hold the job's maximum cost, or downgrade it, or fail it, before it counts.
    let (route, pick) = match crate::budgets::admit(
        store,
        &context.router,
        envelope,
        route,
        pick,
        attempts_so_far + 1,
    )
    .await?
    {
        crate::budgets::Verdict::Go(route, pick) => (route, pick),
        crate::budgets::Verdict::Ack => return Ok(Settlement::Ack),
        crate::budgets::Verdict::Wait(wait) => return Ok(Settlement::RetryAfter(pace_delay(wait))),
    };

    let deployment = pick.deployment.clone();
    let key = deployment.key(pick.key);
    // OpenAI's flex service tier: the same call at batch prices, when the job can wait for it.
    let flex = deployment.flex.and_then(|flex| {
        let why = crate::batch::tier::flex(TierQuestion {
            urgency,
            attempt,
            deadline,
            now: chrono::Utc::now(),
            wait: Some(flex.timeout),
            safety_margin: context.config.batch.safety_margin,
        })?;
        Some((flex, why))
    });
    let tier = if flex.is_some() {
        Tier::Flex
    } else {
        Tier::Realtime
    };
    let chosen_because = Some(
        tier_note
            .into_iter()
            .chain(flex.as_ref().map(|(_, why)| why.clone()))
            .chain([pick.chosen_because.clone()])
            .collect::<Vec<_>>()
            .join("; "),
    );
    // The attempt is recorded `running` as it starts, so a crash during the call leaves it
    // visible (and `interrupted` once the job is picked up again); attempts are counted in
    // the store, across crashes, up to `max_attempts`.
    let started_at = now_ms();
    let start = AttemptStart {
        deployment: deployment.name.clone(),
        provider: deployment.provider_name.clone(),
        model: deployment.model.clone(),
        key_id: key.id.clone(),
        tier: tier.endpoint(),
        started_at,
        chosen_because: chosen_because.clone(),
    };
    let number = match store
        .start_attempt(id, max_attempts(context, &route), start)
        .await?
    {
        StartOutcome::Started(n) => n,
        StartOutcome::Exhausted { attempts } => {
            tracing::warn!(job = %id, attempts, "max_attempts used up, the last attempt cut short; the job is failed");
            pick.abandon();
            return Ok(Settlement::Ack);
        }
        other => {
            // Finished or cancelled since we looked: the cells taken are simply not used.
            tracing::debug!(job = %id, ?other, "no longer runnable");
            pick.abandon();
            return Ok(Settlement::Ack);
        }
    };
    let mut request = deployment.overrides.apply(&envelope.spec.request);
    if flex.is_some() {
        request
            .to_mut()
            .extra
            .insert("service_tier".into(), "flex".into());
    }
    let call = Call {
        model: &deployment.model,
        api_key: key.secret(),
        request: &request,
        timeout: match flex {
            Some((flex, _)) => flex.timeout,
            None => route.attempt_timeout.unwrap_or(deployment.timeout),
        },
        stream_idle_timeout: route.stream_idle_timeout,
        options: deployment.options,
    };
    let clock = std::time::Instant::now();
    let (result, first_token) =
        call_deployment(&deployment, call, watcher, route.first_token_timeout).await;
    deployment.health.record(
        Verdict::of(result.as_ref().map(|_| ()).map_err(|e| e.kind)),
        clock.elapsed(),
        first_token,
    );
    // What the provider says about the key cools it down before the next call finds out.
    // A flex 429 says flex capacity is short, not that the key is spent.
    let cooldown = match &result {
        Ok(completion) => completion.key_spent_for,
        Err(error) if tier == Tier::Flex && error.kind == ErrorKind::RateLimited => None,
        Err(error) => match error.kind {
            ErrorKind::RateLimited => {
                Some(error.retry_after.unwrap_or(DEFAULT_RATE_LIMIT_COOLDOWN))
            }
            ErrorKind::Unauthorized => Some(error.retry_after.unwrap_or(KEY_FAULT_COOLDOWN)),
            ErrorKind::QuotaExhausted => {
                let rest = error.retry_after.unwrap_or(crate::limits::SPENT_KEY_REST);
                deployment.limits.spend(pick.key, rest);
                None
            }
            _ => None,
        },
    };
    if let Some(wait) = cooldown {
        deployment.limits.cool_down(pick.key, wait);
    }
    let attempt = |outcome: AttemptOutcome,
                   status: Option<u16>,
                   error: Option<String>,
                   retry_after: Option<Duration>| AttemptRecord {
        number,
        deployment: deployment.name.clone(),
        provider: deployment.provider_name.clone(),
        model: deployment.model.clone(),
        key_id: key.id.clone(),
        tier: tier.endpoint(),
        outcome,
        http_status: status,
        error,
        retry_after_ms: retry_after.map(|d| d.as_millis() as i64),
        started_at,
        finished_at: now_ms(),
        chosen_because: chosen_because.clone(),
        first_token_ms: first_token.map(|d| d.as_millis() as i64),
    };

    match result {
        Ok(completion) => {
            let cost = charge(completion.usage, &deployment, &route, tier);
            let record = attempt(AttemptOutcome::Ok, Some(completion.status), None, None);
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
                AttemptOutcome::Failed(error.kind.as_str().into()),
                error.status,
                Some(error.message.clone()),
                error.retry_after,
            );
            if tier == Tier::Flex && error.kind == ErrorKind::RateLimited {
                // Flex capacity is short: the next attempt takes the default tier at once.
                tracing::info!(job = %id, attempt = number, "flex tier unavailable; retrying on the default tier");
                store.record_retry(id, record).await?;
                return Ok(Settlement::RetryAfter(Duration::ZERO));
            }
            decide_after_failure(context, envelope, &route, number, error, record).await
        }
    }
}

/// The earlier of the job's own deadline and its route's deadline for its urgency, counted
/// from submission (the time in the job's UUIDv7).
fn deadline_of(envelope: &Envelope, route: &Route) -> Option<chrono::DateTime<chrono::Utc>> {
    let by_route = route
        .deadlines
        .get(envelope.spec.urgency)
        .and_then(|limit| {
            let (secs, nanos) = envelope.id.get_timestamp()?.to_unix();
            let submitted = chrono::DateTime::from_timestamp(secs as i64, nanos)?;
            Some(submitted + chrono::Duration::from_std(limit).ok()?)
        });
    match (envelope.spec.deadline, by_route) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// A paced job's delay: the limiter's wait plus a little jitter, so jobs parked together do
/// not all come back in the same millisecond to find room for only some of them.
fn pace_delay(wait: Duration) -> Duration {
    let jitter = (wait / 10).max(Duration::from_millis(20));
    wait + jitter.mul_f64(rand::random::<f64>())
}

/// Makes the call, returning the answer and the time to its first token. A plain call
/// (nobody streaming, no first-token or idle limit) is made as one request and its first
/// token is its whole answer; otherwise it is streamed, so a client sees chunks live,
/// `first_token_timeout` can abandon a call that has not started answering and the
/// stream driver one that stalls past `call.stream_idle_timeout`.
async fn call_deployment(
    deployment: &Deployment,
    call: Call<'_>,
    watcher: Option<&Watcher>,
    first_token_timeout: Option<Duration>,
) -> (Result<Completion, ProviderError>, Option<Duration>) {
    let provider = deployment.kind.as_str();
    let started = std::time::Instant::now();
    if watcher.is_none() && first_token_timeout.is_none() && call.stream_idle_timeout.is_none() {
        let result = deployment.adapter.chat(call).await;
        let first_token = result.is_ok().then(|| started.elapsed());
        return (result, first_token);
    }
    let opening = async {
        let mut chunks = deployment.adapter.chat_stream(call).await?;
        // Chunks before the first token (a role, an empty delta) are kept and replayed.
        let mut before = Vec::new();
        while let Some(chunk) = chunks.next().await {
            let token = chunk.as_ref().map_or(true, stream::carries_output);
            before.push(chunk);
            if token {
                break;
            }
        }
        Ok::<_, ProviderError>((before, chunks))
    };
    let opened = match first_token_timeout {
        Some(limit) => tokio::time::timeout(limit, opening)
            .await
            .unwrap_or_else(|_| {
                Err(http::limit_error(
                    provider,
                    "no first token",
                    limit,
                    "first_token_timeout",
                ))
            }),
        None => opening.await,
    };
    let (before, rest) = match opened {
        Ok(opened) => opened,
        Err(error) => return (Err(error), None),
    };
    let first_token = started.elapsed();
    let chunks = rest.map_chunks(|rest| futures::stream::iter(before).chain(rest));
    let result = match watcher {
        Some(watcher) => watcher.relay(provider, chunks).await,
        None => stream::collect(provider, chunks).await,
    };
    (result, Some(first_token))
}

/// How many attempts a job on `route` gets.
fn max_attempts(context: &WorkerContext, route: &Route) -> u32 {
    route
        .max_attempts
        .unwrap_or(context.config.retry.max_attempts)
}

async fn decide_after_failure(
    context: &WorkerContext,
    envelope: &Envelope,
    route: &Route,
    number: u32,
    error: ProviderError,
    record: AttemptRecord,
) -> Result<Settlement, crate::store::StoreError> {
    let id = envelope.id;
    let retry: &RetryConfig = &context.config.retry;
    let max_attempts = max_attempts(context, route);
    let has_fallback = route.chain.len() > 1;
    // A spent quota, a refused key or a model the provider does not know will fail the same
    // way there again, but the next attempt moves along the chain to another deployment. A
    // spent key rests, so another key of this deployment may take the call; when none can,
    // the router refuses the next attempt at once.
    let retryable = error.is_retryable()
        || (error.kind.is_deployment_fault() && has_fallback)
        || error.kind == ErrorKind::QuotaExhausted;
    if retryable && number < max_attempts {
        // With another deployment (or, for a spent key, another key) to go to, the next
        // attempt need not wait out this one's `retry-after`: the key is cooling down, and
        // the router skips it.
        let hint = if has_fallback || error.kind == ErrorKind::QuotaExhausted {
            None
        } else {
            error.retry_after
        };
        let delay = backoff::delay(retry, number, hint);
        let past_deadline =
            deadline_of(envelope, route).is_some_and(|d| chrono::Utc::now() + delay > d);
        if !past_deadline {
            tracing::info!(job = %id, attempt = number, deployment = %record.deployment, error = %error, ?delay, "retrying later");
            context.store.record_retry(id, record).await?;
            return Ok(Settlement::RetryAfter(delay));
        }
    }
    let message = if retryable && number >= max_attempts {
        format!("gave up after {number} attempts; last error: {error}")
    } else {
        error.to_string()
    };
    tracing::info!(job = %id, attempt = number, %message, "job failed");
    context
        .store
        .finish_failed(id, Some(record), error.kind.into(), message, error.param)
        .await?;
    Ok(Settlement::Ack)
}
