//! One tick of shared key capacity: lease cells for the calls this process was asked to
//! make, publish the rests told here, apply the rests told elsewhere.

use crate::limits::shared::LeaseWant;
use crate::limits::SharedKey;
use crate::router::{Deployment, Router};
use crate::store::{BucketId, CellRequest, KeyRest, RestKind, Store, StoreError};
use std::sync::Arc;

/// Leases what each shared key wants (one transaction for all), then exchanges rests.
pub async fn lease(store: &Store, router: &Router) -> Result<(), StoreError> {
    let mut asks: Vec<(&Arc<Deployment>, &Arc<SharedKey>, LeaseWant)> = Vec::new();
    let mut told = Vec::new();
    for deployment in router.deployments() {
        let now = deployment.limits.now();
        for key in deployment.limits.shared_keys() {
            asks.extend(
                key.wants(now)
                    .into_iter()
                    .map(|want| (deployment, key, want)),
            );
            let (cooldown, spent) = key.told_rests(now);
            if let Some(rest) = cooldown {
                told.push(KeyRest {
                    kind: RestKind::Cooldown,
                    scope: key.deployment.clone(),
                    key_id: key.key_id.clone(),
                    rest,
                });
            }
            if let Some(rest) = spent {
                told.push(KeyRest {
                    kind: RestKind::Spent,
                    scope: key.provider.clone(),
                    key_id: key.key_id.clone(),
                    rest,
                });
            }
        }
    }
    store.tell_rests(told).await?;
    if !asks.is_empty() {
        let requests = asks
            .iter()
            .map(|(_, key, want)| CellRequest {
                bucket: BucketId {
                    deployment: key.deployment.clone(),
                    key_id: key.key_id.clone(),
                    limit: want.limit,
                },
                shape: want.shape,
                want: want.cells,
            })
            .collect();
        let grants = store.take_cells(requests).await?;
        for ((deployment, key, want), grant) in asks.iter().zip(grants) {
            let now = deployment.limits.now();
            key.grant(want.limit, grant.granted, grant.next_cell_in, now);
        }
    }
    for rest in store.key_rests().await? {
        match rest.kind {
            RestKind::Cooldown => {
                if let Some(deployment) = router.deployment(&rest.scope) {
                    deployment
                        .limits
                        .rest_from_cluster(&rest.key_id, false, rest.rest);
                }
            }
            RestKind::Spent => {
                for deployment in router
                    .deployments()
                    .filter(|d| d.provider_name == rest.scope)
                {
                    deployment
                        .limits
                        .rest_from_cluster(&rest.key_id, true, rest.rest);
                }
            }
        }
    }
    Ok(())
}
