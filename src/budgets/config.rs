//! A budget as written in `sluice.toml`: the `[[budgets]]` section is the configuration's
//! (`config::budgets`, with its checks); its types are named here too, where budgets are
//! enforced.

pub use crate::config::budgets::{BudgetConfig, OnExceed, Tag, THRESHOLD_DECIMALS, WHOLE};
