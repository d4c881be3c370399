//! What the scheduler remembers: when it first saw each recurring job, and each run it fired.
//!
//! A run is recorded *after* its job is accepted, and the job's `custom_id` is derived from
//! the definition and the due time; so a crash between the two re-fires the same due time
//! after the restart, which the `custom_id` turns into a no-op. Each due time runs once.

use super::{ms_to_time, now_ms, Store, StoreError};
use crate::{with_conn, with_pool};
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// One fired (or skipped) run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRecord {
    pub name: String,
    pub due_at: DateTime<Utc>,
    pub manual: bool,
    /// The job submitted, or the bulk for a JSONL file (`note` says "bulk"); `None` when the
    /// run was skipped.
    pub job_id: Option<Uuid>,
    pub note: Option<String>,
}

impl Store {
    /// When the scheduler first saw `name`, recording `now` if it never had.
    pub async fn schedule_first_seen(
        &self,
        name: &str,
        now: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, StoreError> {
        let name = name.to_string();
        let ms = self
            .write(move |mut conn| {
                Box::pin(async move {
                    with_conn!(conn, c => sqlx::query(
                        "INSERT INTO schedules (name, first_seen) VALUES ($1, $2) \
                         ON CONFLICT DO NOTHING",
                    )
                    .bind(&name)
                    .bind(now.timestamp_millis())
                    .execute(&mut *c)
                    .await?
                    .rows_affected());
                    with_conn!(conn, c => sqlx::query_scalar::<_, i64>(
                        "SELECT first_seen FROM schedules WHERE name = $1",
                    )
                    .bind(&name)
                    .fetch_one(&mut *c)
                    .await)
                })
            })
            .await?;
        Ok(ms_to_time(ms))
    }

    /// The latest scheduled (not manual) due time of `name` that has run.
    pub async fn last_scheduled_run(
        &self,
        name: &str,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let ms: Option<i64> = with_pool!(self.pool(), p => sqlx::query_scalar(
            "SELECT MAX(due_at) FROM schedule_runs WHERE name = $1 AND manual = FALSE",
        )
        .bind(name)
        .fetch_one(p)
        .await?);
        Ok(ms.map(ms_to_time))
    }

    /// Records a run; a second record of the same run is ignored.
    pub async fn record_run(&self, run: RunRecord) -> Result<(), StoreError> {
        self.write(move |mut conn| {
            Box::pin(async move {
                with_conn!(conn, c => sqlx::query(
                    "INSERT INTO schedule_runs (name, due_at, fired_at, manual, job_id, note) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                )
                .bind(&run.name)
                .bind(run.due_at.timestamp_millis())
                .bind(now_ms())
                .bind(run.manual)
                .bind(run.job_id.map(|id| id.to_string()))
                .bind(&run.note)
                .execute(&mut *c)
                .await?
                .rows_affected());
                Ok(())
            })
        })
        .await
    }

    /// The runs of `name`, newest first, at most `limit`.
    pub async fn runs(&self, name: &str, limit: i64) -> Result<Vec<RunRecord>, StoreError> {
        let rows: Vec<(i64, bool, Option<String>, Option<String>)> = with_pool!(self.pool(), p => sqlx::query_as(
                "SELECT due_at, manual, job_id, note FROM schedule_runs WHERE name = $1 \
                 ORDER BY due_at DESC LIMIT $2",
            )
            .bind(name)
            .bind(limit)
            .fetch_all(p)
            .await?);
        rows.into_iter()
            .map(|(due_at, manual, job_id, note)| {
                let job_id = job_id
                    .map(|id| Uuid::parse_str(&id))
                    .transpose()
                    .map_err(|e| StoreError::Corrupt(format!("schedule_runs.job_id: {e}")))?;
                Ok(RunRecord {
                    name: name.to_string(),
                    due_at: ms_to_time(due_at),
                    manual,
                    job_id,
                    note,
                })
            })
            .collect()
    }
}
