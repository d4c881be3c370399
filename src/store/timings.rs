//! What a run of jobs took, read back from the jobs and attempts it left: how many are
//! finished, and each job's times. `sluice bench` reports from these.

use super::{Store, StoreError};
use crate::with_pool;

/// A whole run's figures, over every job in the store.
#[derive(Debug, Clone, Default)]
pub struct RunTimes {
    /// The first job's recording and the last one's finish, Unix milliseconds.
    pub first_created: i64,
    pub last_finished: i64,
    pub succeeded: i64,
    /// Each job's recording → finish, milliseconds, ascending.
    pub latencies_ms: Vec<i64>,
}

impl Store {
    /// Jobs that reached a final status.
    pub async fn finished_jobs(&self) -> Result<i64, StoreError> {
        Ok(with_pool!(self.pool(), p => sqlx::query_scalar(
            "SELECT COUNT(*) FROM jobs WHERE finished_at IS NOT NULL",
        )
        .fetch_one(p)
        .await?))
    }

    /// The run's figures, once every job is finished.
    pub async fn run_times(&self) -> Result<RunTimes, StoreError> {
        let (first_created, last_finished, succeeded): (i64, i64, i64) = with_pool!(self.pool(), p => sqlx::query_as(
                "SELECT MIN(created_at), MAX(finished_at), \
                 SUM(CASE WHEN status = 'succeeded' THEN 1 ELSE 0 END) FROM jobs",
            )
            .fetch_one(p)
            .await?);
        let mut latencies_ms: Vec<i64> = with_pool!(self.pool(), p => sqlx::query_scalar(
            "SELECT finished_at - created_at FROM jobs",
        )
        .fetch_all(p)
        .await?);
        latencies_ms.sort_unstable();
        Ok(RunTimes {
            first_created,
            last_finished,
            succeeded,
            latencies_ms,
        })
    }

    /// Each job's recording → its first attempt's start, milliseconds, ascending: the time
    /// spent recording, publishing, queued and in the worker before the provider is called.
    pub async fn times_to_first_attempt(&self) -> Result<Vec<i64>, StoreError> {
        let mut times: Vec<i64> = with_pool!(self.pool(), p => sqlx::query_scalar(
            "SELECT MIN(a.started_at) - j.created_at FROM jobs j \
             JOIN attempts a ON a.job_id = j.id GROUP BY j.id",
        )
        .fetch_all(p)
        .await?);
        times.sort_unstable();
        Ok(times)
    }
}
