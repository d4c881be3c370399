//! `[[operators]]`: the people who run Sluice, with the tokens that open every tenant's data
//! on the dashboard (`/ui`). An operator is not a tenant: its token submits no job and reads
//! nothing under `/v1`; a tenant's token on the dashboard shows that tenant's data only.
//!
//! Tokens are kept as digests, compared the way tenants' are ([`super::tenants::TokenDigests`]).

use super::secret::{empty_secret, Secret};
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
    let mut problems = Vec::new();
    for (i, operator) in operators.iter().enumerate() {
        if operator.name.is_empty() {
            problems.push(Problem::new(
                format!("operators[{i}].name"),
                "must not be empty",
            ));
        }
        let path = format!("operators[{i}].token");
        problems.extend(empty_secret(&operator.token, &path));
        if let Some(j) = operators[..i]
            .iter()
            .position(|o| o.token == operator.token)
        {
            problems.push(Problem::new(
                &path,
                format!("same token as operators[{j}]; every operator needs its own"),
            ));
        }
        if let Some(j) = tenants.iter().position(|t| t.token == operator.token) {
            problems.push(Problem::new(
                &path,
                format!("same token as tenants[{j}]; an operator's token must be its own"),
            ));
        }
        if operators[..i].iter().any(|o| o.name == operator.name) {
            problems.push(Problem::new(
                format!("operators[{i}].name"),
                format!("operator \"{}\" is defined twice", operator.name),
            ));
        }
    }
    problems
}
