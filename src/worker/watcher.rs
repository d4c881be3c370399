//! The live view of a streamed job: events for the API process whose client is waiting on it.
//!
//! Only a job whose envelope names a reply inbox (`reply_to`) and asks to stream has a
//! watcher. Events are best effort (see [`crate::queue::replies`]): a lost event costs the
//! client its live view, never the job its outcome, which the store holds either way. So
//! every failure to send is logged and forgotten.

use crate::job::Envelope;
use crate::job::JobStatus;
use crate::queue::Queue;
use crate::store::{JobView, Store};
use crate::streaming::{chunks_of, wants_stream, StreamEvent};
use std::sync::Arc;
use uuid::Uuid;

/// Where one streamed job's events go.
pub(super) struct Watcher {
    queue: Arc<dyn Queue>,
    address: String,
    job: Uuid,
}

impl Watcher {
    /// The watcher of `envelope`'s job, if a client is waiting on its stream.
    pub(super) fn of(queue: &Arc<dyn Queue>, envelope: &Envelope) -> Option<Watcher> {
        let address = envelope.reply_to.as_ref()?;
        wants_stream(&envelope.spec.request.extra).then(|| Watcher {
            queue: queue.clone(),
            address: address.clone(),
            job: envelope.id,
        })
    }

    pub(super) async fn send(&self, event: StreamEvent) {
        if let Err(e) = self
            .queue
            .reply(&self.address, self.job, event.to_bytes())
            .await
        {
            tracing::debug!(job = %self.job, error = %e, "could not send a stream event; the client loses its live view only");
        }
    }

    /// Tells the client how the delivery ended, from what the store now says about the job:
    /// its answer (as chunks) and the end, or its failure, or that another attempt follows.
    pub(super) async fn report_outcome(&self, store: &Store, tenant: &str) {
        let job: JobView = match store.job(tenant, self.job).await {
            Ok(Some(job)) => job,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(job = %self.job, error = %e, "cannot read the job to report its outcome");
                return;
            }
        };
        match job.status {
            JobStatus::Succeeded => {
                if let Some(completion) = &job.result {
                    for chunk in chunks_of(completion) {
                        self.send(StreamEvent::Chunk { chunk }).await;
                    }
                }
                self.send(StreamEvent::Done).await;
            }
            JobStatus::Failed | JobStatus::Cancelled => {
                let (kind, message) = match job.error {
                    Some(error) => (error.kind, error.message),
                    None => (job.status.to_string(), format!("the job is {}", job.status)),
                };
                self.send(StreamEvent::Failed {
                    kind,
                    message,
                    will_retry: false,
                })
                .await;
            }
            JobStatus::Queued | JobStatus::Running => {
                let last = job.attempts.last();
                self.send(StreamEvent::Failed {
                    kind: last.map_or_else(|| "retry".into(), |a| a.outcome.clone()),
                    message: last
                        .and_then(|a| a.error.clone())
                        .unwrap_or_else(|| "the attempt will be retried".into()),
                    will_retry: true,
                })
                .await;
            }
        }
    }
}
