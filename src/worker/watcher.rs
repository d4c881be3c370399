//! The live view of a streamed job: events for the API process whose client is waiting on it.
//!
//! Only a job whose envelope names a reply inbox (`reply_to`) and asks to stream has a
//! watcher. Events are best effort (see [`crate::queue::replies`]): a lost event costs the
//! client its live view, never the job its outcome, which the store holds either way. So
//! every failure to send is logged and forgotten.

use crate::job::{Envelope, JobStatus};
use crate::providers::{stream, Completion, ProviderError};
use crate::queue::Queue;
use crate::store::{JobOutcome, Store};
use crate::streaming::{chunks_of, wants_stream, StreamEvent};
use futures::StreamExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use uuid::Uuid;

/// The most chunks one event carries (a burst longer than this goes as several).
const MAX_CHUNKS_PER_EVENT: usize = 64;

/// Where one streamed job's events go. Cheap to clone: each relayed chunk holds one.
#[derive(Clone)]
pub(super) struct Watcher {
    queue: Arc<dyn Queue>,
    address: Arc<str>,
    job: Uuid,
    /// This delivery, as its chunks name it ([`StreamEvent::Chunks`]).
    delivery: Uuid,
    /// Whether any chunk has gone out live, so the outcome is not replayed on top of it.
    streamed: Arc<AtomicBool>,
}

impl Watcher {
    /// The watcher of `envelope`'s job, if a client is waiting on its stream.
    pub(super) fn of(queue: &Arc<dyn Queue>, envelope: &Envelope) -> Option<Watcher> {
        let address = envelope.reply_to.as_ref()?;
        wants_stream(&envelope.spec.request.extra).then(|| Watcher {
            queue: queue.clone(),
            address: Arc::from(address.as_str()),
            job: envelope.id,
            delivery: Uuid::new_v4(),
            streamed: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Relays every chunk of a call's stream to the client the moment it arrives (those that
    /// arrive together as one event), and returns the answer the chunks add up to, to be stored
    /// like any other.
    pub(super) async fn relay(
        &self,
        provider: &'static str,
        chunks: stream::ChunkStream,
    ) -> Result<Completion, ProviderError> {
        let watcher = self.clone();
        let relayed = chunks.map_chunks(|chunks| {
            chunks
                .ready_chunks(MAX_CHUNKS_PER_EVENT)
                .then(move |items| {
                    let watcher = watcher.clone();
                    async move {
                        let arrived: Vec<_> = items
                            .iter()
                            .filter_map(|item| item.as_ref().ok().cloned())
                            .collect();
                        if !arrived.is_empty() {
                            watcher.send_chunks(arrived).await;
                            watcher.streamed.store(true, Ordering::Relaxed);
                        }
                        futures::stream::iter(items)
                    }
                })
                .flatten()
        });
        stream::collect(provider, relayed).await
    }

    /// Sends chunks, named by this delivery.
    async fn send_chunks(&self, chunks: Vec<serde_json::Value>) {
        self.send(StreamEvent::Chunks {
            chunks,
            from: self.delivery,
        })
        .await;
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
        // The answer is read only when no chunk went out live: a client that saw the stream
        // needs only its end.
        let streamed = self.streamed.load(Ordering::Relaxed);
        let job: JobOutcome = match store.job_outcome(tenant, self.job, !streamed).await {
            Ok(Some(job)) => job,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(job = %self.job, error = %e, "cannot read the job to report its outcome");
                return;
            }
        };
        match job.status {
            JobStatus::Succeeded => {
                // Answered by an earlier delivery, or by a call that could not stream: the
                // client still gets its answer as chunks.
                if let Some(answer) = &job.answer {
                    self.send_chunks(chunks_of(answer)).await;
                }
                self.send(StreamEvent::Done).await;
            }
            JobStatus::Failed | JobStatus::Cancelled => {
                let (kind, message, param) = match job.error {
                    Some(error) => (error.kind, error.message, error.param),
                    None => (
                        job.status.to_string(),
                        format!("the job is {}", job.status),
                        None,
                    ),
                };
                self.send(StreamEvent::Failed {
                    kind,
                    message,
                    param,
                    will_retry: false,
                })
                .await;
            }
            JobStatus::Queued | JobStatus::Running => {
                let (kind, error) = match job.last_attempt {
                    Some(last) => (last.outcome, last.error),
                    None => ("retry".into(), None),
                };
                self.send(StreamEvent::Failed {
                    kind,
                    message: error.unwrap_or_else(|| "the attempt will be retried".into()),
                    param: None,
                    will_retry: true,
                })
                .await;
            }
        }
    }
}
