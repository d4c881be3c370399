//! The cluster's view of its providers, for `GET /v1/providers` on any process: each
//! deployment's health merged from every process's report, and each key's capacity as the
//! store's buckets and rests hold it (what the whole cluster has left, not one process).

use crate::gcra::KeyLimit;
use crate::limits::shared::shape;
use crate::limits::KeyCapacity;
use crate::router::health::HealthView;
use crate::router::{Deployment, DeploymentView, Router};
use crate::store::{BucketLevel, HealthReport, KeyRest, ProcessSeen, RestKind, Store, StoreError};
use serde::Serialize;
use std::time::Duration;

/// The whole answer.
#[derive(Debug, Serialize)]
pub struct ClusterView {
    /// The processes that beat within the last few seconds.
    pub processes: Vec<ProcessView>,
    pub deployments: Vec<DeploymentClusterView>,
}

/// A process as every tenant may see it: what it does and that it is alive, not where it
/// runs (its host and pid are the operator's, kept in the store for them).
#[derive(Debug, Serialize)]
pub struct ProcessView {
    pub id: String,
    pub role: String,
    pub seen_ms_ago: u64,
    pub up_s: u64,
}

/// One deployment as the cluster sees it: the view one process gives of it, with its health
/// merged from the reports of the processes that call providers (closed with no calls when
/// none has reported yet) and its keys' capacity the cluster's, and each reporting process's
/// own view beside.
#[derive(Debug, Serialize)]
pub struct DeploymentClusterView {
    #[serde(flatten)]
    pub deployment: DeploymentView,
    pub by_process: Vec<ProcessHealth>,
}

#[derive(Debug, Serialize)]
pub struct ProcessHealth {
    pub process: String,
    #[serde(flatten)]
    pub health: HealthView,
}

/// Reads the store and builds the view.
pub async fn read(store: &Store, router: &Router) -> Result<ClusterView, StoreError> {
    let processes = store.processes(super::FRESH).await?;
    let reports = store.health_reports(super::FRESH).await?;
    let levels = store.bucket_levels().await?;
    let rests = store.key_rests().await?;
    Ok(ClusterView {
        processes: processes.into_iter().map(process_view).collect(),
        deployments: router
            .deployments()
            .map(|d| deployment_view(d, &reports, &levels, &rests))
            .collect(),
    })
}

fn process_view(seen: ProcessSeen) -> ProcessView {
    ProcessView {
        id: seen.beat.id,
        role: seen.beat.role,
        seen_ms_ago: seen.age.as_millis() as u64,
        up_s: seen.up.as_secs(),
    }
}

fn deployment_view(
    deployment: &Deployment,
    reports: &[HealthReport],
    levels: &[BucketLevel],
    rests: &[KeyRest],
) -> DeploymentClusterView {
    let by_process: Vec<ProcessHealth> = reports
        .iter()
        .filter(|r| r.deployment == deployment.name)
        .filter_map(|r| {
            Some(ProcessHealth {
                process: r.process.clone(),
                health: serde_json::from_value(r.report.clone()).ok()?,
            })
        })
        .collect();
    let views: Vec<HealthView> = by_process.iter().map(|p| p.health.clone()).collect();
    let health = HealthView::merge(&views).unwrap_or_else(|| deployment.health.view());
    let keys = deployment
        .key_ids()
        .into_iter()
        .zip(deployment.quotas())
        .map(|(key_id, quota)| {
            let left = |limit: KeyLimit| -> Option<u32> {
                let shape = shape(limit, quota)?;
                let used = levels
                    .iter()
                    .find(|l| {
                        l.bucket.deployment == deployment.name
                            && l.bucket.key_id == key_id
                            && l.bucket.limit == limit
                    })
                    .map_or(Duration::ZERO, |l| l.used);
                let used_ns = i64::try_from(used.as_nanos()).unwrap_or(i64::MAX);
                Some(u32::try_from(shape.available(used_ns, 0)).unwrap_or(u32::MAX))
            };
            let rest = |kind: RestKind, scope: &str| {
                rests
                    .iter()
                    .find(|r| r.kind == kind && r.scope == scope && r.key_id == key_id)
                    .map(|r| r.rest.as_millis() as u64)
            };
            KeyCapacity {
                requests_remaining: left(KeyLimit::RequestsPerMinute),
                requests_per_minute: quota.requests_per_minute,
                tokens_remaining: left(KeyLimit::TokensPerMinute),
                tokens_per_minute: quota.tokens_per_minute,
                requests_today_remaining: left(KeyLimit::RequestsPerDay),
                requests_per_day: quota.requests_per_day,
                cooldown_ms: rest(RestKind::Cooldown, &deployment.name),
                spent_ms: rest(RestKind::Spent, &deployment.provider_name),
                id: key_id,
            }
        })
        .collect();
    DeploymentClusterView {
        deployment: DeploymentView {
            name: deployment.name.clone(),
            provider: deployment.provider_name.clone(),
            model: deployment.model.clone(),
            health,
            keys,
        },
        by_process,
    }
}
