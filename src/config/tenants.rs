//! `[[tenants]]`: who may submit jobs, with their bearer tokens and API limits, and the
//! tenants' problems.

use super::secret::{empty_secret, Secret};
use super::Problem;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    pub name: String,
    /// The bearer token the tenant's clients present.
    pub token: Secret,
    /// Jobs the API accepts from this tenant per minute (`POST /v1/jobs`,
    /// `/v1/chat/completions`); over it, a 429 with `retry-after`.
    #[serde(default)]
    pub requests_per_minute: Option<u32>,
    /// Estimated tokens (prompt + `max_tokens`) the API accepts per minute.
    #[serde(default)]
    pub tokens_per_minute: Option<u32>,
}

/// Every tenant's problems: empty names and tokens, and names or tokens used twice.
pub(super) fn problems(tenants: &[TenantConfig]) -> Vec<Problem> {
    let mut problems = Vec::new();
    for (i, tenant) in tenants.iter().enumerate() {
        if tenant.name.is_empty() {
            problems.push(Problem::new(
                format!("tenants[{i}].name"),
                "must not be empty",
            ));
        }
        problems.extend(empty_secret(&tenant.token, &format!("tenants[{i}].token")));
        if let Some(j) = tenants[..i].iter().position(|t| t.token == tenant.token) {
            problems.push(Problem::new(
                format!("tenants[{i}].token"),
                format!("same token as tenants[{j}]; every tenant needs its own"),
            ));
        }
        if tenants[..i].iter().any(|t| t.name == tenant.name) {
            problems.push(Problem::new(
                format!("tenants[{i}].name"),
                format!("tenant \"{}\" is defined twice", tenant.name),
            ));
        }
    }
    problems
}
