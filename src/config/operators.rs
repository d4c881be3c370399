//! `[[operators]]`: the people who run Sluice, with the tokens that open every tenant's data
//! on the dashboard (`/ui`). An operator is not a tenant: its token submits no job and reads
//! nothing under `/v1`; a tenant's token on the dashboard shows that tenant's data only.
//!
//! Tokens are kept as digests, compared the way tenants' are ([`super::tenants::TokenDigests`]).

use super::secret::Secret;
use super::tenants::principal_problems;
use super::{Problem, TenantConfig};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorConfig {
    /// Who it is, shown on the dashboard beside "operator".
    pub name: String,
    /// The token the operator signs in to the dashboard with.
    pub token: Secret,
}

/// Every operator's problems: empty names and tokens, names or tokens used twice, and a token
/// that is also a tenant's (it would name two principals at once).
pub(super) fn problems(operators: &[OperatorConfig], tenants: &[TenantConfig]) -> Vec<Problem> {
    let principals: Vec<_> = operators
        .iter()
        .map(|o| (o.name.as_str(), &o.token))
        .collect();
    let mut problems = principal_problems("operators", "operator", &principals);
    for (i, operator) in operators.iter().enumerate() {
        if let Some(j) = tenants.iter().position(|t| t.token == operator.token) {
            problems.push(Problem::new(
                format!("operators[{i}].token"),
                format!("same token as tenants[{j}]; an operator's token must be its own"),
            ));
        }
    }
    problems
}
