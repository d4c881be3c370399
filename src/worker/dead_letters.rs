//! Dead letters settled in the store: a job whose message the queue gave up on is failed with
//! the reason, never left `running` for ever.
//!
//! RabbitMQ dead-letters a message delivered more often than its delivery limit without being
//! settled: a crash loop (every worker that took it crashed, was killed or lost its connection
//! mid-job). The store still says `running`, and nothing would deliver the job again. Every
//! worker process reads the backend's dead letters ([`Queue::consume_dead_letters`]) and fails
//! each one's job with the reason, unless it is final already (the transition is guarded, so
//! a job that finished meanwhile, or a dead letter read twice, changes nothing), then acks it.
//! A dead letter that is not a job (garbage on the exchange) is acked; the operator's copy
//! stays in `P.jobs.dead`. The embedded queue needs no reader: it fails the job in the
//! transaction that dead-letters its message.

use super::WorkerContext;
use crate::failure::JobFailure;
use crate::job::Envelope;
use crate::queue::Delivery;
use crate::telemetry::metrics::Finished;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long to wait before reading again after the store failed, or the backend could not
/// be consumed.
const TROUBLE_DELAY: Duration = Duration::from_secs(2);

/// Reads the queue's dead letters until `cancel`; returns at once for a backend without any
/// to read.
pub(super) async fn run(context: WorkerContext, cancel: CancellationToken) {
    let mut consumer = loop {
        match context.queue.consume_dead_letters().await {
            Ok(Some(consumer)) => break consumer,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the dead letters; retrying");
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(TROUBLE_DELAY) => {}
                }
            }
        }
    };
    loop {
        let delivery = tokio::select! {
            _ = cancel.cancelled() => return,
            delivery = consumer.next() => delivery,
        };
        let Some(delivery) = delivery else { return };
        settle(&context, delivery).await;
    }
}

/// Fails the job of one dead letter, then acks it. On a store failure the dead letter is
/// left unsettled (given back to the queue, to be read again).
async fn settle(context: &WorkerContext, delivery: Delivery) {
    let Ok(envelope) = Envelope::from_bytes(&delivery.payload) else {
        // Not a job: there is nothing to fail; the operator's copy is in the dead queue.
        ack(delivery).await;
        return;
    };
    let reason = delivery
        .dead_reason
        .clone()
        .unwrap_or_else(|| "the queue dead-lettered its message".to_string());
    match crate::finish::fail_undelivered(&context.store, envelope.id, reason.clone()).await {
        Ok(true) => {
            tracing::warn!(job = %envelope.id, %reason, "a dead-lettered job is failed");
            let metrics = &context.metrics;
            metrics.dead_lettered("delivery_limit");
            let job = metrics.job(&envelope);
            metrics.job_finished(
                &job,
                envelope.id,
                Finished::Failed(JobFailure::Interrupted),
                None,
            );
            ack(delivery).await;
        }
        Ok(false) => {
            tracing::debug!(job = %envelope.id, "a dead-lettered job was final already (or unknown)");
            ack(delivery).await;
        }
        Err(e) => {
            tracing::error!(job = %envelope.id, error = %e, "cannot fail a dead-lettered job; it will be read again");
            tokio::time::sleep(TROUBLE_DELAY).await;
            drop(delivery);
        }
    }
}

async fn ack(delivery: Delivery) {
    if let Err(e) = delivery.ack().await {
        tracing::warn!(error = %e, "could not ack a dead letter; it will be read again");
    }
}
