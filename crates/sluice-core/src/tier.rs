//! The tier a call was made on, and priced at: real-time, a provider's batch tier, or
//! OpenAI's flex service tier. Cost records and attempts store it by name.

/// The tier a call was made on, and priced at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    Realtime,
    Batch,
    /// OpenAI's flex service tier: the real-time endpoint with `service_tier: "flex"`.
    Flex,
}

impl Tier {
    /// As stored on cost records (and shown by reports grouped by tier).
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Realtime => "realtime",
            Tier::Batch => "batch",
            Tier::Flex => "flex",
        }
    }

    /// The kind of endpoint the call used, as attempts record it: a flex call is a call of
    /// the real-time endpoint (its `chosen_because` says it was flex).
    pub fn endpoint(self) -> &'static str {
        match self {
            Tier::Batch => "batch",
            Tier::Realtime | Tier::Flex => "realtime",
        }
    }
}
