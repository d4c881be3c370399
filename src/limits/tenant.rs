//! The API's limits on each tenant: the same buckets a provider key has, on what the API
//! accepts (requests/min and estimated tokens/min), so one tenant cannot flood the queue.
//! Over its limit, a job is refused with how long to wait, not parked.

use super::{estimate_tokens, Admission, KeyPool, KeyQuota, DEFAULT_COMPLETION_ESTIMATE};
use crate::config::Config;
use crate::job::ChatRequest;
use std::sync::Arc;
use std::time::Duration;

/// Why the API refuses a tenant's jobs for now (or for good).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TenantLimited {
    #[error(
        "tenant \"{tenant}\" is over its limit of {limits} per minute; retry after {}",
        // Whole seconds, rounded up, as a person reads a wait (and as `retry-after` says).
        humantime::format_duration(Duration::from_secs(
            retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0)
        ))
    )]
    Busy {
        tenant: String,
        limits: String,
        retry_after: Duration,
    },
    #[error(
        "a job is estimated at {estimate} tokens (prompt + max_tokens), more than tenant \
         \"{tenant}\"'s whole tokens_per_minute ({limit}); lower max_tokens, shorten the prompt, \
         or raise the tenant's tokens_per_minute"
    )]
    TooLarge {
        tenant: String,
        estimate: u32,
        limit: u32,
    },
}

/// The API-side limits of every tenant that has some.
#[derive(Debug, Default)]
pub struct TenantLimits {
    tenants: std::collections::HashMap<String, (KeyPool, KeyQuota)>,
}

impl TenantLimits {
    pub fn new(config: &Config) -> Self {
        let tenants = config
            .tenants
            .iter()
            .filter(|t| t.requests_per_minute.is_some() || t.tokens_per_minute.is_some())
            .map(|t| {
                let quota = KeyQuota {
                    requests_per_minute: t.requests_per_minute,
                    tokens_per_minute: t.tokens_per_minute,
                    requests_per_day: None,
                };
                let pool = KeyPool::new(&t.name, [(t.name.clone(), quota, Arc::default())]);
                (t.name.clone(), (pool, quota))
            })
            .collect();
        TenantLimits { tenants }
    }

    /// Takes room for `requests` from `tenant`'s buckets, or says why not. Several requests
    /// are taken one by one; when a later one does not fit, the cells the earlier ones took
    /// stay spent, which errs on the side of the limit.
    pub fn admit<'a>(
        &self,
        tenant: &str,
        requests: impl IntoIterator<Item = &'a ChatRequest>,
    ) -> Result<(), TenantLimited> {
        let Some((pool, quota)) = self.tenants.get(tenant) else {
            return Ok(());
        };
        for request in requests {
            let estimate = estimate_tokens(request, DEFAULT_COMPLETION_ESTIMATE);
            match pool.admit(estimate) {
                Admission::Admitted(_) => {}
                Admission::Wait { wait, .. } => {
                    let limits: Vec<String> = [
                        quota.requests_per_minute.map(|n| format!("{n} requests")),
                        quota.tokens_per_minute.map(|n| format!("{n} tokens")),
                    ]
                    .into_iter()
                    .flatten()
                    .collect();
                    return Err(TenantLimited::Busy {
                        tenant: tenant.to_string(),
                        limits: limits.join(" and "),
                        retry_after: wait,
                    });
                }
                Admission::Never(over) => {
                    return Err(TenantLimited::TooLarge {
                        tenant: tenant.to_string(),
                        estimate: over.estimate,
                        limit: over.largest,
                    })
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A person reads "retry after 12s", not "11s 844ms 339us 696ns".
    #[test]
    fn a_tenant_is_told_whole_seconds_to_wait() {
        let busy = TenantLimited::Busy {
            tenant: "acme".into(),
            limits: "60 requests".into(),
            retry_after: Duration::from_nanos(11_844_339_696),
        };
        assert!(busy.to_string().ends_with("retry after 12s"), "{busy}");
    }

    #[test]
    fn a_tenant_over_its_requests_per_minute_is_told_when_to_come_back() {
        let mut config = Config::builtin();
        config.tenants[0].requests_per_minute = Some(2);
        config.tenants[0].tokens_per_minute = Some(100_000);
        let name = config.tenants[0].name.clone();
        let limits = TenantLimits::new(&config);
        let request = ChatRequest::single_user_message("fast", "hi");
        assert!(limits.admit(&name, [&request, &request]).is_ok());
        match limits.admit(&name, [&request]) {
            Err(TenantLimited::Busy {
                retry_after,
                limits,
                ..
            }) => {
                assert!(retry_after > Duration::ZERO && retry_after <= Duration::from_secs(30));
                assert_eq!(limits, "2 requests and 100000 tokens");
            }
            other => panic!("{other:?}"),
        }
        // Tenants without limits, and unknown names, are never limited here.
        assert!(limits.admit("someone-else", [&request]).is_ok());

        let mut big = request.clone();
        big.extra.insert("max_tokens".into(), 200_000.into());
        let error = limits.admit(&name, [&big]).unwrap_err();
        assert!(
            matches!(error, TenantLimited::TooLarge { limit: 100_000, .. }),
            "{error}"
        );
        assert!(error.to_string().contains("tokens_per_minute"));
    }
}
