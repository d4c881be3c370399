//! `[[tenants]]`: who may submit jobs, with their bearer tokens and API limits, and the
//! tenants' problems.

use super::secret::{empty_secret, Secret};
use super::Problem;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

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
    let principals: Vec<_> = tenants
        .iter()
        .map(|t| (t.name.as_str(), &t.token))
        .collect();
    principal_problems("tenants", "tenant", &principals)
}

/// The problems of a section of principals (`tenants`, `operators`), each a name and a token
/// in the section's order: an empty name or token, and a token or name an earlier one has.
/// `kind` names one of them in the messages.
pub(super) fn principal_problems(
    section: &str,
    kind: &str,
    principals: &[(&str, &Secret)],
) -> Vec<Problem> {
    let mut problems = Vec::new();
    for (i, (name, token)) in principals.iter().enumerate() {
        let earlier = &principals[..i];
        if name.is_empty() {
            problems.push(Problem::new(
                format!("{section}[{i}].name"),
                "must not be empty",
            ));
        }
        let token_path = format!("{section}[{i}].token");
        problems.extend(empty_secret(token, &token_path));
        if let Some(j) = earlier.iter().position(|(_, other)| other == token) {
            problems.push(Problem::new(
                &token_path,
                format!("same token as {section}[{j}]; every {kind} needs its own"),
            ));
        }
        if earlier.iter().any(|(other, _)| other == name) {
            problems.push(Problem::new(
                format!("{section}[{i}].name"),
                format!("{kind} \"{name}\" is defined twice"),
            ));
        }
    }
    problems
}

/// Tokens (tenants', operators') as their SHA-256 digests, taken once when the
/// configuration is resolved, in the order of their section.
#[derive(Clone)]
pub(super) struct TokenDigests {
    digests: Vec<[u8; 32]>,
}

impl TokenDigests {
    pub(super) fn new<'a>(tokens: impl IntoIterator<Item = &'a Secret>) -> TokenDigests {
        TokenDigests {
            digests: tokens
                .into_iter()
                .map(|token| Sha256::digest(token.expose().as_bytes()).into())
                .collect(),
        }
    }

    /// The index of the entry whose token is `token`. Every digest is compared, each in
    /// constant time, so the time taken says neither how long the tokens are, nor how much
    /// of one matched, nor whose it was.
    pub(super) fn find(&self, token: &str) -> Option<usize> {
        let presented = Sha256::digest(token.as_bytes());
        self.digests
            .iter()
            .enumerate()
            .fold(None, |found, (i, digest)| {
                let equal: bool = digest.as_slice().ct_eq(presented.as_slice()).into();
                found.or(equal.then_some(i))
            })
    }
}

impl std::fmt::Debug for TokenDigests {
    // Digests of secrets are not shown either.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenDigests({} tokens)", self.digests.len())
    }
}
