//! One beat of shared health: this process says it is alive and, when it calls providers,
//! how each deployment looks from here; then it adopts the circuits others opened, so a
//! deployment one worker found down is skipped by every worker within a beat.

use super::ThisProcess;
use crate::router::Router;
use crate::store::{DeploymentReport, Store, StoreError};

/// Beats, reports, and adopts other processes' open circuits.
pub async fn beat(store: &Store, router: &Router, process: &ThisProcess) -> Result<(), StoreError> {
    let beat = process.beat();
    // A process that makes no calls has nothing to say about a deployment's health.
    let reports = if process.calls_providers() {
        router
            .deployments()
            .map(|d| DeploymentReport {
                deployment: d.name.clone(),
                report: serde_json::to_value(d.health.view()).unwrap_or_default(),
                opened_for: d.health.opened_here_for(),
            })
            .collect()
    } else {
        Vec::new()
    };
    store.beat(beat, reports).await?;
    for report in store.health_reports(super::FRESH).await? {
        if report.process == process.id {
            continue;
        }
        if let (Some(rest), Some(deployment)) =
            (report.opened_for, router.deployment(&report.deployment))
        {
            deployment.health.adopt_open(rest);
        }
    }
    Ok(())
}
