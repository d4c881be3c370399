//! The unsupported-parameter policy: which parameters ask for nothing (documented no-op
//! values, advisory labels) and how an adapter refuses, or drops, one it cannot honour.

use crate::{ErrorKind, ProviderError};
use serde_json::{Map, Value};

/// Parameters whose documented default is a no-op: a client that sends the default asks for
/// nothing, so no adapter refuses it.
type IsNoOp = fn(&Value) -> bool;

pub(super) const NO_OP_VALUES: &[(&str, IsNoOp)] = &[
    ("logprobs", |v| v == &Value::Bool(false)),
    ("logit_bias", |v| v.as_object().is_some_and(Map::is_empty)),
    ("service_tier", |v| {
        matches!(v.as_str(), Some("auto" | "default"))
    }),
];

/// Parameters that only label or account for a call and never change the answer, so an
/// adapter without an equivalent leaves them out without asking (documented in the README).
pub const ADVISORY: &[&str] = &[
    "store",
    "metadata",
    "user",
    "safety_identifier",
    "prompt_cache_key",
    "stream_options",
];

/// A `BadRequest` found before any call: the request cannot be sent to this provider.
pub fn bad_request(provider: &'static str, message: String) -> ProviderError {
    ProviderError::new(provider, ErrorKind::BadRequest, None, message)
}

/// How an adapter treats a parameter it cannot honour: refuse it (the default), or, when the
/// deployment says `drop_unsupported_params = true`, leave it out and log that it did.
#[derive(Debug, Clone, Copy)]
pub struct ParamPolicy {
    pub provider: &'static str,
    pub drop_unsupported: bool,
}

impl ParamPolicy {
    /// `Ok` when the parameter may be left out, the error naming it otherwise.
    pub fn unsupported(&self, param: &str) -> Result<(), ProviderError> {
        self.unsupported_because(param, None)
    }

    /// The same with the reason why (`"n" above 1`).
    pub fn unsupported_because(
        &self,
        param: &str,
        detail: Option<&str>,
    ) -> Result<(), ProviderError> {
        if self.drop_unsupported {
            tracing::debug!(
                provider = self.provider,
                param,
                "dropping a parameter the provider does not support"
            );
            return Ok(());
        }
        let detail = detail.map(|d| format!(" ({d})")).unwrap_or_default();
        Err(bad_request(
            self.provider,
            format!(
                "{} does not support \"{param}\"{detail}; set drop_unsupported_params = true on the deployment to leave such parameters out",
                self.provider
            ),
        ))
    }

    /// Refuses (or drops) every parameter of `rest` that is not advisory.
    pub fn check_rest(&self, rest: &[(String, Value)]) -> Result<(), ProviderError> {
        for (name, _) in rest {
            if !ADVISORY.contains(&name.as_str()) {
                self.unsupported(name)?;
            }
        }
        Ok(())
    }
}
