//! The processes of a cluster as the store knows them: a heartbeat each, and each process's
//! report of every deployment's health (see `crate::cluster`), so any process can show the
//! cluster's view and adopt a circuit another opened.

use super::capacity::{delete_older, duration, nanos, on_store_clock};
use super::{Store, StoreError};
use crate::{with_conn, with_pool};
use std::time::Duration;

/// A process as it announces itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessBeat {
    pub id: String,
    /// `api`, `worker` or `api+worker`.
    pub role: String,
    pub host: String,
    pub pid: u32,
}

/// A process as the store saw it last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessSeen {
    pub beat: ProcessBeat,
    /// How long ago it last beat.
    pub age: Duration,
    /// How long it has run.
    pub up: Duration,
}

/// One process's report of one deployment.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthReport {
    pub process: String,
    pub deployment: String,
    /// The process's health view of the deployment, as JSON.
    pub report: serde_json::Value,
    /// How long a circuit this process opened itself stays open, when it did.
    pub opened_for: Option<Duration>,
    /// How long ago it was reported.
    pub age: Duration,
}

/// What a process reports of one deployment.
#[derive(Debug, Clone)]
pub struct DeploymentReport {
    pub deployment: String,
    pub report: serde_json::Value,
    pub opened_for: Option<Duration>,
}

impl Store {
    /// Records that `process` is alive now, and its reports of each deployment's health, in
    /// one transaction.
    pub async fn beat(
        &self,
        process: ProcessBeat,
        reports: Vec<DeploymentReport>,
    ) -> Result<(), StoreError> {
        self.write(move |mut conn| {
            Box::pin(async move {
                let sql = on_store_clock(
                    "INSERT INTO cluster_processes (id, role, host, pid, started_ns, seen_ns) \
                     VALUES ($1, $2, $3, $4, {now}, {now}) \
                     ON CONFLICT (id) DO UPDATE SET seen_ns = excluded.seen_ns",
                    conn.dialect(),
                );
                with_conn!(conn, c => sqlx::query(&sql)
                    .bind(&process.id)
                    .bind(&process.role)
                    .bind(&process.host)
                    .bind(i64::from(process.pid))
                    .execute(&mut *c)
                    .await?
                    .rows_affected());
                let sql = on_store_clock(
                    "INSERT INTO process_health \
                     (process, deployment, report, opened_until_ns, seen_ns) \
                     VALUES ($1, $2, $3, {now} + $4, {now}) \
                     ON CONFLICT (process, deployment) DO UPDATE SET \
                     report = excluded.report, opened_until_ns = excluded.opened_until_ns, \
                     seen_ns = excluded.seen_ns",
                    conn.dialect(),
                );
                for report in &reports {
                    let opened_until = report.opened_for.map(nanos);
                    with_conn!(conn, c => sqlx::query(&sql)
                        .bind(&process.id)
                        .bind(&report.deployment)
                        .bind(report.report.to_string())
                        .bind(opened_until)
                        .execute(&mut *c)
                        .await?
                        .rows_affected());
                }
                Ok(())
            })
        })
        .await
    }

    /// The processes that beat within `fresh`, oldest first.
    pub async fn processes(&self, fresh: Duration) -> Result<Vec<ProcessSeen>, StoreError> {
        let sql = on_store_clock(
            "SELECT id, role, host, pid, {now} - seen_ns, {now} - started_ns \
             FROM cluster_processes WHERE seen_ns > {now} - $1 ORDER BY started_ns, id",
            self.dialect(),
        );
        let rows: Vec<(String, String, String, i64, i64, i64)> = with_pool!(self.pool(), p =>
            sqlx::query_as(&sql).bind(nanos(fresh)).fetch_all(p).await?);
        Ok(rows
            .into_iter()
            .map(|(id, role, host, pid, age, up)| ProcessSeen {
                beat: ProcessBeat {
                    id,
                    role,
                    host,
                    pid: u32::try_from(pid).unwrap_or(0),
                },
                age: duration(age),
                up: duration(up),
            })
            .collect())
    }

    /// Every process's reports made within `fresh`.
    pub async fn health_reports(&self, fresh: Duration) -> Result<Vec<HealthReport>, StoreError> {
        let sql = on_store_clock(
            "SELECT process, deployment, report, opened_until_ns - {now}, {now} - seen_ns \
             FROM process_health WHERE seen_ns > {now} - $1 ORDER BY deployment, process",
            self.dialect(),
        );
        let rows: Vec<(String, String, String, Option<i64>, i64)> = with_pool!(self.pool(), p =>
            sqlx::query_as(&sql).bind(nanos(fresh)).fetch_all(p).await?);
        rows.into_iter()
            .map(|(process, deployment, report, opened_left, age)| {
                let report = serde_json::from_str(&report)
                    .map_err(|e| StoreError::Corrupt(format!("process_health.report: {e}")))?;
                Ok(HealthReport {
                    process,
                    deployment,
                    report,
                    opened_for: opened_left.filter(|left| *left > 0).map(duration),
                    age: duration(age),
                })
            })
            .collect()
    }

    /// Forgets processes (and their reports) silent for longer than `after`.
    pub async fn prune_processes(&self, after: Duration) -> Result<u64, StoreError> {
        self.write(move |mut conn| {
            Box::pin(async move {
                let forget = "DELETE FROM process_health WHERE seen_ns < {now} - $1";
                delete_older(&mut conn, forget, after).await?;
                let forget = "DELETE FROM cluster_processes WHERE seen_ns < {now} - $1";
                delete_older(&mut conn, forget, after).await
            })
        })
        .await
    }
}
