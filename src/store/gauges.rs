//! What the metrics read from the store when they are scraped, beside the dashboard's reads
//! they share (`open_provider_batches`): the oldest queued job of each urgency, one seek of a
//! partial index that holds only queued jobs, never a read of every job, so a scrape costs
//! the same with ten jobs in the store or ten million.

use super::{Store, StoreError};
use crate::job::Urgency;
use crate::with_pool;

impl Store {
    /// When the oldest job of each urgency that is still `queued` (waiting for a worker, on
    /// the delay ladder, or between attempts) was submitted, in Unix milliseconds; `None`
    /// for an urgency with none. One seek of the partial index `jobs_queued` each.
    pub async fn oldest_queued(&self) -> Result<Vec<(Urgency, Option<i64>)>, StoreError> {
        let mut oldest = Vec::new();
        for urgency in Urgency::ALL {
            // The literal `'queued'` lets both planners match the partial index.
            let at: Option<i64> = with_pool!(self.pool(), p => sqlx::query_scalar(
                "SELECT MIN(created_at) FROM jobs WHERE status = 'queued' AND urgency = $1",
            )
            .bind(urgency.as_str())
            .fetch_one(p)
            .await?);
            oldest.push((urgency, at));
        }
        Ok(oldest)
    }
}
