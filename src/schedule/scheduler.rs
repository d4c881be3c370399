//! The scheduler: fires each recurring job's due times, each exactly once, across restarts.
//!
//! It keeps no state of its own. Every tick asks the store when each definition last ran
//! (or, the first time, records when it was first seen, so nothing before that is owed),
//! fires what has come due since, and sleeps until the next due time. A job's `custom_id` is
//! derived from the definition's name and the due time, so a crash between submitting a run
//! and recording it re-fires that due time harmlessly: the queue gets no second job.
//!
//! Due times that passed while Sluice was down follow the definition's [`CatchUp`] policy;
//! one fired within [`ON_TIME`] of its due time is simply on time, not "missed".

use super::definition::{CatchUp, Definition, Work, MAX_CATCH_UP};
use crate::bulk::submit::submit_body;
use crate::bulk::wire::BulkRequest;
use crate::bulk::Defaults;
use crate::job::JobSpec;
use crate::store::schedules::RunRecord;
use crate::store::StoreError;
use crate::submit::{SubmitError, Submitter};
use chrono::{DateTime, Utc};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// How late a run may fire and still count as on time rather than missed.
pub const ON_TIME: Duration = Duration::from_secs(60);
/// The longest the scheduler sleeps, so a changed clock is noticed within a minute.
const MAX_SLEEP: Duration = Duration::from_secs(60);
/// How long to wait before trying again when the store or the queue failed.
const TROUBLE_DELAY: Duration = Duration::from_secs(5);

/// Why a run could not be fired.
#[derive(Debug, thiserror::Error)]
pub enum FireError {
    #[error("could not submit the job: {0}")]
    Submit(#[from] SubmitError),
    #[error("could not record the run: {0}")]
    Store(#[from] StoreError),
    #[error("its deadline ({0}) passed before it could be submitted")]
    PastDeadline(DateTime<Utc>),
    #[error("could not submit {file} as a bulk: {source}")]
    Bulk {
        file: String,
        source: crate::bulk::BulkError,
    },
}

/// What to do with one due time.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Action {
    Fire,
    /// Record it as not run, with why, so it is not considered again.
    Skip(&'static str),
}

/// Fires recurring jobs through a [`Submitter`].
pub struct Scheduler {
    definitions: Vec<Definition>,
    submitter: Submitter,
}

impl Scheduler {
    pub fn new(definitions: Vec<Definition>, submitter: Submitter) -> Self {
        Scheduler {
            definitions,
            submitter,
        }
    }

    pub fn definitions(&self) -> &[Definition] {
        &self.definitions
    }

    /// Fires due runs until `cancel` fires.
    pub async fn run(self, cancel: CancellationToken) {
        let names: Vec<&str> = self.definitions.iter().map(|d| d.name.as_str()).collect();
        tracing::info!(definitions = ?names, "scheduler started");
        loop {
            let now = Utc::now();
            let wait = match self.tick(now).await {
                Ok(Some(next)) => (next - now).to_std().unwrap_or(Duration::ZERO),
                Ok(None) => MAX_SLEEP,
                Err(e) => {
                    tracing::warn!(error = %e, "scheduler cannot read its runs; trying again");
                    TROUBLE_DELAY
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(wait.min(MAX_SLEEP)) => {}
            }
        }
    }

    /// Fires (or skips) everything due at `now`; returns the earliest next due time.
    pub async fn tick(&self, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>, StoreError> {
        let store = &self.submitter.store;
        let mut earliest: Option<DateTime<Utc>> = None;
        for definition in &self.definitions {
            let since = match store.last_scheduled_run(&definition.name).await? {
                Some(last) => last,
                None => store.schedule_first_seen(&definition.name, now).await?,
            };
            let due = definition.due_between(since, now, MAX_CATCH_UP);
            for (due_at, action) in plan(definition.catch_up, &due, now) {
                match action {
                    Action::Fire => match self.fire(definition, due_at, false).await {
                        Ok(job) => {
                            tracing::info!(schedule = %definition.name, %due_at, %job, "fired")
                        }
                        Err(FireError::Submit(e)) => {
                            // Not recorded, so the next tick tries this due time again.
                            tracing::warn!(schedule = %definition.name, %due_at, error = %e, "could not fire; will retry");
                            let retry = now + TROUBLE_DELAY;
                            earliest = Some(earliest.map_or(retry, |t| t.min(retry)));
                        }
                        Err(e) => {
                            tracing::warn!(schedule = %definition.name, %due_at, error = %e, "run skipped")
                        }
                    },
                    Action::Skip(note) => {
                        tracing::info!(schedule = %definition.name, %due_at, note, "run skipped");
                        store
                            .record_run(RunRecord {
                                name: definition.name.clone(),
                                due_at,
                                manual: false,
                                job_id: None,
                                note: Some(note.to_string()),
                            })
                            .await?;
                    }
                }
            }
            if let Some(next) = definition.next_after(now) {
                earliest = Some(earliest.map_or(next, |t| t.min(next)));
            }
        }
        Ok(earliest)
    }

    /// Submits the run of `definition` due at `due_at` and records it; returns the id of the
    /// job (or, for a JSONL file, of the bulk).
    /// A manual run (`sluice jobs run`) is its own run, beside any scheduled one.
    pub async fn fire(
        &self,
        definition: &Definition,
        due_at: DateTime<Utc>,
        manual: bool,
    ) -> Result<Uuid, FireError> {
        let store = &self.submitter.store;
        let record = |job_id: Option<Uuid>, note: Option<String>| RunRecord {
            name: definition.name.clone(),
            due_at,
            manual,
            job_id,
            note,
        };
        let deadline = definition
            .deadline
            .map(|d| due_at + chrono::Duration::from_std(d).unwrap_or(chrono::TimeDelta::MAX));
        if let Some(deadline) = deadline.filter(|d| *d <= Utc::now()) {
            let error = FireError::PastDeadline(deadline);
            store
                .record_run(record(None, Some(error.to_string())))
                .await?;
            return Err(error);
        }
        let custom_id = run_id(&definition.name, due_at, manual);
        let (id, note) = match &definition.work {
            Work::Request(request) => {
                let mut spec = JobSpec::new(definition.urgency, request.clone());
                spec.tags = definition.tags.clone();
                spec.deadline = deadline;
                spec.custom_id = Some(custom_id);
                let submitted = self
                    .submitter
                    .submit(&definition.tenant, vec![spec])
                    .await?;
                (submitted[0].id, None)
            }
            Work::File(path) => (
                self.submit_file(definition, path, custom_id, deadline)
                    .await?,
                Some("bulk".to_string()),
            ),
        };
        store.record_run(record(Some(id), note)).await?;
        Ok(id)
    }

    /// Submits the JSONL file of a run as a bulk named like the run's jobs, so a second
    /// firing of the same due time adds nothing to it; returns the bulk id.
    async fn submit_file(
        &self,
        definition: &Definition,
        path: &std::path::Path,
        name: String,
        deadline: Option<DateTime<Utc>>,
    ) -> Result<Uuid, FireError> {
        let failed = |source| FireError::Bulk {
            file: path.display().to_string(),
            source,
        };
        let file = tokio::fs::File::open(path).await.map_err(|source| {
            failed(crate::bulk::BulkError::Read {
                what: path.display().to_string(),
                source,
            })
        })?;
        let request = BulkRequest {
            name: Some(name),
            defaults: Defaults {
                model: None,
                urgency: definition.urgency,
                deadline,
                tags: definition.tags.clone(),
            },
            skip_invalid: false,
        };
        let submission = submit_body(
            &self.submitter,
            &definition.tenant,
            tokio::io::BufReader::new(file),
            &request,
            &mut |_, _| {},
        )
        .await
        .map_err(failed)?;
        Ok(submission.id)
    }
}

/// The `custom_id` of a run: the same for the same due time, whoever fires it, however often.
pub fn run_id(name: &str, due_at: DateTime<Utc>, manual: bool) -> String {
    let kind = if manual { "manual:" } else { "" };
    format!(
        "schedule:{name}:{kind}{}",
        due_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    )
}

/// What to do with each due time (oldest first) at `now`, under `catch_up`.
fn plan(
    catch_up: CatchUp,
    due: &[DateTime<Utc>],
    now: DateTime<Utc>,
) -> Vec<(DateTime<Utc>, Action)> {
    let on_time_from = now - chrono::Duration::from_std(ON_TIME).unwrap_or_default();
    let (missed, on_time): (Vec<_>, Vec<_>) = due.iter().partition(|t| **t < on_time_from);
    let mut plan: Vec<(DateTime<Utc>, Action)> = Vec::new();
    match (catch_up, missed.last()) {
        (_, None) => {}
        (CatchUp::All, _) => plan.extend(missed.iter().map(|t| (*t, Action::Fire))),
        (CatchUp::Latest, Some(newest)) if on_time.is_empty() => plan.push((*newest, Action::Fire)),
        (CatchUp::Latest, Some(newest)) => plan.push((
            *newest,
            Action::Skip("missed while Sluice was down; a later run is due now"),
        )),
        (CatchUp::Skip, Some(newest)) => plan.push((
            *newest,
            Action::Skip("missed while Sluice was down (catch_up = \"skip\")"),
        )),
    }
    plan.extend(on_time.iter().map(|t| (*t, Action::Fire)));
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minutes_ago(now: DateTime<Utc>, minutes: i64) -> DateTime<Utc> {
        now - chrono::Duration::minutes(minutes)
    }

    #[test]
    fn catch_up_policies_decide_what_missed_runs_become() {
        let now = Utc::now();
        let missed = [
            minutes_ago(now, 30),
            minutes_ago(now, 20),
            minutes_ago(now, 10),
        ];
        let fired = |plan: &[(DateTime<Utc>, Action)]| {
            plan.iter()
                .filter(|(_, a)| *a == Action::Fire)
                .map(|(t, _)| *t)
                .collect::<Vec<_>>()
        };

        let all = plan(CatchUp::All, &missed, now);
        assert_eq!(fired(&all), missed, "all: every missed run, oldest first");

        let latest = plan(CatchUp::Latest, &missed, now);
        assert_eq!(fired(&latest), [missed[2]], "latest: only the newest");

        let skip = plan(CatchUp::Skip, &missed, now);
        assert!(fired(&skip).is_empty());
        assert_eq!(
            skip.len(),
            1,
            "the newest missed run is recorded as skipped"
        );
        assert!(matches!(skip[0], (t, Action::Skip(_)) if t == missed[2]));

        // A run due moments ago is on time whatever the policy; with it due, `latest` does
        // not also fire an old one.
        let on_time = now - chrono::Duration::seconds(2);
        let mixed = [missed[0], on_time];
        for policy in [CatchUp::Skip, CatchUp::Latest] {
            assert_eq!(fired(&plan(policy, &mixed, now)), [on_time], "{policy:?}");
        }
        assert!(plan(CatchUp::All, &[], now).is_empty());
    }

    #[test]
    fn run_ids_are_stable_per_due_time_and_apart_for_manual_runs() {
        let due = DateTime::parse_from_rfc3339("2026-11-24T05:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            run_id("digest", due, false),
            "schedule:digest:2026-11-24T05:00:00.000Z"
        );
        assert_ne!(run_id("digest", due, false), run_id("digest", due, true));
    }
}
