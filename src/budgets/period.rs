//! Budget periods are a leaf of their own ([`crate::period`]), since the `[[budgets]]`
//! section of the configuration names them too; re-exported here, where budgets count in them.

pub use crate::period::Period;
