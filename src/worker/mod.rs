//! Worker pools: take jobs off the queue, call the provider, record the outcome, settle.
//!
//! One pool per urgency, each with its own concurrency (and a prefetch to match, so no message
//! waits in a local buffer long enough to trip the broker's consumer timeout). A delivery
//! runs through a pipeline of small stages, each a module that returns a decision and writes
//! no outcome, so [`run_job`] reads top to bottom:
//!
//! 1. [`lookup`]: where the job stands in the store (final already: ack; never seen: recorded).
//! 2. [`route`]: the job's route and deadline (an unknown model or a passed deadline: fail).
//! 3. [`tier`]: a provider batch or real-time; a job the batch tier takes is placed and
//!    acked, the store tracks it from there (see [`crate::batch`]).
//! 4. [`admit`]: a healthy deployment and a key with capacity. None now: park the message on
//!    the delay ladder — *not* an attempt (the job stays `queued`, `max_attempts` is
//!    untouched, no slot is held).
//! 5. [`budget`]: the job's [budgets](crate::budgets) reserve its maximum cost on that
//!    deployment (or send it to a cheaper route, or refuse it).
//! 6. [`attempt`]: `start_attempt` counts the attempt and records it `running` (or finds the
//!    job final, or fails it for having had its `max_attempts`, counted across crashes); the
//!    call, its outcome fed to the deployment's health and the key's cooldowns.
//! 7. [`record`]: the outcome turned into how the run ends: the answer and its cost, a retry
//!    later, or the job failed.
//! 8. [`settle`]: that ending written durably (the one place the worker writes a job's
//!    outcome, through [`crate::finish`]), *then* the message settled: ack, or parked on the
//!    retry ladder (`retry_after`), so a worker never sleeps through a back-off and a crash
//!    between the two steps at worst repeats the attempt.
//!
//! Each delivery, its attempt and its settling are [`spans`] of the job's trace.

mod admit;
mod attempt;
mod backoff;
mod budget;
mod call;
mod dead_letters;
mod lookup;
mod record;
mod route;
mod settle;
mod spans;
mod tier;
mod watcher;

use crate::config::{Config, ResolvedConfig};
use crate::job::{Envelope, Urgency};
use crate::queue::{Delivery, Queue};
use crate::router::{Route, Router};
use crate::store::{Store, StoreError};
use crate::traces;
use admit::Admission;
use attempt::{Plan, Started};
use budget::Budgeted;
use lookup::Lookup;
use route::Routed;
use settle::{Ending, Settlement};
use std::sync::Arc;
use std::time::Duration;
use tier::Tiered;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;
use watcher::Watcher;

/// Delay before a delivery is looked at again when the store could not record its outcome.
const STORE_TROUBLE_DELAY: Duration = Duration::from_secs(5);

/// What a worker needs, shared by every job it runs.
#[derive(Clone)]
pub struct WorkerContext {
    pub config: Arc<ResolvedConfig>,
    pub store: Store,
    pub queue: Arc<dyn Queue>,
    pub router: Arc<Router>,
    /// The configured budgets: each attempt reserves on them, each success is charged.
    pub budgets: Arc<crate::budgets::Budgets>,
    /// What the stages count (see [`crate::telemetry::metrics`]).
    pub metrics: crate::telemetry::Metrics,
}

/// Running worker pools; [`WorkerPools::shutdown`] stops them gracefully.
pub struct WorkerPools {
    cancel: CancellationToken,
    tasks: TaskTracker,
}

impl WorkerPools {
    /// Starts one pool for each of `urgencies`, sized from the configuration, and the reader
    /// of dead letters. The batch tier's tracker is the app's to start beside them
    /// (`App::start_workers`, through [`WorkerPools::run_beside`]).
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
        // A job whose message the queue gave up on (its delivery limit) is failed, not left
        // running: every worker process reads the dead letters.
        tasks.spawn(dead_letters::run(context.clone(), cancel.clone()));
        WorkerPools { cancel, tasks }
    }

    /// Runs the task `start` makes beside the pools until they stop: it gets the token that
    /// stops them, and [`WorkerPools::shutdown`] waits for it too.
    pub fn run_beside<F>(&self, start: impl FnOnce(CancellationToken) -> F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.tasks.spawn(start(self.cancel.clone()));
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
            context.metrics.dead_lettered("not_a_job");
            settle::settle(delivery, Settlement::DeadLetter(reason)).await;
            return;
        }
    };
    if context.config.tenant(&envelope.tenant).is_none() {
        let reason = format!("unknown tenant \"{}\"", envelope.tenant);
        tracing::warn!(job = %envelope.id, %reason, "dead-lettering");
        context.metrics.dead_lettered("unknown_tenant");
        settle::settle(delivery, Settlement::DeadLetter(reason)).await;
        return;
    }
    let span = spans::job(
        &envelope,
        urgency,
        delivery.traceparent.as_deref(),
        delivery.redelivered,
    );
    let watcher = Watcher::of(&context.queue, &envelope);
    let ended = run_job(
        context,
        &envelope,
        watcher.as_ref(),
        delivery.traceparent.as_deref(),
    )
    .instrument(span.clone())
    .await;
    if let Ok(ending) = &ended {
        spans::record_ending(&span, ending);
    }
    let settle_span = spans::settle(&span);
    async {
        let outcome = match ended {
            Ok(ending) => settle::write(context, &envelope, ending).await,
            Err(e) => Err(e),
        };
        // The outcome is committed (or could not be): now, and only now, the client watching a
        // streamed job may hear about it.
        if let Some(watcher) = &watcher {
            watcher
                .report_outcome(&context.store, &envelope.tenant)
                .await;
        }
        let settlement = outcome.unwrap_or_else(|e| {
            tracing::error!(job = %envelope.id, error = %e, "cannot record the outcome; the job will be looked at again");
            traces::record_error(&tracing::Span::current(), "store_failed");
            Settlement::RetryAfter(STORE_TROUBLE_DELAY)
        });
        spans::record_settlement(&tracing::Span::current(), &settlement);
        settle::settle(delivery, settlement).await;
    }
    .instrument(settle_span)
    .await;
}

/// Runs the stages of one delivery's job, each deciding, up to how the run ends; `watcher`
/// gets the answer's chunks live when a client is waiting on a stream. The stages write
/// only what they must to decide (the job adopted, its budget reserved or its batch
/// placement, the attempt started); how the run ends is written by [`settle::write`].
///
/// Admission comes before the attempt is counted: the router finds a deployment and a key
/// with capacity first, and only then does `start_attempt` count attempt *n*.
///
/// Runs in the delivery's `job` span (whose parent `header_traceparent`, the message
/// headers' trace context, may name); the attempt it makes has a span of its own.
async fn run_job(
    context: &WorkerContext,
    envelope: &Envelope,
    watcher: Option<&Watcher>,
    header_traceparent: Option<&str>,
) -> Result<Ending, StoreError> {
    let attempts_so_far = match lookup::lookup(&context.store, envelope).await? {
        Lookup::Runnable { attempts } => attempts,
        Lookup::Done(settlement) => return Ok(Ending::Settle(settlement)),
    };
    let attempt = attempts_so_far + 1;
    let now = chrono::Utc::now();
    let (route, deadline) = match route::resolve(&context.router, &context.config, envelope, now) {
        Routed::Go { route, deadline } => (route, deadline),
        Routed::Fail(failure) => return Ok(Ending::fail(failure)),
    };
    let tier_note = match tier::tier(context, envelope, &route, attempt, deadline).await? {
        Tiered::Realtime { note } => note,
        Tiered::Done => return Ok(Ending::ack()),
        Tiered::Fail(failure) => return Ok(Ending::fail(failure)),
    };
    let pick = match admit::admit(&route, envelope, attempt, deadline).await {
        Admission::Go(pick) => pick,
        Admission::Wait(wait) => return Ok(paced(wait)),
        Admission::Fail(failure) => return Ok(Ending::fail(failure)),
    };
    // A budget may send the job to a cheaper route: from here on, that is its route.
    let (route, pick) = match budget::reserve(context, envelope, route, pick, attempt).await? {
        Budgeted::Go(route, pick) => (route, pick),
        Budgeted::Wait(wait) => return Ok(paced(wait)),
        Budgeted::Refused(failure) => return Ok(Ending::fail(failure)),
        Budgeted::NotRunnable => return Ok(Ending::ack()),
    };
    let plan = Plan::new(context, envelope, pick, attempt, deadline, tier_note);
    let max_attempts = max_attempts(&context.config, &route);
    let number = match attempt::start(&context.store, envelope.id, max_attempts, &plan).await? {
        Started::Number(number) => number,
        Started::NotRunnable => {
            plan.abandon();
            return Ok(Ending::ack());
        }
    };
    let job_span = tracing::Span::current();
    job_span.record("sluice.route", route.name.as_str());
    if number == 1 {
        let traceparent = spans::traceparent(envelope, header_traceparent);
        traces::queue_wait(&job_span, traceparent, envelope.id);
    }
    let attempt_span = spans::attempt(&plan, number);
    let called = attempt::call(&route, envelope, &plan, watcher)
        .instrument(attempt_span.clone())
        .await;
    let retry = &context.config.retry;
    let ending = record::ending(retry, max_attempts, envelope, &route, &plan, number, called);
    spans::record_ending(&attempt_span, &ending);
    Ok(ending)
}

/// A job with no room now, parked on the delay ladder until about `wait` from now.
fn paced(wait: Duration) -> Ending {
    Ending::Settle(Settlement::RetryAfter(admit::pace_delay(wait)))
}

/// How many attempts a job on `route` gets.
fn max_attempts(config: &Config, route: &Route) -> u32 {
    route.max_attempts.unwrap_or(config.retry.max_attempts)
}
