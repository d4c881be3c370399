//! Accepting jobs: validate, record, publish. Shared by the HTTP API and the CLI.
//!
//! Order matters for "no accepted job is lost": a job is written `queued` to the store first,
//! then published with publisher confirms; only then is the producer told it was accepted. If
//! the queue does not confirm in time, the jobs are refused ([`Store::refuse_unpublished`]):
//! their rows are removed and their ids remembered, so a message the broker takes late is
//! dead-lettered by the worker instead of run, and the producer's 503 ([`NotQueued`]) is true:
//! nothing was accepted and nothing will run. Bad input is rejected before anything is written, naming the field, and so are jobs
//! that count against a `reject` budget already spent (see [`crate::budgets`]).
//!
//! A crash between recording and publishing leaves a row that is `queued` but not
//! `published`; [`Submitter::run_relay`] (started by `sluice serve`) publishes those later.

use crate::config::ResolvedConfig;
use crate::job::{Envelope, FieldError, JobSpec, Urgency};
use crate::queue::{Queue, QueueError, Unready};
use crate::store::{newly_created, InsertOutcome, Refusal, Store, StoreError};
use crate::streaming::wants_stream;
use crate::traces;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

pub use crate::job::MAX_REQUEST_BYTES;

/// The answer for one submitted job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Submitted {
    pub id: Uuid,
    /// True when the tenant had already submitted this `custom_id`: `id` is the first job's.
    pub duplicate: bool,
    /// With `duplicate`: the first job's request differs from this one, which was not
    /// recorded. Only a bulk's job can be one (see [`Submitter::submit_to_bulk`]).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub conflict: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("{0}")]
    Invalid(FieldError),
    /// Nothing was recorded: the queue could not be reached before anything was written.
    #[error("the job queue is unavailable, nothing was accepted; retry later ({0})")]
    QueueUnavailable(QueueError),
    /// The jobs were recorded, the queue did not confirm them, and they were refused.
    #[error("{0}")]
    NotQueued(NotQueued),
    #[error("the store failed, nothing was accepted: {0}")]
    Store(StoreError),
    #[error("{0}; nothing was accepted")]
    CustomIdReused(crate::store::CustomIdReused),
    #[error("{0}; nothing was accepted")]
    BudgetExceeded(crate::budgets::Exceeded),
}

/// Jobs the queue did not confirm in time, refused in the store so that none of them runs
/// even if the broker takes its message later. Says how to retry safely: with the same
/// `custom_id`s, which make a retry answered by the job that stands rather than run twice,
/// should an answer ever be lost.
#[derive(Debug)]
pub struct NotQueued {
    pub error: QueueError,
    /// The refused jobs' `custom_id`s, in order (`None` where a job had none).
    pub custom_ids: Vec<Option<String>>,
}

impl std::fmt::Display for NotQueued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let jobs = if self.custom_ids.len() == 1 {
            "the job"
        } else {
            "the jobs"
        };
        write!(
            f,
            "the job queue is unavailable and did not take {jobs} in time ({}); nothing was \
             accepted and nothing will run; retry later",
            self.error
        )?;
        let given: Vec<String> = self
            .custom_ids
            .iter()
            .flatten()
            .map(|id| format!("\"{id}\""))
            .collect();
        match (given.len(), self.custom_ids.len()) {
            (0, _) => write!(
                f,
                ", giving each job a custom_id: a retry with the same custom_id is answered \
                 with the job that stands, so it never runs twice even if an answer is lost"
            ),
            (n, total) if n == total => write!(
                f,
                " with the same custom_id ({}): a retry is then answered with the job that \
                 stands, so it never runs twice even if an answer is lost",
                given.join(", ")
            ),
            _ => write!(
                f,
                " with the same custom_ids ({}), and give the other jobs one, so that a retry \
                 never runs twice even if an answer is lost",
                given.join(", ")
            ),
        }
    }
}

impl SubmitError {
    /// A stable name for the kind of refusal, as a span's `error.type`.
    pub fn kind(&self) -> &'static str {
        match self {
            SubmitError::Invalid(_) => "invalid_request",
            SubmitError::QueueUnavailable(_) => "queue_unavailable",
            SubmitError::NotQueued(_) => "not_queued",
            SubmitError::Store(_) => "store_failed",
            SubmitError::CustomIdReused(_) => "custom_id_reused",
            SubmitError::BudgetExceeded(_) => "budget_exceeded",
        }
    }
}

/// The span of one submission of `envelopes` (in `bulk`, if given): the tenant, how many
/// jobs, and for a single job its id and urgency.
fn submit_span(envelopes: &[Envelope], bulk: Option<Uuid>) -> tracing::Span {
    use tracing::field::Empty;
    let span = tracing::info_span!(
        target: traces::TARGET,
        "submit",
        otel.kind = "producer",
        sluice.tenant = Empty,
        sluice.jobs = envelopes.len() as i64,
        sluice.job.id = Empty,
        sluice.urgency = Empty,
        sluice.bulk.id = Empty,
    );
    if span.is_disabled() {
        return span;
    }
    if let Some(first) = envelopes.first() {
        span.record("sluice.tenant", first.tenant.as_str());
    }
    if let [only] = envelopes {
        span.record("sluice.job.id", tracing::field::display(only.id));
        span.record("sluice.urgency", only.spec.urgency.as_str());
    }
    if let Some(bulk) = bulk {
        span.record("sluice.bulk.id", tracing::field::display(bulk));
    }
    span
}

impl From<StoreError> for SubmitError {
    fn from(e: StoreError) -> Self {
        match e {
            // The client's mistake, not the store's.
            StoreError::CustomIdReused(reused) => SubmitError::CustomIdReused(reused),
            other => SubmitError::Store(other),
        }
    }
}

#[derive(Clone)]
pub struct Submitter {
    pub config: Arc<ResolvedConfig>,
    pub store: Store,
    pub queue: Arc<dyn Queue>,
    /// The deployments jobs may run on: a budget refuses a job at submission when it has no
    /// room for the job's smallest estimate on any of them.
    pub router: Arc<crate::router::Router>,
    /// The configured budgets, which refuse jobs they have no room for.
    pub budgets: Arc<crate::budgets::Budgets>,
    /// Counts the jobs accepted.
    pub metrics: crate::telemetry::Metrics,
}

impl Submitter {
    /// Validates every spec (all or nothing), records them and publishes them.
    ///
    /// `path_prefix` is how the specs are named in errors: `""` for a single job, `"[i]"`-style
    /// indices are added for several.
    pub async fn submit(
        &self,
        tenant: &str,
        specs: Vec<JobSpec>,
    ) -> Result<Vec<Submitted>, SubmitError> {
        let envelopes = specs
            .into_iter()
            .map(|spec| Envelope::new(tenant, spec))
            .collect();
        self.submit_envelopes(envelopes).await
    }

    /// [`Submitter::submit`] for envelopes the caller made, when it must know a job's id
    /// before the job is published (to open its reply inbox first, say).
    pub async fn submit_envelopes(
        &self,
        envelopes: Vec<Envelope>,
    ) -> Result<Vec<Submitted>, SubmitError> {
        let several = envelopes.len() > 1;
        for (i, envelope) in envelopes.iter().enumerate() {
            let checked = self.check(&envelope.spec).and_then(|()| {
                // Only a client holding a reply inbox can receive a stream.
                if wants_stream(&envelope.spec.request.extra) && envelope.reply_to.is_none() {
                    return Err(FieldError::new(
                        "request.stream",
                        "a queued job cannot stream; leave \"stream\" out and poll the job, or \
                         call POST /v1/chat/completions to stream",
                    ));
                }
                Ok(())
            });
            checked.map_err(|e| {
                SubmitError::Invalid(if several {
                    e.within(&format!("[{i}]"))
                } else {
                    e
                })
            })?;
        }
        self.record_and_publish(envelopes, None).await
    }

    /// Submits jobs of bulk `bulk`, each with its line number in the submitted file. The specs
    /// must have passed [`Submitter::check`] (the bulk reader checks every line before any is
    /// submitted). A `custom_id` the bulk already holds answers that job, `duplicate: true`,
    /// and `conflict: true` as well when that job's request differs from the line's (the
    /// line is then not recorded, and the others still are).
    pub async fn submit_to_bulk(
        &self,
        tenant: &str,
        bulk: Uuid,
        lines: Vec<(u64, JobSpec)>,
    ) -> Result<Vec<Submitted>, SubmitError> {
        let (numbers, envelopes): (Vec<u64>, Vec<Envelope>) = lines
            .into_iter()
            .map(|(line, spec)| (line, Envelope::new(tenant, spec)))
            .unzip();
        self.record_and_publish(envelopes, Some((bulk, numbers)))
            .await
    }

    /// Records the jobs (`queued`, unpublished; in `bulk` at those line numbers if given),
    /// publishes the new ones with confirms, and marks them published. On the embedded queue
    /// a job outside a bulk is recorded, published and queued in one transaction instead.
    /// Each job accepted anew (not a duplicate) is counted.
    ///
    /// In the span `submit`, whose context each envelope carries to its worker when traces
    /// are exported.
    async fn record_and_publish(
        &self,
        mut envelopes: Vec<Envelope>,
        bulk: Option<(Uuid, Vec<u64>)>,
    ) -> Result<Vec<Submitted>, SubmitError> {
        let labels: Vec<_> = envelopes.iter().map(|e| self.metrics.job(e)).collect();
        let span = submit_span(&envelopes, bulk.as_ref().map(|(id, _)| *id));
        if let Some(traceparent) = traces::traceparent(&span) {
            for envelope in &mut envelopes {
                envelope.traceparent = Some(traceparent.clone());
            }
        }
        let answers = self
            .record_then_publish(envelopes, bulk)
            .instrument(span.clone())
            .await
            .inspect_err(|e| traces::record_error(&span, e.kind()))?;
        for (job, answer) in labels.iter().zip(&answers) {
            if !answer.duplicate {
                self.metrics.job_submitted(job);
            }
        }
        Ok(answers)
    }

    async fn record_then_publish(
        &self,
        mut envelopes: Vec<Envelope>,
        bulk: Option<(Uuid, Vec<u64>)>,
    ) -> Result<Vec<Submitted>, SubmitError> {
        // Each is recorded before its message exists: a worker finding no row for one knows
        // it was refused, rather than taking it for a job published straight onto the queue.
        for envelope in &mut envelopes {
            envelope.recorded = true;
        }
        // A broker that blocks publishing (a resource alarm) would hold the publish until
        // the timeout and then refuse it: refuse now, before anything is recorded.
        if let Some(Unready::Blocked(alarm)) = self.queue.unready() {
            return Err(SubmitError::QueueUnavailable(QueueError::Blocked(alarm)));
        }
        if let Some(exceeded) =
            crate::budgets::refuse_exhausted(&self.store, &self.budgets, &self.router, &envelopes)
                .await?
        {
            return Err(SubmitError::BudgetExceeded(exceeded));
        }
        // A queue kept in the store takes the jobs in the transaction that records them.
        if bulk.is_none() {
            if let Some(outcomes) = self.queue.insert_and_publish(&envelopes).await {
                return Ok(answers_for(&envelopes, &outcomes?));
            }
        }
        let outcomes = match bulk {
            None => self.store.insert_jobs(envelopes.clone()).await?,
            Some((bulk, lines)) => {
                self.store
                    .insert_bulk_jobs(bulk, lines.into_iter().zip(envelopes.clone()).collect())
                    .await?
            }
        };

        let created: Vec<&Envelope> = newly_created(&envelopes, &outcomes).collect();
        let ids: Vec<Uuid> = created.iter().map(|e| e.id).collect();
        if let Err(error) = self.publish_by_urgency(&created).await {
            // Bytes already in the socket may still reach the broker, after any timeout: the
            // jobs are refused in the store first, so that such a message is never run, and
            // only then is the producer told that nothing was accepted.
            match self.store.refuse_unpublished(ids).await {
                Ok(Refusal::Refused) => {
                    return Err(SubmitError::NotQueued(NotQueued {
                        error,
                        custom_ids: created.iter().map(|e| e.spec.custom_id.clone()).collect(),
                    }))
                }
                Ok(Refusal::TooLate) => tracing::warn!(
                    %error,
                    "the queue did not confirm jobs a worker has already taken; they stand, and \
                     the relay publishes any that are still missing"
                ),
                Err(refuse) => tracing::error!(
                    %error,
                    store_error = %refuse,
                    "the queue did not confirm jobs and the store could not refuse them; they \
                     stand, and the relay publishes them"
                ),
            }
            return Ok(answers_for(&envelopes, &outcomes));
        }
        // Not fatal if this fails: the jobs are on the queue, and a relay republishing them
        // later costs a duplicate message, which workers recognise.
        if let Err(e) = self.store.mark_published(ids).await {
            tracing::warn!(error = %e, "could not mark jobs published; the relay may publish them again");
        }
        Ok(answers_for(&envelopes, &outcomes))
    }

    /// Publishes jobs that were recorded at least `older_than` ago but never confirmed on the
    /// queue (the process died between the two steps). Returns how many it published.
    pub async fn relay_stranded(&self, older_than: Duration) -> Result<usize, SubmitError> {
        let mut relayed = 0;
        loop {
            let stranded = self.store.stranded_jobs(older_than, 500).await?;
            if stranded.is_empty() {
                return Ok(relayed);
            }
            self.publish_by_urgency(&stranded.iter().collect::<Vec<_>>())
                .await
                .map_err(SubmitError::QueueUnavailable)?;
            self.store
                .mark_published(stranded.iter().map(|e| e.id).collect())
                .await?;
            relayed += stranded.len();
            tracing::info!(relayed, "published jobs stranded by an earlier crash");
        }
    }

    /// Publishes again jobs the store has sent back to `queued` (a batch-tier job going
    /// real-time) and marks them published. Should this fail, they stay unpublished and the
    /// relay publishes them.
    pub async fn republish(&self, ids: &[Uuid]) -> Result<(), SubmitError> {
        if ids.is_empty() {
            return Ok(());
        }
        let envelopes = self.store.envelopes(ids).await?;
        self.publish_by_urgency(&envelopes.iter().collect::<Vec<_>>())
            .await
            .map_err(SubmitError::QueueUnavailable)?;
        self.store.mark_published(ids.to_vec()).await?;
        Ok(())
    }

    /// Publishes envelopes onto the queue of their urgency, one confirmed batch per urgency.
    async fn publish_by_urgency(&self, envelopes: &[&Envelope]) -> Result<(), QueueError> {
        let mut by_urgency: BTreeMap<Urgency, Vec<Vec<u8>>> = BTreeMap::new();
        for envelope in envelopes {
            by_urgency
                .entry(envelope.spec.urgency)
                .or_default()
                .push(envelope.to_bytes());
        }
        for (urgency, payloads) in by_urgency {
            self.queue.publish(urgency, payloads).await?;
        }
        Ok(())
    }

    /// Runs [`Submitter::relay_stranded`] every `every` until `cancel` fires.
    pub async fn run_relay(self, every: Duration, older_than: Duration, cancel: CancellationToken) {
        loop {
            if let Err(e) = self.relay_stranded(older_than).await {
                tracing::warn!(error = %e, "could not relay stranded jobs; will try again");
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
        }
    }

    /// Everything that can be known wrong about a job before it runs.
    pub fn check(&self, spec: &JobSpec) -> Result<(), FieldError> {
        check_spec(spec, |model| {
            self.config
                .resolve_model(model)
                .is_none()
                .then(|| self.config.unknown_model(model))
        })
    }
}

/// [`Submitter::check`] for a caller that knows the models by other means (a client holding
/// the server's model list): `unknown_model` answers the error message for a model that does
/// not exist, `None` for one that does.
pub fn check_spec(
    spec: &JobSpec,
    unknown_model: impl FnOnce(&str) -> Option<String>,
) -> Result<(), FieldError> {
    spec.validate()?;
    if let Some(message) = unknown_model(&spec.request.model) {
        return Err(FieldError::new("request.model", message));
    }
    if let Some(deadline) = spec.deadline {
        if deadline <= chrono::Utc::now() {
            return Err(FieldError::new(
                "deadline",
                format!("{deadline} is in the past"),
            ));
        }
    }
    let size = serde_json::to_vec(&spec.request)
        .map(|v| v.len())
        .unwrap_or(0);
    if size > MAX_REQUEST_BYTES {
        return Err(FieldError::new(
            "request",
            format!("is {size} bytes; the limit is {MAX_REQUEST_BYTES} bytes"),
        ));
    }
    Ok(())
}

/// What the client hears about each submitted job: its id, or the id of the job that already
/// holds its `custom_id` (`duplicate`, and `conflict` when that job's request differs).
fn answers_for(envelopes: &[Envelope], outcomes: &[InsertOutcome]) -> Vec<Submitted> {
    envelopes
        .iter()
        .zip(outcomes)
        .map(|(envelope, outcome)| match outcome {
            InsertOutcome::Created => Submitted {
                id: envelope.id,
                duplicate: false,
                conflict: false,
            },
            InsertOutcome::Existing(id) => Submitted {
                id: *id,
                duplicate: true,
                conflict: false,
            },
            InsertOutcome::Conflicting(id) => Submitted {
                id: *id,
                duplicate: true,
                conflict: true,
            },
        })
        .collect()
}
