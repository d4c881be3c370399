//! The dashboard's reads (`crate::ui`): a page of jobs under filters, newest first by keyset,
//! the jobs finished per minute, the queue's depth per urgency, the newest bulks, open
//! provider batches.
//!
//! Each is bounded by an index (`migrations/*/…_dashboard.sql`), never a scan of every job:
//! a page walks `(status, id)`, `(tenant, id)`, `(model, id)` or the primary key backwards
//! from its cursor and stops after a page; the chart reads the last hour of `finished_at`;
//! the depths read the `queued` and `running` entries of `(status, id)`. A page of a million
//! jobs costs what a page of a hundred does.

use super::{ms_to_time, Store, StoreError};
use crate::job::{JobStatus, Urgency};
use crate::with_pool;
use chrono::{DateTime, Utc};
use sqlx::Row;
use uuid::Uuid;

/// Which jobs a page lists; `None` is any.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub tenant: Option<String>,
    pub status: Option<JobStatus>,
    pub urgency: Option<Urgency>,
    /// What the job asked for: a route or a deployment.
    pub model: Option<String>,
}

/// A job as a list shows it: no request, answer or attempts.
#[derive(Debug, Clone)]
pub struct JobSummary {
    pub id: Uuid,
    pub tenant: String,
    pub status: JobStatus,
    pub urgency: Urgency,
    pub model: String,
    pub custom_id: Option<String>,
    pub attempts: u32,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Why it failed, by [`crate::failure::JobFailure`]'s stable name.
    pub error_kind: Option<String>,
}

/// How many jobs ended with `status` in the minute starting at `minute`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MinuteCount {
    pub minute: DateTime<Utc>,
    pub status: JobStatus,
    pub jobs: i64,
}

/// The jobs of one urgency waiting or under way now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Depth {
    pub urgency: Urgency,
    pub queued: i64,
    pub running: i64,
    /// When the oldest queued job was submitted.
    pub oldest_queued: Option<DateTime<Utc>>,
}

/// A job's stored status or urgency, or the row is corrupt.
fn parse<T: std::str::FromStr<Err = String>>(text: &str) -> Result<T, StoreError> {
    text.parse().map_err(StoreError::Corrupt)
}

impl Store {
    /// Up to `limit` jobs matching `filter` whose ids come before `before` (the last id of
    /// the previous page), newest first: ids are UUIDv7, so their order is submission order.
    pub async fn jobs_page(
        &self,
        filter: &JobFilter,
        before: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<JobSummary>, StoreError> {
        let mut conditions = Vec::new();
        let mut binds: Vec<String> = Vec::new();
        let mut condition = |column: &str, value: String| {
            binds.push(value);
            conditions.push(format!("{column} ${}", binds.len()));
        };
        if let Some(tenant) = &filter.tenant {
            condition("tenant =", tenant.clone());
        }
        if let Some(status) = filter.status {
            condition("status =", status.to_string());
        }
        if let Some(urgency) = filter.urgency {
            condition("urgency =", urgency.to_string());
        }
        if let Some(model) = &filter.model {
            condition("model =", model.clone());
        }
        if let Some(before) = before {
            condition("id <", before.to_string());
        }
        let mut sql = "SELECT id, tenant, status, urgency, model, custom_id, attempts, \
                       created_at, finished_at, error_kind FROM jobs"
            .to_string();
        if !conditions.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conditions.join(" AND "));
        }
        sql.push_str(&format!(" ORDER BY id DESC LIMIT {limit}"));
        type SummaryRow = (
            String,
            String,
            String,
            String,
            String,
            Option<String>,
            i64,
            i64,
            Option<i64>,
            Option<String>,
        );
        let rows: Vec<SummaryRow> = with_pool!(self.pool(), p => {
            let mut query = sqlx::query_as(&sql);
            for value in &binds {
                query = query.bind(value);
            }
            query.fetch_all(p).await?
        });
        rows.into_iter()
            .map(|row| {
                Ok(JobSummary {
                    id: Uuid::parse_str(&row.0).map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    tenant: row.1,
                    status: parse(&row.2)?,
                    urgency: parse(&row.3)?,
                    model: row.4,
                    custom_id: row.5,
                    attempts: row.6 as u32,
                    created_at: ms_to_time(row.7),
                    finished_at: row.8.map(ms_to_time),
                    error_kind: row.9,
                })
            })
            .collect()
    }

    /// The tenant of job `id`, for an operator, who may read any job through the tenant's
    /// own reads.
    pub async fn job_tenant(&self, id: Uuid) -> Result<Option<String>, StoreError> {
        Ok(with_pool!(self.pool(), p => sqlx::query_scalar(
            "SELECT tenant FROM jobs WHERE id = $1",
        )
        .bind(id.to_string())
        .fetch_optional(p)
        .await?))
    }

    /// The request job `id` of `tenant` was submitted with, as received.
    pub async fn job_request(&self, tenant: &str, id: Uuid) -> Result<Option<String>, StoreError> {
        Ok(with_pool!(self.pool(), p => sqlx::query_scalar(
            "SELECT request FROM jobs WHERE id = $1 AND tenant = $2",
        )
        .bind(id.to_string())
        .bind(tenant)
        .fetch_optional(p)
        .await?))
    }

    /// Jobs that ended since `since`, per minute and final status, of `tenant` or everyone's.
    pub async fn finished_per_minute(
        &self,
        tenant: Option<&str>,
        since: DateTime<Utc>,
    ) -> Result<Vec<MinuteCount>, StoreError> {
        // Minutes of Unix time: integer division is the same in both dialects.
        let rows: Vec<(i64, String, i64)> = with_pool!(self.pool(), p => sqlx::query_as(
            "SELECT finished_at / 60000 AS minute, status, COUNT(*) FROM jobs \
             WHERE finished_at >= $1 AND ($2 IS NULL OR tenant = $2) \
             GROUP BY finished_at / 60000, status ORDER BY minute",
        )
        .bind(since.timestamp_millis())
        .bind(tenant)
        .fetch_all(p)
        .await?);
        rows.into_iter()
            .map(|(minute, status, jobs)| {
                Ok(MinuteCount {
                    minute: ms_to_time(minute * 60_000),
                    status: parse(&status)?,
                    jobs,
                })
            })
            .collect()
    }

    /// Per urgency: the jobs queued and running now, and when the oldest queued one was
    /// submitted; of `tenant` or everyone's. Urgencies with neither are left out.
    pub async fn depths(&self, tenant: Option<&str>) -> Result<Vec<Depth>, StoreError> {
        let rows: Vec<(String, String, i64, Option<i64>)> = with_pool!(self.pool(), p => sqlx::query_as(
            "SELECT urgency, status, COUNT(*), MIN(created_at) FROM jobs \
             WHERE status IN ('queued', 'running') AND ($1 IS NULL OR tenant = $1) \
             GROUP BY urgency, status",
        )
        .bind(tenant)
        .fetch_all(p)
        .await?);
        let mut depths: Vec<Depth> = Vec::new();
        for (urgency, status, jobs, oldest) in rows {
            let urgency: Urgency = parse(&urgency)?;
            let at = match depths.iter().position(|d| d.urgency == urgency) {
                Some(at) => at,
                None => {
                    depths.push(Depth {
                        urgency,
                        queued: 0,
                        running: 0,
                        oldest_queued: None,
                    });
                    depths.len() - 1
                }
            };
            match parse::<JobStatus>(&status)? {
                JobStatus::Queued => {
                    depths[at].queued = jobs;
                    depths[at].oldest_queued = oldest.map(ms_to_time);
                }
                _ => depths[at].running = jobs,
            }
        }
        depths.sort_by_key(|d| Urgency::ALL.iter().position(|u| *u == d.urgency));
        Ok(depths)
    }

    /// The newest bulks (a batch of OpenAI's Batch API is one too) of `tenant` or everyone's,
    /// with their tenant: newest first by their UUIDv7 ids, at most `limit`.
    pub async fn recent_bulks(
        &self,
        tenant: Option<&str>,
        limit: u32,
    ) -> Result<Vec<(String, Uuid)>, StoreError> {
        let rows: Vec<(String, String)> = with_pool!(self.pool(), p => sqlx::query_as(
            "SELECT tenant, id FROM bulks WHERE ($1 IS NULL OR tenant = $1) \
             ORDER BY id DESC LIMIT $2",
        )
        .bind(tenant)
        .bind(i64::from(limit))
        .fetch_all(p)
        .await?);
        rows.into_iter()
            .map(|(tenant, id)| {
                let id = Uuid::parse_str(&id).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                Ok((tenant, id))
            })
            .collect()
    }

    /// Provider batches not yet ended, by state (`collecting`, `submitting`, `submitted`).
    pub async fn open_provider_batches(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = with_pool!(self.pool(), p => sqlx::query(
            "SELECT state, COUNT(*) FROM provider_batches \
             WHERE state IN ('collecting', 'submitting', 'submitted') GROUP BY state ORDER BY state",
        )
        .fetch_all(p)
        .await?
        .into_iter()
        .map(|row| (row.get::<String, _>(0), row.get::<i64, _>(1)))
        .collect());
        Ok(rows)
    }
}
